"""Loading any Swin checkpoint into mmswin's backbones.

Two entry points share one conversion (:func:`prepare_for_model`), and each
load converts at most once:

- :func:`load_pretrained`: what ``init_cfg=dict(type='Pretrained', ...)``
  runs; reads the file safely, detects the layout, transfers window- and
  grid-dependent weights, loads, and logs a report through mmengine's
  logger. Its own ``load_state_dict`` call passes the hook below.
- :func:`install_layout_hook`: a ``load_state_dict`` pre-hook on the
  backbone, so that any load under the backbone's prefix (``load_from``,
  ``tools/test.py CONFIG CHECKPOINT``, ``model.load_state_dict``) converts a
  foreign backbone layout, e.g. a full detector checkpoint of the official
  detection repo or of mmdet 3.x. Weights already in the model's names and
  shapes (mmswin's own checkpoints, resuming) pass without a conversion.
"""
import re
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log

from .io import CheckpointError, read_state_dict
from .layouts import Conversion, convert_state_dict, find_backbones
from .renaming import StateDict, keys_under
from .transfer import ShapeMismatchError, fit_to_model

# True while load_pretrained loads what it has converted already: the
# backbone's pre-hook must not convert the same weights a second time.
_LOADING_CONVERTED: ContextVar[bool] = ContextVar('mmswin_loading_converted',
                                                  default=False)


@contextmanager
def _converted_load() -> Iterator[None]:
    token = _LOADING_CONVERTED.set(True)
    try:
        yield
    finally:
        _LOADING_CONVERTED.reset(token)


@dataclass
class LoadReport:
    """What :func:`load_pretrained` loaded and how.

    Attributes:
        source: The checkpoint file.
        conversion: Layout, prefix, version and the log of renamed,
            transformed and dropped keys.
        resized: Keys resized to the model's window or grid.
        missing: Model keys the checkpoint did not provide.
        unexpected: Converted checkpoint keys the model has no use for.
    """

    source: str
    conversion: Conversion
    resized: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)

    def format(self, model_name: str = 'the backbone') -> str:
        """A multi-line summary for the log."""
        return describe(self.conversion, f'{self.source} into {model_name}',
                        self.missing, self.unexpected)


def _pattern(key: str) -> str:
    return re.sub(r'\.\d+(?=\.)', '.*', key)


def _grouped(pairs: Iterable[Tuple[str, str]], sep: str) -> List[str]:
    """``'a.0.x -> b.0.x'`` lines collapsed to ``'a.*.x -> b.*.x (x12)'``;
    a group whose patterns coincide (only an index changed) is shown by its
    first member."""
    groups: Dict[Tuple[str, str], List[Tuple[str, str]]] = {}
    for a, b in pairs:
        groups.setdefault((_pattern(a), _pattern(b)), []).append((a, b))
    lines = []
    for (a, b), members in groups.items():
        if a == b and sep == ' -> ':
            a, b = members[0]
        count = len(members)
        lines.append(f'{a}{sep}{b}' + (f' (x{count})' if count > 1 else ''))
    return lines


def describe(conversion: Conversion, what: str,
             missing: Optional[List[str]] = None,
             unexpected: Optional[List[str]] = None) -> str:
    """Human-readable account of a conversion (and of a load)."""
    log = conversion.log
    lines = [f'mmswin: loaded {what}',
             f'  layout: {conversion.layout} (Swin V{conversion.version}), '
             f'backbone prefix {conversion.prefix!r}, '
             f'{len(conversion.state)} tensors']
    if conversion.ignored:
        lines.append(f'  ignored {len(conversion.ignored)} keys outside the '
                     f'prefix, e.g. {conversion.ignored[0]!r}')
    if conversion.other_prefixes:
        lines.append(f'  more Swin weights under {conversion.other_prefixes}'
                     ' were not used (pass prefix= to pick them)')
    sections = [
        ('renamed', _grouped(((old, new) for new, old in log.renamed.items()),
                             ' -> ')),
        ('transformed', _grouped(log.transformed.items(), ': ')),
        ('dropped', _grouped(log.dropped.items(), ': ')),
    ]
    if missing is not None:
        sections += [('missing keys', missing),
                     ('unexpected keys', unexpected or [])]
    for title, items in sections:
        if items:
            lines.append(f'  {title} ({len(items)}):')
            lines += [f'    {item}' for item in items]
    return '\n'.join(lines)


def prepare_for_model(model: nn.Module, state: StateDict,
                      layout: str = 'auto'
                      ) -> Tuple[StateDict, Conversion, List[str]]:
    """Convert ``state`` to mmswin's names and fit it to ``model``'s shapes.

    The Swin version comes from ``model.version`` (1 or 2).

    Returns:
        The state to load, the conversion record and the resized keys.
    """
    conversion = convert_state_dict(state, layout,
                                    version=getattr(model, 'version', 1))
    fitted, resized = fit_to_model(conversion.state, _shapes(model),
                                   conversion.log)
    return fitted, conversion, resized


def _shapes(model: nn.Module) -> Dict[str, torch.Size]:
    return {key: value.shape for key, value in model.state_dict().items()}


def load_pretrained(model: nn.Module, filename: str,
                    prefix: Optional[str] = None, map_location: Any = 'cpu',
                    layout: str = 'auto') -> LoadReport:
    """Load a Swin checkpoint of any supported layout into ``model``.

    Args:
        model: An mmswin ``SwinTransformer`` or ``SwinTransformerV2``.
        filename: Local ``.pth``/``.safetensors`` file or http(s) URL.
        prefix: As in mmengine's Pretrained init: only keys starting with
            it, with it stripped (e.g. ``'backbone.'``); rarely needed, the
            backbone is found automatically.
        map_location: Passed to ``torch.load``.
        layout: ``'auto'`` or a layout name (see ``LAYOUT_ALIASES``).

    Returns:
        The report that was logged.

    Raises:
        CheckpointError: unreadable, unsafe, or no Swin weights found.
        ShapeMismatchError: a tensor that cannot be fitted to the model.
    """
    state = read_state_dict(filename, prefix, map_location)
    try:
        fitted, conversion, resized = prepare_for_model(model, state, layout)
    except ShapeMismatchError as err:
        raise ShapeMismatchError(f'{filename!r}: {err}') from None
    except ValueError as err:
        raise CheckpointError(f'{filename!r}: {err}') from None
    with _converted_load():
        missing, unexpected = model.load_state_dict(fitted, strict=False)
    report = LoadReport(str(filename), conversion, resized, list(missing),
                        list(unexpected))
    print_log(report.format(type(model).__name__), logger='current')
    return report


def convert_under(module: nn.Module, state_dict: Dict[str, Any],
                  prefix: str) -> Optional[str]:
    """Convert a foreign Swin layout found under ``prefix`` of
    ``state_dict`` in place to ``module``'s names and shapes; mmswin's own
    layout passes untouched.

    Returns:
        The account of the conversion for the log, None if there was none.

    Raises:
        ValueError: a V1/V2 mismatch; ``ShapeMismatchError`` for a tensor
            that cannot be fitted.
    """
    own = keys_under(state_dict, prefix)
    shapes = _shapes(module)
    if all(getattr(value, 'shape', None) == shapes.get(key)
           for key, value in own.items()):
        return None  # the model's own names and shapes (or nothing)
    if not find_backbones(own):
        return None
    fitted, conversion, _ = prepare_for_model(module, own)
    log = conversion.log
    if not (log.renamed or log.transformed or log.dropped):
        return None
    source = prefix + conversion.prefix
    for key in own:
        if (prefix + key).startswith(source):
            del state_dict[prefix + key]
    state_dict.update({prefix + k: v for k, v in fitted.items()})
    return describe(conversion, f'weights under {prefix!r} into '
                    f'{type(module).__name__}')


def _convert_on_load(module: nn.Module, state_dict: Dict[str, Any],
                     prefix: str, *args) -> None:
    """``load_state_dict`` pre-hook: :func:`convert_under`, unless the
    weights were converted already."""
    if not _LOADING_CONVERTED.get():
        account = convert_under(module, state_dict, prefix)
        if account:
            print_log(account, logger='current')


def install_layout_hook(module: nn.Module) -> None:
    """Make every ``load_state_dict`` reaching ``module`` convert foreign
    Swin layouts (call once, in the backbone's ``__init__``)."""
    module.register_load_state_dict_pre_hook(_convert_on_load)
