"""The account of how a checkpoint fits a model (:class:`FitReport`), made
by :func:`.fit.check_fit`, in one line: what the checkpoint holds, what the
config builds, what is missing, of another shape or another Swin version,
and what the model has no use for."""
import re
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from mmengine.logging import print_log

from .renaming import StateDict

Shape = Tuple[int, ...]

# Layers whose first dimension is the class count (with mmdet's background
# slot where the head has one); ``rpn_cls`` counts anchors, not classes.
_CLASS_LAYER = re.compile(
    r'(^|\.)(fc_cls|conv_seg|conv_logits|\w*(?<!rpn)_cls|head\.fc)'
    r'\.weight$')


def _tensors(count: int) -> str:
    return f'{count} tensor' + ('' if count == 1 else 's')


def top_module(key: str) -> str:
    """``'roi_head'`` of ``'roi_head.bbox_head.fc_cls.weight'``."""
    return key.split('.', 1)[0]


def top_modules(keys) -> List[str]:
    """The distinct :func:`top_module` of ``keys``, in order."""
    return list(OrderedDict.fromkeys(map(top_module, keys)))


@dataclass
class FitReport:
    """How a checkpoint fits a model.

    Attributes:
        source: The checkpoint (file name) for messages.
        model_kind: What the config builds (:func:`.fit.model_kind`).
        model_groups: The model's top-level modules with weights.
        checkpoint_kind: What the checkpoint holds
            (:func:`.fit.checkpoint_kind`).
        checkpoint_groups: Its top-level modules.
        state: The tensors that fit, in the model's names (converted).
        missing: Model keys the checkpoint leaves unset.
        unexpected: Checkpoint keys the model has no use for.
        mismatched: key -> (checkpoint shape, model shape).
        model_sizes: Number of tensors per model group (BatchNorm step
            counters, which a checkpoint may lack, not counted).
        notes: Problems found before the comparison, e.g. a Swin V2
            backbone for a V1 config.
        skipped: Prefixes of the modules with a note: nothing under them
            is loaded, and their keys are not itemised.
        conversions: Accounts of mmswin's layout conversions, logged when
            the weights are loaded (not before a refusal).
    """

    source: str
    model_kind: str
    model_groups: List[str]
    checkpoint_kind: str
    checkpoint_groups: List[str]
    state: StateDict
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: Dict[str, Tuple[Shape, Shape]] = field(default_factory=dict)
    model_sizes: Dict[str, int] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    conversions: List[str] = field(default_factory=list)

    def log_conversions(self) -> None:
        """Log :attr:`conversions` through mmengine's current logger."""
        for account in self.conversions:
            print_log(account, logger='current')

    def _itemised(self, keys) -> List[str]:
        return [k for k in keys
                if not any(k.startswith(p) for p in self.skipped)]

    @property
    def fits(self) -> bool:
        """True when every tensor of the model is set with its shape."""
        return not (self.missing or self.mismatched or self.notes)

    def _holds(self) -> str:
        return (f'checkpoint {self.source} holds a {self.checkpoint_kind} '
                f'({", ".join(self.checkpoint_groups[:6]) or "no tensors"})'
                f'; the config builds a {self.model_kind} '
                f'({", ".join(self.model_groups)})')

    def _missing(self, missing: List[str]) -> List[str]:
        counts = Counter(map(top_module, missing))
        absent = [g for g in self.model_groups if counts[g] and counts[g]
                  == self.model_sizes[g] and g not in self.checkpoint_groups]
        parts = [', '.join(absent) + ' missing'] if absent else []
        for group, count in counts.items():
            if group in absent:
                continue
            first = next(k for k in missing if top_module(k) == group)
            total = self.model_sizes[group]
            amount = f'all {total}' if count == total else \
                f'{count} of {total}'
            parts.append(f'{group}: {amount} tensors missing (e.g. '
                         f'{first})')
        return parts

    def _mismatched(self, keys: List[str]) -> List[str]:
        classes = [k for k in keys if _CLASS_LAYER.search(k)]
        parts = []
        if classes:
            got, want = self.mismatched[classes[0]]
            more = len(classes) - 1
            parts.append(
                f'{classes[0][:-len(".weight")]}: checkpoint has {got[0]} '
                f'classes, config {want[0]}' +
                (f' (and {more} more class layers)' if more else ''))
        others = [k for k in keys
                  if k not in classes and not (
                      classes and k.endswith('.bias')
                      and k[:-5] + '.weight' in classes)]
        if others:
            got, want = self.mismatched[others[0]]
            parts.append(f'{len(others)} tensors of another shape (e.g. '
                         f'{others[0]}: checkpoint {tuple(got)}, config '
                         f'{tuple(want)})')
        return parts

    def unused(self) -> str:
        """The unused keys, by group: ``'neck, rpn_head not used (22
        tensors)'``; groups with a note (another Swin version) left out."""
        keys = self._itemised(self.unexpected)
        counts = Counter(map(top_module, keys))
        foreign = [g for g in counts if g not in self.model_groups]
        parts = []
        if foreign:
            total = sum(counts[g] for g in foreign)
            parts.append(f'{", ".join(foreign)} not used ({_tensors(total)})')
        for group in counts:
            if group not in foreign:
                first = next(k for k in keys if top_module(k) == group)
                parts.append(f'{_tensors(counts[group])} of {group} not '
                             f'used (e.g. {first})')
        return '; '.join(parts)

    def problems(self) -> List[str]:
        """What keeps the checkpoint from fitting, one phrase each (a
        group with a note, e.g. another Swin version, is not itemised)."""
        return self.notes + self._missing(self._itemised(self.missing)) + \
            self._mismatched(self._itemised(self.mismatched))

    def message(self, hint: str = '') -> str:
        """One line: what the checkpoint holds, what the config builds,
        what is wrong (and unused), then ``hint``."""
        unused = self.unused()
        parts = self.problems() + ([unused] if unused else [])
        line = f'{self._holds()}: {"; ".join(parts) or "fits"}'
        return f'{line} ({hint})' if hint else line

    def summary(self) -> str:
        """One line for fine-tuning: what was loaded, what was skipped and
        why."""
        total = sum(self.model_sizes.values())  # without BN step counters
        count = sum(not k.endswith('num_batches_tracked') for k in self.state)
        line = (f'mmswin: {self.source}: loaded {count} of {total} model '
                f'tensors ({", ".join(top_modules(self.state)) or "none"})')
        skipped = self.problems()
        if skipped:
            line += '; kept the initialisation of the rest: ' + \
                '; '.join(skipped)
        unused = self.unused()
        return f'{line}; {unused}' if unused else line
