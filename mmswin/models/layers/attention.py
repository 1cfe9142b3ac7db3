"""Window multi-head self-attention shared by Swin V1 and V2."""
import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .windows import (
    WindowGroup,
    WindowRun,
    gather_rows,
    relative_position_index,
)

ATTN_IMPLS = ('sdpa', 'math')


def log_spaced_coords_table(window_size: int,
                            pretrained_window_size: int) -> torch.Tensor:
    """SwinV2's log-spaced relative coordinates, ``(2ws-1, 2ws-1, 2)``.

    Coordinates are normalised by the pretraining window (when given) so a
    model pretrained at window 8 sees the same range at window 16 or 24.
    """
    offsets = torch.arange(-(window_size - 1), window_size,
                           dtype=torch.float32)
    table = torch.stack(torch.meshgrid(offsets, offsets, indexing='ij'), -1)
    norm = (pretrained_window_size if pretrained_window_size > 0 else
            window_size) - 1
    table = table / max(norm, 1) * 8
    return torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows, with relative position bias.

    V1 (``cosine=False``): scaled dot product plus a learned bias table
    ``relative_position_bias_table`` of shape ``((2ws-1)**2, heads)``.
    V2 (``cosine=True``): cosine similarity times a learned per-head
    temperature ``logit_scale`` (clamped at log(100)), plus a continuous
    position bias ``16 * sigmoid(cpb_mlp(coords))``; q and v have biases,
    k has none. Parameter names follow the official Microsoft code.

    The position bias and the shift mask are added as one additive mask, so
    the default ``attn_impl='sdpa'`` goes through
    :func:`torch.nn.functional.scaled_dot_product_attention`; ``'math'`` is
    the explicit softmax(QK^T)V kept for checking.

    Args:
        dim: Channels C of the tokens.
        window_size: Window side length ws; a window holds N = ws**2 tokens.
        num_heads: Number of heads; must divide ``dim``.
        qkv_bias: Learn biases for q, k, v (V2: for q and v).
        attn_drop: Dropout on the attention weights.
        proj_drop: Dropout after the output projection.
        cosine: Use SwinV2's scaled cosine attention and continuous bias.
        pretrained_window_size: V2 only: window of the pretraining, used to
            scale the relative coordinates (0: the current window).
        attn_impl: ``'sdpa'`` or ``'math'``.

    Windows that need no shift mask attend with the bias alone, a
    ``(1, heads, N, N)`` mask that the fused kernel broadcasts; q, k and v
    are strided views of the one qkv projection, and the fused kernel's
    output is already token-major, so no copy is made around the kernel.

    Shape:
        - x: ``(B*, N, C)`` windows (or the ``(R, C)`` rows of a stage).
        - mask: ``(num_windows, N, N)`` additive shift mask or None; ``B*``
          must be a multiple of num_windows.
        - output: same as x.
    """

    def __init__(self, dim: int, window_size: int, num_heads: int,
                 qkv_bias: bool = True, attn_drop: float = 0.,
                 proj_drop: float = 0., cosine: bool = False,
                 pretrained_window_size: int = 0,
                 attn_impl: str = 'sdpa') -> None:
        super().__init__()
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f'attn_impl must be one of {ATTN_IMPLS}, '
                             f'got {attn_impl!r}')
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.cosine = cosine
        self.attn_impl = attn_impl
        self.attn_drop = attn_drop
        n_rel = 2 * window_size - 1
        if cosine:
            self.logit_scale = nn.Parameter(
                torch.log(10 * torch.ones(num_heads, 1, 1)))
            self.cpb_mlp = nn.Sequential(
                nn.Linear(2, 512, bias=True), nn.ReLU(),
                nn.Linear(512, num_heads, bias=False))
            self.register_buffer(
                'relative_coords_table',
                log_spaced_coords_table(window_size, pretrained_window_size),
                persistent=False)
            self.qkv = nn.Linear(dim, dim * 3, bias=False)
            if qkv_bias:
                self.q_bias = nn.Parameter(torch.zeros(dim))
                self.v_bias = nn.Parameter(torch.zeros(dim))
            else:
                self.q_bias = self.v_bias = None
        else:
            self.scale = self.head_dim ** -0.5
            self.relative_position_bias_table = nn.Parameter(
                torch.zeros(n_rel * n_rel, num_heads))
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.register_buffer('relative_position_index',
                             relative_position_index(window_size),
                             persistent=False)
        self.attn_dropout = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def extra_repr(self) -> str:
        return (f'dim={self.dim}, window_size={self.window_size}, '
                f'num_heads={self.num_heads}, cosine={self.cosine}, '
                f'attn_impl={self.attn_impl!r}')

    def position_bias(self) -> torch.Tensor:
        """Relative position bias, ``(heads, N, N)``, contiguous."""
        n = self.window_size ** 2
        if self.cosine:
            table = self.cpb_mlp(self.relative_coords_table)
            table = 16 * torch.sigmoid(table.view(-1, self.num_heads))
        else:
            table = self.relative_position_bias_table
        bias = table[self.relative_position_index.view(-1)]
        return bias.view(n, n, self.num_heads).permute(2, 0, 1).contiguous()

    def _qkv(self, x: torch.Tensor) -> Tuple[torch.Tensor,
                                             Optional[torch.Tensor]]:
        """``(R, 3C)`` projections and the bias they carry (or None)."""
        if self.cosine:
            bias = None
            if self.q_bias is not None:
                bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias),
                                  self.v_bias))
            return F.linear(x, self.qkv.weight, bias), bias
        return self.qkv(x), self.qkv.bias

    def _groups(self, x: torch.Tensor, mask: Optional[torch.Tensor],
                windows: Optional[WindowRun]) -> Tuple[WindowGroup, ...]:
        """The window groups of ``x``'s rows."""
        n = self.window_size**2
        if windows is not None:
            if mask is not None:
                raise ValueError('pass either mask or windows, not both')
            if windows.groups[-1].stop_row != x.shape[0]:
                raise ValueError(f'x has {x.shape[0]} rows, the WindowRun '
                                 f'{windows.groups[-1].stop_row}')
            return windows.groups
        if x.shape[0] % n:
            raise ValueError(f'{x.shape[0]} tokens do not fill windows of '
                             f'{n}; pass x as (windows, {n}, C)')
        num_windows = x.shape[0] // n
        if mask is not None:
            if num_windows % mask.shape[0]:
                raise ValueError(f'{num_windows} windows is not a multiple of '
                                 f'the mask\'s {mask.shape[0]} windows per '
                                 'image')
            mask = mask.repeat(num_windows // mask.shape[0], 1, 1)
        return (WindowGroup(0, x.shape[0], num_windows, n, mask, None, ()), )

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                attn_mask: torch.Tensor, scale: float) -> torch.Tensor:
        """``(w, heads, N, d)`` attention output of ``(w, heads, N, d)``
        inputs and a ``(w or 1, heads, N, N)`` additive mask."""
        # The CPU fused kernel has no gradient for the mask (the position
        # bias is learned), so PyTorch would run its own math fallback,
        # which adds a fully-masked-row check; the plain math is faster.
        mask_needs_grad = attn_mask.requires_grad and q.device.type == 'cpu'
        if self.attn_impl == 'sdpa' and not mask_needs_grad:
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask,
                dropout_p=self.attn_drop if self.training else 0.,
                scale=scale)
        if q.dtype not in (torch.float16, torch.bfloat16):
            attn = (q * scale) @ k.transpose(-2, -1) + attn_mask
            return self.attn_dropout(attn.softmax(dim=-1)) @ v
        # Half precision: logits and softmax in fp32 with autocast off, as
        # fp16 logits of large activations overflow to inf (then NaN).
        with torch.autocast(q.device.type, enabled=False):
            attn = (q.float() * scale) @ k.float().transpose(-2, -1)
            attn = (attn + attn_mask.float()).softmax(dim=-1)
        return self.attn_dropout(attn.to(v.dtype)) @ v

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None,
                windows: Optional[WindowRun] = None,
                position_bias: Optional[torch.Tensor] = None
                ) -> torch.Tensor:
        """Attend within windows.

        Args:
            x: ``(B*, N, C)`` windows of ``N = ws**2`` tokens, or the
                ``(R, C)`` rows of a stage's ``windows``.
            mask: ``(nW, N, N)`` additive mask, window ``i`` using
                ``mask[i % nW]`` (the official shift mask), or None.
            windows: The :class:`WindowRun` the rows form (instead of
                ``mask``): its groups say which windows are masked and
                where windows reach into the padding, whose tokens are read
                as the official zeros.
            position_bias: :meth:`position_bias` when already computed
                (a block that calls attention piece by piece passes it).

        Returns:
            Same shape as ``x``.
        """
        shape, c = x.shape, x.shape[-1]
        n = self.window_size ** 2
        rows = x.reshape(-1, c)
        qkv, qkv_bias = self._qkv(rows)
        if self.cosine:
            # The clamp bound is a Python float, so it follows the parameter's
            # device (the official code's tensor bound does not).
            logit_scale = torch.clamp(self.logit_scale,
                                      max=math.log(100.)).exp()
        bias = position_bias
        outs = []
        groups = self._groups(rows, mask, windows)
        # split, not slicing: a slice's gradient is a zero-filled copy of
        # the whole qkv, one per group, where split's is one concatenation.
        parts = qkv.split([g.stop_row - g.first_row for g in groups])
        for group, part in zip(groups, parts):
            if group.slots is not None:
                # Padded tokens are zeros, whose projections are the bias.
                full = part.new_zeros(group.num_windows * n, 3 * c)
                if qkv_bias is not None:
                    full.add_(qkv_bias.to(part.dtype))
                part = full.index_copy_(0, group.slots, part)
            part = part.view(group.num_windows, n, 3, self.num_heads,
                             self.head_dim)
            q, k, v = part.permute(2, 0, 3, 1, 4).unbind(0)  # (w, h, N, d)
            scale = 1.0 if self.cosine else self.scale
            if self.cosine:
                # Padded tokens have k = 0; fp16 rounds the usual eps
                # (1e-12) to 0, which would make their k 0/0 = NaN.
                eps = max(1e-12, torch.finfo(q.dtype).tiny)
                q = F.normalize(q, dim=-1, eps=eps) * logit_scale.to(q.dtype)
                k = F.normalize(k, dim=-1, eps=eps)
            if bias is None:
                bias = self.position_bias()
            bias = bias.to(q.dtype).view(1, *bias.shape[-3:])  # (1, h, N, N)
            attn_mask = bias if group.shift_mask is None else (
                bias + group.shift_mask.to(q.dtype)[:, None])
            out = self._attend(q, k, v, attn_mask, scale)
            # (w, N, heads, d): a view for the fused kernel's output.
            out = out.transpose(1, 2).reshape(-1, c)
            if group.slots is not None:
                out = gather_rows(out, group.slots)
            outs.append(out)
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        out = self.proj_drop(self.proj(out))
        return out.view(shape)
