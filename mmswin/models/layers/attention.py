"""Window multi-head self-attention shared by Swin V1 and V2."""
import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..cpu_fast_path.linear import Linear, linear
from .windows import relative_position_index

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
    the explicit softmax(QK^T)V.

    The steps (:meth:`projection`, :meth:`split_heads`, :meth:`position_bias`,
    :meth:`attend`, :meth:`merge_heads`) are public so that the CPU fast
    path (:mod:`mmswin.models.cpu_fast_path`) runs the same arithmetic on
    its own token order.

    Args:
        dim: Channels C of the tokens.
        window_size: Window side length ws; a window holds N = ws**2 tokens.
        num_heads: Number of heads; must divide ``dim``.
        qkv_bias: Learn biases for q, k, v (V2: for q and v).
        qk_scale: V1 only: scale of the logits; None means
            ``head_dim ** -0.5``. V2's cosine attention learns its scale.
        attn_drop: Dropout on the attention weights.
        proj_drop: Dropout after the output projection.
        cosine: Use SwinV2's scaled cosine attention and continuous bias.
        pretrained_window_size: V2 only: window of the pretraining, used to
            scale the relative coordinates (0: the current window).
        attn_impl: ``'sdpa'`` or ``'math'``.

    Shape:
        - x: ``(B * num_windows, N, C)``, the windows of B images in
          :func:`~.windows.window_partition` order.
        - shift_mask: ``(num_windows, N, N)`` additive mask or None.
        - output: ``(B * num_windows, N, C)``.
    """

    def __init__(self, dim: int, window_size: int, num_heads: int,
                 qkv_bias: bool = True, qk_scale: Optional[float] = None,
                 attn_drop: float = 0., proj_drop: float = 0.,
                 cosine: bool = False, pretrained_window_size: int = 0,
                 attn_impl: str = 'sdpa') -> None:
        super().__init__()
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f'attn_impl must be one of {ATTN_IMPLS}, '
                             f'got {attn_impl!r}')
        if cosine and qk_scale is not None:
            raise ValueError('qk_scale must be None with cosine attention '
                             '(SwinV2 learns its scale, logit_scale)')
        if not cosine and pretrained_window_size:
            raise ValueError('pretrained_window_size is for cosine '
                             'attention (SwinV2) only; leave it 0')
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.cosine = cosine
        self.attn_impl = attn_impl
        self.attn_drop = attn_drop
        n_rel = 2 * window_size - 1
        if cosine:
            self.scale = 1.0  # the cosine similarity is scaled by logit_scale
            self.logit_scale = nn.Parameter(
                torch.log(10 * torch.ones(num_heads, 1, 1)))
            self.cpb_mlp = nn.Sequential(
                nn.Linear(2, 512, bias=True), nn.ReLU(),
                nn.Linear(512, num_heads, bias=False))
            self.register_buffer(
                'relative_coords_table',
                log_spaced_coords_table(window_size, pretrained_window_size),
                persistent=False)
            self.qkv = Linear(dim, dim * 3, bias=False)
            if qkv_bias:
                self.q_bias = nn.Parameter(torch.zeros(dim))
                self.v_bias = nn.Parameter(torch.zeros(dim))
            else:
                self.q_bias = self.v_bias = None
        else:
            self.scale = (self.head_dim ** -0.5 if qk_scale is None else
                          qk_scale)
            self.relative_position_bias_table = nn.Parameter(
                torch.zeros(n_rel * n_rel, num_heads))
            self.qkv = Linear(dim, dim * 3, bias=qkv_bias)
        self.register_buffer('relative_position_index',
                             relative_position_index(window_size),
                             persistent=False)
        self.attn_dropout = nn.Dropout(attn_drop)
        self.proj = Linear(dim, dim)
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

    def projection(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Weight ``(3C, C)`` and bias ``(3C,)`` (or None) of the q, k, v
        projection; the bias is also the projection of a zero token."""
        if not self.cosine:
            return self.qkv.weight, self.qkv.bias
        if self.q_bias is None:
            return self.qkv.weight, None
        # V2: k has no bias.
        return self.qkv.weight, torch.cat(
            (self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """q, k and v of ``(..., C)`` tokens as ``(..., 3C)``."""
        if not self.cosine:
            return self.qkv(x)
        return linear(x, *self.projection())

    def split_heads(self, qkv: torch.Tensor
                    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(w, N, 3C)`` projections -> q, k, v, each ``(w, heads, N, d)``
        (strided views). V2 normalises q and k and scales q by the clamped
        ``logit_scale``."""
        w, n, _ = qkv.shape
        qkv = qkv.view(w, n, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if self.cosine:
            # The clamp bound is a Python float, so it follows the
            # parameter's device (the official code's tensor bound does not).
            logit_scale = torch.clamp(self.logit_scale,
                                      max=math.log(100.)).exp()
            # Padded tokens have k = 0; fp16 rounds the usual eps (1e-12)
            # to 0, which would make their k 0/0 = NaN.
            eps = max(1e-12, torch.finfo(q.dtype).tiny)
            q = F.normalize(q, dim=-1, eps=eps) * logit_scale.to(q.dtype)
            k = F.normalize(k, dim=-1, eps=eps)
        return q, k, v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               attn_mask: torch.Tensor) -> torch.Tensor:
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
                scale=self.scale)
        if q.dtype not in (torch.float16, torch.bfloat16):
            attn = (q * self.scale) @ k.transpose(-2, -1) + attn_mask
            return self.attn_dropout(attn.softmax(dim=-1)) @ v
        # Half precision: logits and softmax in fp32 with autocast off, as
        # fp16 logits of large activations overflow to inf (then NaN).
        with torch.autocast(q.device.type, enabled=False):
            attn = (q.float() * self.scale) @ k.float().transpose(-2, -1)
            attn = (attn + attn_mask.float()).softmax(dim=-1)
        return self.attn_dropout(attn.to(v.dtype)) @ v

    def merge_heads(self, out: torch.Tensor) -> torch.Tensor:
        """``(w, heads, N, d)`` -> ``(w, N, C)``.

        The fused kernel's output is token-major, so ``contiguous`` copies
        nothing in eager mode; it keeps an exported graph valid where the
        traced strides differ from the kernel's (export under no_grad).
        """
        w, _, n, _ = out.shape
        return out.transpose(1, 2).contiguous().view(w, n, self.dim)

    def forward(self, x: torch.Tensor,
                shift_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Attend within each window of ``x``; window ``i`` of every image
        uses ``shift_mask[i]`` (see :class:`WindowAttention`'s shapes)."""
        q, k, v = self.split_heads(self.project(x))
        mask = self.position_bias().to(q.dtype)[None]  # (1, heads, N, N)
        if shift_mask is not None:
            # (num_windows, heads, N, N), repeated for every image: the
            # fused kernel needs a 4-D mask (a 5-D one falls back to math).
            mask = mask + shift_mask.to(q.dtype)[:, None]
            windows, heads, n, _ = mask.shape
            images = q.shape[0] // windows
            mask = mask.expand(images, windows, heads, n, n).reshape(
                q.shape[0], heads, n, n)
        out = self.merge_heads(self.attend(q, k, v, mask))
        return self.proj_drop(self.proj(out))
