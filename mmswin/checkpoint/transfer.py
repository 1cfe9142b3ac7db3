"""Transfer of weights whose shape depends on the window or the grid.

A relative position bias table of window w has ``(2w-1)**2`` rows; loading
a window-7 checkpoint into a window-12 model resizes it bicubically, as the
official fine-tuning code does. The absolute position embedding is resized
to the model's grid the same way. Any other shape difference is an error.
"""
import math
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F

from .layouts import pos_embed_to_grid
from .renaming import ConversionLog, StateDict

Shapes = Dict[str, torch.Size]


class ShapeMismatchError(ValueError):
    """A checkpoint tensor whose shape cannot be transferred to the model."""


def resize_bias_table(table: torch.Tensor, window: int) -> torch.Tensor:
    """Bicubically resize a relative position bias table to ``window``.

    Shape:
        - table: ``((2w-1)**2, heads)`` for a square window w.
        - output: ``((2*window-1)**2, heads)``.
    """
    rows, heads = table.shape
    side = math.isqrt(rows)
    if side * side != rows:
        raise ValueError(f'bias table with {rows} rows is not square')
    new = 2 * window - 1
    if new == side:
        return table
    grid = table.t().reshape(1, heads, side, side).float()
    grid = F.interpolate(grid, size=(new, new), mode='bicubic',
                         align_corners=False)
    return grid.reshape(heads, new * new).t().contiguous().to(table.dtype)


def resize_pos_embed(pos: torch.Tensor,
                     grid: Tuple[int, int]) -> torch.Tensor:
    """Bicubically resize a ``(1, C, H, W)`` position embedding to
    ``grid``."""
    if tuple(pos.shape[2:]) == tuple(grid):
        return pos
    out = F.interpolate(pos.float(), size=tuple(grid), mode='bicubic',
                        align_corners=False)
    return out.to(pos.dtype)


def _mismatch(key: str, got: torch.Size, want: torch.Size,
              why: str) -> ShapeMismatchError:
    return ShapeMismatchError(
        f'cannot load {key!r}: checkpoint shape {tuple(got)} vs model shape '
        f'{tuple(want)} ({why}); check that the config (arch, embed_dims, '
        'depths, num_heads, window_size) matches the checkpoint')


def fit_to_model(state: StateDict, target: Shapes,
                 log: ConversionLog) -> Tuple[StateDict, List[str]]:
    """Make every tensor of ``state`` that the model has fit its shape.

    Args:
        state: Checkpoint in mmswin's names.
        target: The model's state-dict shapes.
        log: Receives a note per resized key.

    Returns:
        The fitted state and the list of resized keys.

    Raises:
        ShapeMismatchError: naming the key and both shapes, for any other
            difference (e.g. another number of heads or channels).
    """
    out: StateDict = {}
    resized: List[str] = []
    for key, value in state.items():
        want = target.get(key)
        if want is None or value.shape == want:
            out[key] = value
            continue
        if key.endswith('relative_position_bias_table'):
            side = math.isqrt(want[0])
            if value.dim() != 2 or len(want) != 2 or \
                    value.shape[1] != want[1] or side * side != want[0] \
                    or side % 2 == 0:
                raise _mismatch(key, value.shape, want,
                                'another number of heads')
            fitted = resize_bias_table(value, (side + 1) // 2)
        elif key == 'absolute_pos_embed':
            grid = tuple(want[2:])
            try:
                fitted = resize_pos_embed(pos_embed_to_grid(value, grid),
                                          grid)
            except ValueError as err:
                raise _mismatch(key, value.shape, want, str(err)) from None
            if fitted.shape != want:
                raise _mismatch(key, value.shape, want,
                                'another number of channels')
        else:
            raise _mismatch(key, value.shape, want, 'not transferable')
        log.transform(key, f'resized {tuple(value.shape)} -> '
                      f'{tuple(fitted.shape)} (bicubic)')
        resized.append(key)
        out[key] = fitted
    return out, resized


def resize_to_window(state: StateDict, window: int,
                     log: ConversionLog) -> StateDict:
    """Resize every relative position bias table to ``window`` (the
    converter's ``--window-size``, without a model)."""
    out = dict(state)
    for key, value in state.items():
        if key.endswith('relative_position_bias_table'):
            fitted = resize_bias_table(value, window)
            if fitted.shape != value.shape:
                log.transform(key, f'resized {tuple(value.shape)} -> '
                              f'{tuple(fitted.shape)} (bicubic)')
            out[key] = fitted
    return out
