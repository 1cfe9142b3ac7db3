"""A block's branches on token rows: attention, MLP and stochastic depth.

Each function reuses the block's own modules and arithmetic (the same
parameters, the same ops), only on the ``(R, C)`` rows of a
:class:`~.token_rows.WindowRun` instead of a ``(B, H, W, C)`` map; their
linear layers go through :func:`~.linear.linear` (GELU fused at inference).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional

import torch
import torch.nn.functional as F

from .linear import linear, needs_autograd
from .token_rows import WindowRun, gather_rows

if TYPE_CHECKING:  # the layers import this package
    from ..layers import DropPath, Mlp, WindowAttention

# Work on big maps is split into blocks of token rows whose 4C-wide MLP
# activations hold about this many floats per thread (4096 rows of Swin-T's
# first stage, 6 MB): they then stay in cache and, below glibc's 32 MB limit
# for reusing freed memory, their buffers are reused, where whole-map
# buffers are page-faulted anew by every op (measured at 800x1344 on 2
# threads: GELU 0.5 vs 1.3 GElements/s, backbone 1.3x).
CHUNK_FLOATS_PER_THREAD = 4096 * 384


def chunk_rows(hidden_dim: int) -> int:
    """Rows per block for an MLP of ``hidden_dim`` hidden channels."""
    return max(CHUNK_FLOATS_PER_THREAD * torch.get_num_threads() //
               hidden_dim, 1)


def row_blocks(rows: int, hidden_dim: int) -> List[slice]:
    """Cache-sized row blocks covering ``rows`` rows."""
    step = chunk_rows(hidden_dim)
    return [slice(i, min(i + step, rows)) for i in range(0, rows, step)]


class _GeluMlp(torch.autograd.Function):
    """``fc2(gelu(fc1(x)))`` for ``(R, C)`` rows, saving fc1's output only.

    The forward keeps ``h = fc1(x)`` for the backward pass and applies
    GELU and fc2 block by block; the backward recomputes ``gelu(h)`` block
    by block (cheap next to the matmuls) and accumulates the weight
    gradients. So no 4C-wide temporary of the whole map exists besides
    ``h``: 4C fewer saved floats per token than autograd, and fewer page
    faults. The arithmetic is the ops autograd would run. Under autocast,
    ``h`` takes fc1's autocast dtype and the rest runs in that dtype.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, w1: torch.Tensor,
                b1: Optional[torch.Tensor], w2: torch.Tensor,
                b2: Optional[torch.Tensor]) -> torch.Tensor:
        h = linear(x, w1, b1)
        dtype = h.dtype
        w2c = w2.to(dtype)
        b2c = None if b2 is None else b2.to(dtype)
        out = h.new_empty(h.shape[0], w2.shape[0])
        with torch.autocast(x.device.type, enabled=False):
            for rows in row_blocks(h.shape[0], h.shape[1]):
                out[rows] = linear(F.gelu(h[rows]), w2c, b2c)
        ctx.save_for_backward(x, h, w1, w2)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, h, w1, w2 = ctx.saved_tensors
        need = ctx.needs_input_grad
        dtype = h.dtype
        grad = grad.to(dtype)
        w1c, w2c, xc = w1.to(dtype), w2.to(dtype), x.to(dtype)
        w1t, w2t = w1c.t().contiguous(), w2c.t().contiguous()
        gx = torch.empty_like(xc) if need[0] else None
        gw1 = h.new_zeros(w1.shape) if need[1] else None
        gw2 = h.new_zeros(w2.shape) if need[3] else None
        gb1 = h.new_zeros(h.shape[1]) if need[2] else None
        gb2 = grad.sum(0) if need[4] else None
        for rows in row_blocks(h.shape[0], h.shape[1]):
            g, hb = grad[rows], h[rows]
            if gw2 is not None:
                gw2.addmm_(g.t(), F.gelu(hb))
            gh = torch.ops.aten.gelu_backward(linear(g, w2t), hb)
            if gw1 is not None:
                gw1.addmm_(gh.t(), xc[rows])
            if gb1 is not None:
                gb1 += gh.sum(0)
            if gx is not None:
                gx[rows] = linear(gh, w1t)
        return gx, gw1, gb1, gw2, gb2


def mlp_rows(mlp: Mlp, x: torch.Tensor) -> torch.Tensor:
    """:class:`Mlp` on ``(R, C)`` rows in cache-sized row blocks (dropout
    in training falls back to the module itself)."""
    if mlp.training and mlp.drop.p:
        return mlp(x)
    params = (mlp.fc1.weight, mlp.fc1.bias, mlp.fc2.weight, mlp.fc2.bias)
    if needs_autograd(x, *params):
        return _GeluMlp.apply(x, *params)
    # Without autograd nothing is saved: fc1 + GELU fused, block by block.
    w1, b1, w2, b2 = params
    outs = [linear(linear(x[rows], w1, b1, gelu=True), w2, b2)
            for rows in row_blocks(x.shape[0], w1.shape[0])]
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def drop_path_rows(drop_path: DropPath, x: torch.Tensor, windows: WindowRun,
                   batch: int) -> torch.Tensor:
    """:class:`DropPath` for rows of ``batch`` images: row ``r`` is kept or
    dropped with its image ``windows.row_image[r]``."""
    if drop_path.drop_prob == 0. or not drop_path.training:
        return x
    keep = 1 - drop_path.drop_prob
    scale = x.new_empty(batch).bernoulli_(keep).div_(keep)
    return x * scale[windows.row_image][:, None]


def attention_rows(attn: WindowAttention, x: torch.Tensor,
                   windows: WindowRun,
                   position_bias: Optional[torch.Tensor] = None
                   ) -> torch.Tensor:
    """:class:`WindowAttention` on the ``(R, C)`` rows of ``windows``.

    Windows that reach into the padding get their padded tokens as the
    projection of a zero token (the qkv bias), exactly the official zero
    padding; ``position_bias`` may be passed when already computed.
    """
    if windows.groups[-1].stop_row != x.shape[0]:
        raise ValueError(f'x has {x.shape[0]} rows, the WindowRun '
                         f'{windows.groups[-1].stop_row}')
    c, n = x.shape[-1], attn.window_size**2
    weight, qkv_bias = attn.projection()
    qkv = linear(x, weight, qkv_bias)
    bias = attn.position_bias() if position_bias is None else position_bias
    outs = []
    # split, not slicing: a slice's gradient is a zero-filled copy of the
    # whole qkv, one per group, where split's is one concatenation.
    parts = qkv.split([g.stop_row - g.first_row for g in windows.groups])
    for group, part in zip(windows.groups, parts):
        if group.slots is not None:
            full = part.new_zeros(group.num_windows * n, 3 * c)
            if qkv_bias is not None:
                full.add_(qkv_bias.to(part.dtype))
            part = full.index_copy_(0, group.slots, part)
        q, k, v = attn.split_heads(part.view(group.num_windows, n, 3 * c))
        mask = bias.to(q.dtype)[None]  # (1, heads, N, N)
        if group.shift_mask is not None:
            mask = mask + group.shift_mask.to(q.dtype)[:, None]
        out = attn.merge_heads(attn.attend(q, k, v, mask)).reshape(-1, c)
        if group.slots is not None:
            out = gather_rows(out, group.slots)
        outs.append(out)
    out = outs[0] if len(outs) == 1 else torch.cat(outs)
    return attn.proj_drop(linear(out, attn.proj.weight, attn.proj.bias))
