"""Checked checkpoint loading for the tools (test, train, demo, export,
FLOPs): a checkpoint that does not fit the config's model, or a damaged
file, ends the tool with one line (exit status 2) naming the file and the
problem; ``--allow-partial`` loads what fits anyway, with a warning.

The check itself is :mod:`mmswin.checkpoint.fit`; Runner-based tools get it
through :class:`mmswin.checkpoint.CheckpointFitHook`.
"""
import argparse
import os.path as osp
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, Optional

from tool_utils import fail

from mmswin.checkpoint import (
    CheckpointError,
    load_checkpoint,
    probe_checkpoint,
)

__all__ = ['add_allow_partial', 'partial_hint', 'checkpoint_errors',
           'add_fit_hook', 'load_checked', 'init_checked']


def add_allow_partial(parser: argparse.ArgumentParser, verb: str) -> None:
    """Add ``--allow-partial`` (``verb``: what the tool does anyway)."""
    parser.add_argument(
        '--allow-partial', action='store_true',
        help=f'{verb} even with a checkpoint that leaves parts of the model '
        'unset or of another shape (a warning instead of the refusal)')


def partial_hint(verb: str) -> str:
    """The end of a refusal: how to go on anyway."""
    return f'pass --allow-partial to {verb} anyway'


@contextmanager
def checkpoint_errors() -> Iterator[None]:
    """Turn a :class:`CheckpointError` (a damaged, unsafe or unfitting
    checkpoint) into ``error: <one line>`` and exit status 2."""
    try:
        yield
    except CheckpointError as err:
        fail(str(err))


def add_fit_hook(cfg, mode: str, source: Optional[str],
                 verb: str = 'evaluate') -> None:
    """Append mmswin's CheckpointFitHook (``mode``: ``'strict'``,
    ``'allow-partial'``, ``'partial'`` or ``'resume'``) to the config's
    custom hooks; refuse a ``.safetensors`` file, which mmengine's Runner
    cannot read."""
    if source and osp.isfile(source) and \
            probe_checkpoint(source) == 'safetensors':
        fail(f'{source} is a safetensors file, and mmengine\'s Runner reads '
             'PyTorch checkpoints only; save its tensors as one: python -c '
             '"import torch; from safetensors.torch import load_file; '
             f'torch.save({{\'state_dict\': load_file(\'{source}\')}}, '
             f'\'{osp.splitext(source)[0]}.pth\')"')
    hint = partial_hint(verb) if mode == 'strict' else (
        '--resume continues the model of this config; to start from these '
        'weights, use --cfg-options load_from=FILE' if mode == 'resume'
        else '')
    hook = dict(type='mmswin.CheckpointFitHook', mode=mode, source=source,
                hint=hint)
    cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + [hook]


def load_checked(model, checkpoint: str, allow_partial: bool,
                 verb: str) -> Dict[str, Any]:
    """Load ``checkpoint`` into ``model`` if it fits (or
    ``allow_partial``); otherwise end the tool with the one-line reason.
    Returns the checkpoint object (for its ``meta``)."""
    with checkpoint_errors():
        return load_checkpoint(model, checkpoint, allow_partial,
                               partial_hint(verb))


def _dataset_meta(cfg, model, checkpoint: Dict[str, Any]) -> Dict[str, Any]:
    """Classes and palette as mmdet's init_detector / mmseg's init_model
    take them: the checkpoint's meta; mmdet keeps the config's palette;
    without meta the config's test dataset."""
    meta = checkpoint.get('meta') or {}
    current = dict(getattr(model, 'dataset_meta', None) or {})
    if 'dataset_meta' in meta:
        found = {k.lower(): v for k, v in meta['dataset_meta'].items()}
    elif 'CLASSES' in meta:
        found = dict(classes=meta['CLASSES'], palette=meta.get('PALETTE'))
    elif current:
        return current
    else:
        from mmengine.registry import DATASETS
        dataset = dict(cfg.test_dataloader.dataset, lazy_init=True)
        return dict(DATASETS.build(dataset).metainfo)
    if current.get('palette') not in (None, 'random'):
        found['palette'] = current['palette']  # mmdet: config first
    elif found.get('palette') is None:
        found['palette'] = current.get('palette', 'random')
    return found


def init_checked(init: Callable, cfg, checkpoint: str, device: str,
                 allow_partial: bool, verb: str = 'draw'):
    """``init(cfg, None, device=device)`` (mmdet's ``init_detector`` or
    mmseg's ``init_model``), then :func:`load_checked` and the checkpoint's
    classes and palette, as ``init(cfg, checkpoint)`` would set them."""
    # Recorded, not shown: "checkpoint is None, use COCO classes" (mmdet
    # sets its own filter, so 'ignore' would not hold).
    with warnings.catch_warnings(record=True):
        model = init(cfg, None, device=device)
    loaded = load_checked(model, checkpoint, allow_partial, verb)
    model.dataset_meta = _dataset_meta(cfg, model, loaded)
    return model
