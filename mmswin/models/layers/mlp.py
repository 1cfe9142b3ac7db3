"""The transformer MLP, run in row blocks on CPU."""
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

# On CPU, work on big maps is split into blocks of token rows whose 4C-wide
# MLP activations hold about this many floats per thread (4096 rows of
# Swin-T's first stage, 6 MB): they then stay in cache and, below glibc's
# 32 MB limit for reusing freed memory, their buffers are reused, where
# whole-map buffers are page-faulted anew by every op (measured at
# 800x1344 on 2 threads: GELU 0.5 vs 1.3 GElements/s, backbone 1.3x).
CHUNK_FLOATS_PER_THREAD = 4096 * 384


def chunk_rows(hidden_dim: int) -> int:
    """Rows per block on CPU for an MLP of ``hidden_dim`` hidden channels."""
    return max(CHUNK_FLOATS_PER_THREAD * torch.get_num_threads() //
               hidden_dim, 1)


def row_blocks(rows: int, hidden_dim: int,
               device: torch.device) -> List[slice]:
    """Row blocks for ``rows`` rows: cache-sized on CPU, one on GPUs (whose
    caching allocator reuses buffers anyway)."""
    step = chunk_rows(hidden_dim) if device.type == 'cpu' else rows
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
        h = F.linear(x, w1, b1)
        dtype = h.dtype
        w2c = w2.to(dtype)
        b2c = None if b2 is None else b2.to(dtype)
        out = h.new_empty(h.shape[0], w2.shape[0])
        with torch.autocast(x.device.type, enabled=False):
            for rows in row_blocks(h.shape[0], h.shape[1], h.device):
                hidden = F.gelu(h[rows])
                if b2c is None:
                    torch.mm(hidden, w2c.t(), out=out[rows])
                else:
                    torch.addmm(b2c, hidden, w2c.t(), out=out[rows])
        ctx.save_for_backward(x, h, w1, w2)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, h, w1, w2 = ctx.saved_tensors
        need = ctx.needs_input_grad
        dtype = h.dtype
        grad = grad.to(dtype)
        w1c, w2c, xc = w1.to(dtype), w2.to(dtype), x.to(dtype)
        gx = torch.empty_like(xc) if need[0] else None
        gw1 = h.new_zeros(w1.shape) if need[1] else None
        gw2 = h.new_zeros(w2.shape) if need[3] else None
        gb1 = h.new_zeros(h.shape[1]) if need[2] else None
        gb2 = grad.sum(0) if need[4] else None
        for rows in row_blocks(h.shape[0], h.shape[1], h.device):
            g, hb = grad[rows], h[rows]
            if gw2 is not None:
                gw2.addmm_(g.t(), F.gelu(hb))
            gh = torch.ops.aten.gelu_backward(g @ w2c, hb)
            if gw1 is not None:
                gw1.addmm_(gh.t(), xc[rows])
            if gb1 is not None:
                gb1 += gh.sum(0)
            if gx is not None:
                torch.mm(gh, w1c, out=gx[rows])
        return gx, gw1, gb1, gw2, gb2


class Mlp(nn.Module):
    """Two-layer MLP with GELU (official names ``fc1``/``fc2``).

    Without dropout it runs as :class:`_GeluMlp` (row blocks on CPU, fc1's
    output the only saved activation); with dropout in training, as plain
    modules.

    Args:
        dim: Input and output channels C.
        hidden_dim: Hidden channels (4C in Swin).
        drop: Dropout after GELU and after fc2.

    Shape: ``(..., C)`` in, ``(..., C)`` out.
    """

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.drop.p:
            return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))
        rows = x.reshape(-1, x.shape[-1])
        out = _GeluMlp.apply(rows, self.fc1.weight, self.fc1.bias,
                             self.fc2.weight, self.fc2.bias)
        return out.view(*x.shape[:-1], out.shape[-1])
