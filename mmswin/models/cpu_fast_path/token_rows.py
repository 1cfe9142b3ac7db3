"""Token rows in window order: the CPU fast path's data layout.

Inside a stage the tokens are kept as the rows of one ``(R, C)`` matrix,
``R = B * H * W`` (the real tokens only), ordered window by window, instead
of a ``(B, H, W, C)`` map from which every block gathers its windows (zero
tokens included) and back. LayerNorm, the MLP and the residual adds
work per token, so they do not care about the order and never touch
padding; only attention needs whole windows. A regular block runs on the
rows as they are, and a shifted block costs one row gather into the
shifted order (the roll and the partition at once); the next regular
block gathers back.

For attention the windows of a layout come in groups (:class:`WindowGroup`)
that are alike: windows without and with the shift mask (the masked ones,
which wrap around the bottom or right edge, come last, so the others
attend with the position bias alone, a mask the fused kernel broadcasts),
and in each, full windows before windows that reach into the padding.
A full window is ``N = ws**2`` consecutive rows; a padded one has fewer,
and attention places them into a window whose padded tokens project to
the qkv bias, exactly the official zero padding.

The layouts are built from the plain path's gather index
(:func:`~mmswin.models.layers.windows.window_token_index`) for concrete
sizes and cached, which is why this path is eager-only (see
:mod:`mmswin.models.cpu_fast_path`).
"""
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import List, Optional, Tuple

import torch

from ..layers.windows import shift_window_mask, window_token_index


@dataclass(frozen=True, eq=False)
class WindowGroup:
    """Consecutive windows that attention treats alike.

    Attributes:
        first_row, stop_row: The group's rows ``[first_row, stop_row)``.
        num_windows: Windows in the group.
        window_tokens: Tokens of a full window, ``N = ws**2``.
        shift_mask: ``(num_windows, N, N)`` additive mask, or None.
        slots: For windows that reach into the padding: ``(rows,)`` place
            of each row among the ``num_windows * N`` tokens of the padded
            windows; None when every window is full.
        row_offsets: ``num_windows + 1`` row offsets of the windows,
            relative to ``first_row``.
    """

    first_row: int
    stop_row: int
    num_windows: int
    window_tokens: int
    shift_mask: Optional[torch.Tensor]
    slots: Optional[torch.Tensor]
    row_offsets: Tuple[int, ...]

    def slice(self, first: int, stop: int, row_base: int) -> 'WindowGroup':
        """Windows ``[first, stop)``, with rows counted from ``row_base``."""
        lo, hi = self.row_offsets[first], self.row_offsets[stop]
        slots = None if self.slots is None else (
            self.slots[lo:hi] - first * self.window_tokens)
        mask = None if self.shift_mask is None else self.shift_mask[first:stop]
        start = self.first_row + lo - row_base
        return WindowGroup(start, start + hi - lo, stop - first,
                           self.window_tokens, mask, slots,
                           tuple(o - lo for o in
                                 self.row_offsets[first:stop + 1]))


@dataclass(frozen=True, eq=False)
class WindowRun:
    """Rows of consecutive windows, as attention and drop-path need them.

    Attributes:
        groups: The :class:`WindowGroup` s covering the rows in order.
        row_image: ``(rows,)`` image index of each row.
    """

    groups: Tuple[WindowGroup, ...]
    row_image: torch.Tensor


@dataclass(frozen=True, eq=False)
class TokenLayout:
    """One order of a stage's real tokens as rows grouped in windows.

    Row ``r`` holds the token at ``order[r]``, counted as
    ``b * H * W + i * W + j``. Built by :func:`token_layout`, cached, never
    saved.

    Attributes:
        batch, height, width: The map, ``(B, H, W)``.
        window_size, shift_size: Window side and cyclic shift.
        order: ``(R,)`` token of each row, ``R = B * H * W``.
        rank: ``(R,)`` row of each token (inverse of ``order``).
        windows: All rows as one :class:`WindowRun`.
    """

    batch: int
    height: int
    width: int
    window_size: int
    shift_size: int
    order: torch.Tensor
    rank: torch.Tensor
    windows: WindowRun

    memo: dict = field(default_factory=dict, repr=False)

    def chunks(self, max_rows: int) -> List[Tuple[int, int, WindowRun]]:
        """Runs of whole windows of about ``max_rows`` rows (at least one
        window), each inside one group: ``(first row, stop row, run)``.
        Memoised; used to process a big map in cache-sized pieces."""
        key = ('chunks', max_rows)
        if key not in self.memo:
            self.memo[key] = self._chunks(max_rows)
        return self.memo[key]

    def _chunks(self, max_rows: int) -> List[Tuple[int, int, WindowRun]]:
        out = []
        for group in self.windows.groups:
            step = max(max_rows // group.window_tokens, 1)
            for lo in range(0, group.num_windows, step):
                hi = min(lo + step, group.num_windows)
                first = group.first_row + group.row_offsets[lo]
                piece = group.slice(lo, hi, first)
                out.append((first, first + piece.stop_row, WindowRun(
                    (piece, ), self.windows.row_image[
                        first:first + piece.stop_row])))
        return out


def _build_layout(batch: int, height: int, width: int, window_size: int,
                  shift_size: int) -> TokenLayout:
    n = window_size**2
    # The plain path's gather index, one row per window: the token at each
    # position, height * width for padding.
    token = window_token_index(height, width, window_size,
                               shift_size).view(-1, n)
    is_real = token < height * width
    has_pad = ~is_real.all(1)
    needs_mask = torch.zeros_like(has_pad)
    if shift_size:
        mask = shift_window_mask(height, width, window_size, shift_size)
        needs_mask = mask.flatten(1).ne(0).any(1)
    images = torch.arange(batch)
    groups, order, row = [], [], 0
    for masked in (False, True):
        for padded in (False, True):
            ids = ((needs_mask == masked) & (has_pad == padded)).nonzero()
            ids = ids.flatten()
            if not ids.numel():
                continue
            real = is_real[ids]
            # Every image's windows of the group, image after image.
            order.append((token[ids][real][None] +
                          images[:, None] * (height * width)).flatten())
            slots = None
            if padded:
                in_image = torch.arange(ids.numel() * n).view(-1, n)[real]
                slots = (in_image[None] + images[:, None] *
                         (ids.numel() * n)).flatten()
            counts = real.sum(1).repeat(batch)
            offsets = (0, *torch.cumsum(counts, 0).tolist())
            groups.append(WindowGroup(
                row, row + offsets[-1], ids.numel() * batch, n,
                mask[ids].repeat(batch, 1, 1) if masked else None, slots,
                offsets))
            row += offsets[-1]
    order = torch.cat(order)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel())
    run = WindowRun(tuple(groups), order // (height * width))
    return TokenLayout(batch, height, width, window_size, shift_size,
                       order, rank, run)


def _to_device(group: WindowGroup, device: torch.device) -> WindowGroup:
    return replace(group, **{
        name: getattr(group, name).to(device)
        for name in ('shift_mask', 'slots')
        if getattr(group, name) is not None
    })


@lru_cache(maxsize=32)
def token_layout(batch: int, height: int, width: int, window_size: int,
                 shift_size: int, device: torch.device) -> TokenLayout:
    """The :class:`TokenLayout` of a ``(batch, height, width)`` map (the
    fast path's one cache: a bounded LRU, 2 layouts per stage)."""
    layout = _build_layout(batch, height, width, window_size, shift_size)
    run = WindowRun(
        tuple(_to_device(g, device) for g in layout.windows.groups),
        layout.windows.row_image.to(device))
    return replace(layout, order=layout.order.to(device),
                   rank=layout.rank.to(device), windows=run)


class _GatherRows(torch.autograd.Function):
    """``x[index]`` for an ``index`` without repeats. The gradient is a
    gather by ``inverse`` when ``index`` is a permutation, else a copy into
    zeros; never the serial scatter-add of ``index_select``'s backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, index: torch.Tensor,
                inverse: Optional[torch.Tensor]) -> torch.Tensor:
        ctx.num_rows = x.shape[0]
        ctx.save_for_backward(index if inverse is None else inverse)
        ctx.is_permutation = inverse is not None
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        index, = ctx.saved_tensors
        if ctx.is_permutation:
            return grad.index_select(0, index), None, None
        out = grad.new_zeros((ctx.num_rows, ) + grad.shape[1:])
        return out.index_copy_(0, index, grad), None, None


def gather_rows(x: torch.Tensor, index: torch.Tensor,
                inverse: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Rows ``x[index]`` of a ``(R, C)`` matrix, ``index`` without repeats
    (``inverse``: its inverse permutation, when it is one)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _GatherRows.apply(x, index, inverse)
    return x.index_select(0, index)


def enter_layout(x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """``(B, H, W, C)`` map -> ``(R, C)`` rows in ``layout``."""
    return gather_rows(x.reshape(-1, x.shape[-1]), layout.order, layout.rank)


def leave_layout(x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """Inverse of :func:`enter_layout`: ``(R, C)`` -> ``(B, H, W, C)``."""
    return gather_rows(x, layout.rank, layout.order).view(
        layout.batch, layout.height, layout.width, -1)


def _reorder_indices(src: TokenLayout, dst: TokenLayout
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    shape = (src.batch, src.height, src.width, src.window_size)
    other = (dst.batch, dst.height, dst.width, dst.window_size)
    if shape != other:
        raise ValueError('cannot reorder between layouts of different maps '
                         f'(B, H, W, ws) {shape} and {other}')
    key = ('reorder_from', src.shift_size)
    if key not in dst.memo:
        dst.memo[key] = (src.rank[dst.order], dst.rank[src.order])
    return dst.memo[key]


def change_layout(x: torch.Tensor, src: TokenLayout, dst: TokenLayout,
                  out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Rows in layout ``src`` -> the same tokens in layout ``dst`` (one
    gather: the cyclic shift and the window partition together), written
    to ``out`` (not ``x``) when given, without autograd."""
    if src is dst:
        return x
    index, inverse = _reorder_indices(src, dst)
    if out is not None:
        return torch.index_select(x, 0, index, out=out)
    return gather_rows(x, index, inverse)
