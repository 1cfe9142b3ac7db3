"""Window multi-head self-attention shared by Swin V1 and V2."""
import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .windows import relative_position_index

ATTN_IMPLS = ('sdpa', 'math')


def log_spaced_coords_table(window_size: int,
                            pretrained_window_size: int) -> torch.Tensor:
    """SwinV2's log-spaced relative coordinates, ``(2ws-1, 2ws-1, 2)``.

    Coordinates are normalised by the pretraining window (when given) so a
    model pretrained at window 8 sees the same range at window 16 or 24.
    """
    offsets = torch.arange(-(window_size - 1), window_size, dtype=torch.float32)
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

    Shape:
        - x: ``(B*, N, C)`` windows.
        - mask: ``(num_windows, N, N)`` additive shift mask or None; ``B*``
          must be a multiple of num_windows.
        - output: ``(B*, N, C)``.
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
                nn.Linear(2, 512, bias=True), nn.ReLU(inplace=True),
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
        """Relative position bias, ``(heads, N, N)``."""
        n = self.window_size ** 2
        if self.cosine:
            table = self.cpb_mlp(self.relative_coords_table)
            table = 16 * torch.sigmoid(table.view(-1, self.num_heads))
        else:
            table = self.relative_position_bias_table
        bias = table[self.relative_position_index.view(-1)]
        return bias.view(n, n, self.num_heads).permute(2, 0, 1)

    def _qkv(self, x: torch.Tensor) -> torch.Tensor:
        if self.cosine and self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias),
                              self.v_bias))
            return F.linear(x, self.qkv.weight, bias)
        return self.qkv(x)

    def forward(self, x: torch.Tensor,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        bw, n, c = x.shape
        qkv = self._qkv(x).view(bw, n, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B*, heads, N, d)
        if self.cosine:
            # The clamp bound is a Python float, so it follows the parameter's
            # device (the official code's tensor bound does not).
            scale = torch.clamp(self.logit_scale, max=math.log(100.)).exp()
            q = F.normalize(q, dim=-1) * scale.to(q.dtype)
            k = F.normalize(k, dim=-1)
            scale = 1.0
        else:
            scale = self.scale
        bias = self.position_bias().to(q.dtype)  # (heads, N, N)

        num_windows = 1 if mask is None else mask.shape[0]
        if bw % num_windows:
            raise ValueError(f'{bw} windows is not a multiple of the mask\'s '
                             f'{num_windows} windows per image')
        # Fold the windows of an image into the head axis, so the additive
        # mask (windows x heads, N, N) broadcasts over the batch as a view.
        groups = num_windows * self.num_heads
        q, k, v = (t.reshape(bw // num_windows, groups, n, self.head_dim)
                   for t in (q, k, v))
        attn_mask = bias if mask is None else (
            bias[None] + mask.to(q.dtype)[:, None])
        attn_mask = attn_mask.reshape(1, groups, n, n)

        if self.attn_impl == 'sdpa':
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask,
                dropout_p=self.attn_drop if self.training else 0.,
                scale=scale)
        else:
            attn = (q * scale) @ k.transpose(-2, -1) + attn_mask
            attn = self.attn_dropout(attn.softmax(dim=-1))
            out = attn @ v
        out = out.view(bw, self.num_heads, n, self.head_dim).transpose(1, 2)
        return self.proj_drop(self.proj(out.reshape(bw, n, c)))
