"""Swin blocks and stages, shared by V1 and V2."""
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp

from .attention import WindowAttention
from .patch import PatchMerging
from .windows import (merge_and_unshift, pad_hw, padded_size,
                      shift_and_partition, shift_window_mask, zero_padding)


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample.

    Shape: any ``(B, ...)`` in, same out.
    """

    def __init__(self, drop_prob: float = 0.) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob}'

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0. or not self.training:
            return x
        keep = 1 - self.drop_prob
        shape = (x.shape[0], ) + (1, ) * (x.ndim - 1)
        return x * x.new_empty(shape).bernoulli_(keep).div_(keep)


class Mlp(nn.Module):
    """Two-layer MLP with GELU (official names ``fc1``/``fc2``).

    Shape: ``(..., C)`` in, ``(..., C)`` out.
    """

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class SwinBlock(nn.Module):
    """One (shifted-)window attention block plus MLP.

    V1 (pre-norm): ``x + dp(attn(norm1(x)))``, then ``x + dp(mlp(norm2(x)))``.
    V2 (``post_norm=True``, res-post-norm as in the official code):
    ``x + dp(norm1(attn(x)))``, then ``x + dp(norm2(mlp(x)))``.

    The block works on a map already padded to window multiples; tokens
    beyond ``height x width`` are zeroed before attention, which is exactly
    the official per-block zero padding, without a pad and a crop per block.

    Args:
        dim: Channels C.
        num_heads: Attention heads.
        window_size: Window side ws.
        shift_size: Cyclic shift (0 or ws // 2).
        mlp_ratio: Hidden width of the MLP relative to C.
        qkv_bias: Biases on q, k, v.
        drop: Dropout after the attention projection and in the MLP.
        attn_drop: Dropout on attention weights.
        drop_path: Stochastic depth probability of this block.
        post_norm: SwinV2 res-post-norm (and cosine attention).
        pretrained_window_size: V2: window used in pretraining.
        attn_impl: ``'sdpa'`` or ``'math'``.

    Shape:
        - x: ``(B, Hp, Wp, C)`` with Hp, Wp multiples of ``window_size``.
        - mask: ``(num_windows, ws**2, ws**2)`` when shifted, else None.
        - output: ``(B, Hp, Wp, C)``; the padded tokens hold no meaning.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int = 7,
                 shift_size: int = 0, mlp_ratio: float = 4.,
                 qkv_bias: bool = True, drop: float = 0.,
                 attn_drop: float = 0., drop_path: float = 0.,
                 post_norm: bool = False, pretrained_window_size: int = 0,
                 attn_impl: str = 'sdpa') -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.post_norm = post_norm
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(
            dim, window_size, num_heads, qkv_bias=qkv_bias,
            attn_drop=attn_drop, proj_drop=drop, cosine=post_norm,
            pretrained_window_size=pretrained_window_size,
            attn_impl=attn_impl)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def _attention(self, x: torch.Tensor,
                   mask: Optional[torch.Tensor]) -> torch.Tensor:
        hp, wp = x.shape[1], x.shape[2]
        windows = shift_and_partition(x, self.window_size, self.shift_size)
        windows = self.attn(windows, mask if self.shift_size else None)
        return merge_and_unshift(windows, self.window_size, self.shift_size,
                                 hp, wp)

    def forward(self, x: torch.Tensor, height: int, width: int,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.post_norm:
            y = self._attention(zero_padding(x, height, width), mask)
            x = x + self.drop_path(self.norm1(y))
            return x + self.drop_path(self.norm2(self.mlp(x)))
        y = zero_padding(self.norm1(x), height, width)
        x = x + self.drop_path(self._attention(y, mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SwinStage(nn.Module):
    """A stage: ``depth`` blocks alternating plain and shifted windows, then
    an optional patch merging (official layout: ``downsample`` at the end).

    Args:
        dim: Channels C.
        depth: Number of blocks.
        num_heads: Attention heads.
        window_size: Window side ws.
        drop_path: One probability per block, or one for all.
        downsample: Append a :class:`PatchMerging`.
        with_cp: Gradient checkpointing per block (saves activation memory).
        extra_norm_every: V2 huge/giant: a LayerNorm after every k-th block.
        **block_kwargs: Passed on to :class:`SwinBlock`.

    Shape:
        - x: ``(B, H, W, C)``.
        - output: ``(B, H, W, C)``, before ``downsample``, which the backbone
          calls (``(B, ceil(H/2), ceil(W/2), 2C)``) only when it is needed.
    """

    def __init__(self, dim: int, depth: int, num_heads: int,
                 window_size: int = 7,
                 drop_path: Union[float, Sequence[float]] = 0.,
                 downsample: bool = False, with_cp: bool = False,
                 extra_norm_every: int = 0, **block_kwargs) -> None:
        super().__init__()
        if isinstance(drop_path, (int, float)):
            drop_path = [float(drop_path)] * depth
        self.window_size = window_size
        self.with_cp = with_cp
        self.extra_norm_every = extra_norm_every
        self.blocks = nn.ModuleList([
            SwinBlock(dim, num_heads, window_size,
                      shift_size=0 if i % 2 == 0 else window_size // 2,
                      drop_path=drop_path[i], **block_kwargs)
            for i in range(depth)
        ])
        if extra_norm_every:
            self.extra_norms = nn.ModuleList([
                nn.LayerNorm(dim) for _ in range(depth // extra_norm_every)])
        norm_after = block_kwargs.get('post_norm', False)
        self.downsample = PatchMerging(dim, norm_after) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[1], x.shape[2]
        ws = self.window_size
        hp, wp = padded_size(height, ws), padded_size(width, ws)
        x = pad_hw(x, hp, wp)
        mask = None
        if len(self.blocks) > 1 and ws // 2:
            mask = shift_window_mask(hp, wp, ws, ws // 2, x.device, x.dtype)
        for i, block in enumerate(self.blocks):
            if self.with_cp and x.requires_grad:
                x = cp.checkpoint(block, x, height, width, mask,
                                  use_reentrant=False)
            else:
                x = block(x, height, width, mask)
            if self.extra_norm_every and (i + 1) % self.extra_norm_every == 0:
                x = self.extra_norms[(i + 1) // self.extra_norm_every - 1](x)
        if hp != height or wp != width:
            x = x[:, :height, :width].contiguous()
        return x
