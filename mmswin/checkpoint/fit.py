"""Does a checkpoint fit the model it is loaded into?

:func:`check_fit` compares a checkpoint's state dict, after mmswin's own
layout conversion (what the backbone's ``load_state_dict`` pre-hook does),
with the model's: missing keys, unused keys and shape mismatches, grouped
by top-level module (``backbone``, ``neck``, ``rpn_head``, ``roi_head``,
``decode_head`` ...). Its :class:`.fit_report.FitReport` says in one line
what the checkpoint holds (a detector, a segmentor, a classification
model, a backbone only), what the config builds, and what is wrong, e.g.
another class count or a Swin V2 backbone for a V1 config.

Tools that need the whole model (test, demo, export, FLOPs) refuse a
checkpoint that leaves a tensor of the model unset or of another shape
(:class:`CheckpointMismatchError`); keys the model has no use for (an EMA
copy, a teacher) are reported, not refused. Fine-tuning (``load_from``)
loads what fits and reports the rest in one line.
"""
import logging
import re
from collections import Counter
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log

from .fit_report import FitReport, top_module, top_modules
from .io import CheckpointError, extract_state_dict, read_checkpoint
from .layouts import convert_state_dict, find_backbones
from .loader import _converted_load, convert_under
from .renaming import StateDict, keys_under

_DETECTOR_HEADS = ('rpn_head', 'roi_head', 'bbox_head', 'mask_head',
                   'query_head', 'panoptic_head')
_SEGMENTOR_HEADS = ('decode_head', 'auxiliary_head')


class CheckpointMismatchError(CheckpointError):
    """A checkpoint that does not fit the model: tensors of the model it
    leaves unset, of another shape, or another Swin version. The message
    is one line; ``report`` holds the details."""

    def __init__(self, message: str, report: 'FitReport') -> None:
        super().__init__(message)
        self.report = report


def model_kind(model: nn.Module) -> str:
    """``'detector'``, ``'segmentor'``, ``'Swin backbone'`` or the class
    name of ``model``."""
    names = {base.__name__ for base in type(model).__mro__}
    if 'BaseDetector' in names:
        return 'detector'
    if 'BaseSegmentor' in names:
        return 'segmentor'
    if 'SwinBackbone' in names:
        return 'Swin backbone'
    return type(model).__name__


def checkpoint_kind(state: Mapping[str, Any]) -> str:
    """What a state dict holds, by its top-level modules: ``'segmentor'``,
    ``'detector'``, ``'classification model'``, ``'backbone only'`` (a
    Swin backbone, bare or under ``backbone.``) or ``'model'``."""
    groups = set(top_modules(state))
    if groups & set(_SEGMENTOR_HEADS):
        return 'segmentor'
    if groups & set(_DETECTOR_HEADS):
        return 'detector'
    if 'head' in groups:
        return 'classification model'
    found = find_backbones(state)
    if found:
        prefix = found[0][1]
        rest = [k for k in state if not k.startswith(prefix)]
        return 'model' if rest else 'backbone only'
    return 'model'


# Top-level names of a Swin backbone stored without a prefix (official
# classification files, mmswin backbone files).
_BARE_SWIN = re.compile(r'^(patch_embed|layers|norm\d*|absolute_pos_embed|'
                        r'mask_token)$')


def checkpoint_groups(state: Mapping[str, Any]) -> List[str]:
    """The top-level modules of a state dict; a Swin backbone stored
    without a prefix counts as one, ``'Swin backbone'``."""
    groups = top_modules(state)
    if not any(_BARE_SWIN.match(g) for g in groups):
        return groups
    return ['Swin backbone'] + [g for g in groups if not _BARE_SWIN.match(g)]


def _strip_module(state: Mapping[str, Any]) -> StateDict:
    # mmengine's load_checkpoint strips DDP's 'module.' the same way.
    return {re.sub(r'^module\.', '', k): v for k, v in state.items()
            if isinstance(v, torch.Tensor)}


def _swin_modules(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    from ..models.backbones.base import SwinBackbone
    return [(name + '.' if name else '', module)
            for name, module in model.named_modules()
            if isinstance(module, SwinBackbone)]


def _relocate(module: nn.Module, prefix: str, state: StateDict,
              unexpected: List[str], accounts: List[str]) -> StateDict:
    """A Swin backbone stored elsewhere (a classification model's, a
    SimMIM ``encoder.``) moved under ``prefix`` when nothing is there; the
    keys outside it stay as they are, its non-backbone keys (a
    classification head) are reported unused."""
    version = getattr(module, 'version', 1)
    conversion = convert_state_dict(state, version=version)
    unexpected += [conversion.prefix + key for key, why in
                   conversion.log.dropped.items() if why != 'derived buffer']
    accounts.append(f'mmswin: the Swin backbone under '
                    f'{conversion.prefix!r} ({conversion.layout} layout) '
                    f'goes to {prefix!r}')
    moved = {k: state[k] for k in conversion.ignored}
    moved.update({prefix + k: v for k, v in conversion.state.items()})
    return moved


def _version_note(module: nn.Module, prefix: str,
                  state: StateDict) -> Optional[str]:
    own = keys_under(state, prefix) if prefix else state
    found = find_backbones(own)
    if not found:
        return None
    family, where = found[0]
    version = family.version(family.backbone_state(own, where))
    wanted = getattr(module, 'version', 1)
    if version == wanted:
        return None
    return (f'{prefix.rstrip(".") or "backbone"}: checkpoint holds a Swin '
            f'V{version} backbone, the config builds Swin V{wanted}')


def check_fit(model: nn.Module, state_dict: Mapping[str, Any],
              source: str = 'the checkpoint') -> FitReport:
    """Compare ``state_dict`` (a checkpoint's, any supported layout) with
    ``model``'s after mmswin's layout conversion. Nothing is loaded.

    Args:
        model: The built model (a detector, a segmentor, a backbone).
        state_dict: The checkpoint's tensors (``module.`` is stripped as
            mmengine does; non-tensor entries are ignored).
        source: Name of the checkpoint in the messages.

    Returns:
        The report; ``report.state`` holds what fits, in the model's names.
    """
    state = _strip_module(state_dict)
    kind, groups = checkpoint_kind(state), checkpoint_groups(state)
    unexpected: List[str] = []
    notes: List[str] = []
    skipped: List[str] = []
    accounts: List[str] = []
    for prefix, module in _swin_modules(model):
        note = _version_note(module, prefix, state)
        if note:
            notes.append(note)
            skipped.append(prefix)
            continue
        try:
            if prefix and not keys_under(state, prefix) and \
                    find_backbones(state):
                state = _relocate(module, prefix, state, unexpected,
                                  accounts)
            else:
                accounts.append(convert_under(module, state, prefix) or '')
        except ValueError:  # not convertible: the comparison says why
            pass
    target = model.state_dict()
    # BatchNorm's step counter does not change a prediction; mmengine
    # leaves it out of its missing keys as well.
    counted = [k for k in target if not k.endswith('num_batches_tracked')]
    missing = [k for k in counted if k not in state]
    mismatched = {k: (tuple(state[k].shape), tuple(v.shape))
                  for k, v in target.items()
                  if k in state and state[k].shape != v.shape}
    unexpected += [k for k in state if k not in target]
    fitted = {k: v for k, v in state.items()
              if k in target and k not in mismatched
              and not any(k.startswith(p) for p in skipped)}
    missing += [k for k in counted if k in state and k not in fitted
                and k not in mismatched]
    return FitReport(
        source=source, model_kind=model_kind(model),
        model_groups=top_modules(target), checkpoint_kind=kind,
        checkpoint_groups=groups, state=fitted, missing=missing,
        unexpected=unexpected, mismatched=mismatched,
        model_sizes=dict(Counter(map(top_module, counted))), notes=notes,
        skipped=skipped, conversions=[a for a in accounts if a])


def state_of(checkpoint: Any, source: str = 'checkpoint') -> StateDict:
    """The tensors of a checkpoint object: its ``state_dict`` (mmengine),
    ``model`` (official Microsoft files) or ``module`` entry, or the object
    itself when it is a state dict.

    Raises:
        CheckpointError: no tensors in it.
    """
    return extract_state_dict(checkpoint, source)


def require_fit(report: FitReport, allow_partial: bool = False,
                hint: str = 'pass allow_partial=True to load anyway'
                ) -> None:
    """Raise :class:`CheckpointMismatchError` (one line, ending in
    ``hint``) unless the checkpoint fits or ``allow_partial``; otherwise
    log the layout conversions, and a warning line for a partial load or a
    note for unused keys."""
    if not report.fits and not allow_partial:
        raise CheckpointMismatchError(report.message(hint), report)
    report.log_conversions()
    if not report.fits:
        print_log(f'mmswin: loading anyway, the results will not mean '
                  f'much: {report.message()}', logger='current',
                  level=logging.WARNING)
    elif report.unused():
        print_log(f'mmswin: {report.source} fits the model; '
                  f'{report.unused()} (harmless: e.g. an EMA copy or a '
                  'teacher)', logger='current')


def load_fitting(model: nn.Module, report: FitReport) -> None:
    """Load what fits (``report.state``) into ``model``; the rest keeps
    its values."""
    with _converted_load():
        model.load_state_dict(report.state, strict=False)


def load_checkpoint(model: nn.Module, filename: str,
                    allow_partial: bool = False,
                    hint: str = 'pass allow_partial=True to load anyway'
                    ) -> Dict[str, Any]:
    """Read ``filename`` safely, check that it fits ``model`` and load it.

    Args:
        model: The built model.
        filename: A ``.pth``/``.safetensors`` checkpoint of any supported
            layout.
        allow_partial: Load what fits of a checkpoint that does not fit
            (with a warning) instead of raising.
        hint: Ends the error message (how to load anyway).

    Returns:
        The checkpoint object (e.g. for its ``meta``).

    Raises:
        CheckpointMismatchError: the checkpoint does not fit the model.
        CorruptCheckpointError, UnsafeCheckpointError: see
            :func:`read_checkpoint`.
    """
    checkpoint = read_checkpoint(filename)
    report = check_fit(model, state_of(checkpoint, repr(filename)),
                       str(filename))
    require_fit(report, allow_partial, hint)
    load_fitting(model, report)
    return checkpoint if isinstance(checkpoint, dict) else {}
