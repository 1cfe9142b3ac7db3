"""Swin blocks and stages, shared by V1 and V2."""
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp

from .. import cpu_fast_path
from .attention import WindowAttention
from .mlp import Mlp
from .patch import PatchMerging
from .windows import (
    gather_tokens,
    num_windows,
    shift_window_mask,
    window_position_index,
    window_token_index,
)

Branch = Callable[[torch.Tensor], torch.Tensor]


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


class SwinBlock(nn.Module):
    """One (shifted-)window attention block plus MLP.

    V1 (pre-norm): ``x + dp(attn(norm1(x)))``, then ``x + dp(mlp(norm2(x)))``.
    V2 (``post_norm=True``, res-post-norm as in the official code):
    ``x + dp(norm1(attn(x)))``, then ``x + dp(norm2(mlp(x)))``.

    The attention branch pads the map with zeros to whole windows (bottom
    and right, as the official detection code), rolls it by
    ``-shift_size`` when shifted, attends inside each window (the shifted
    windows that wrap around the edge masked by :func:`shift_window_mask`),
    then reverses each step; each of those layouts is one gather of tokens
    (:mod:`.windows`).

    Args:
        dim: Channels C.
        num_heads: Attention heads.
        window_size: Window side ws.
        shift_size: Cyclic shift (0 or ws // 2).
        mlp_ratio: Hidden width of the MLP relative to C.
        qkv_bias: Biases on q, k, v.
        qk_scale: V1: attention scale (None: ``head_dim ** -0.5``).
        drop: Dropout after the attention projection and in the MLP.
        attn_drop: Dropout on attention weights.
        drop_path: Stochastic depth probability of this block.
        post_norm: SwinV2 res-post-norm (and cosine attention).
        pretrained_window_size: V2: window used in pretraining.
        attn_impl: ``'sdpa'`` or ``'math'``.

    Shape:
        - x: ``(B, H, W, C)``.
        - output: ``(B, H, W, C)``.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int = 7,
                 shift_size: int = 0, mlp_ratio: float = 4.,
                 qkv_bias: bool = True, qk_scale: Optional[float] = None,
                 drop: float = 0., attn_drop: float = 0.,
                 drop_path: float = 0., post_norm: bool = False,
                 pretrained_window_size: int = 0,
                 attn_impl: str = 'sdpa') -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.post_norm = post_norm
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(
            dim, window_size, num_heads, qkv_bias=qkv_bias,
            qk_scale=qk_scale, attn_drop=attn_drop, proj_drop=drop,
            cosine=post_norm, pretrained_window_size=pretrained_window_size,
            attn_impl=attn_impl)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(x, self.window_attention, self.mlp,
                             self.drop_path)

    def residual(self, x: torch.Tensor, attention: Branch, mlp: Branch,
                 drop_path: Branch) -> torch.Tensor:
        """The block's formula around its branches; the CPU fast path calls
        it with branches that work on its own token order."""
        if self.post_norm:
            x = x + drop_path(self.norm1(attention(x)))
            return x + drop_path(self.norm2(mlp(x)))
        x = x + drop_path(attention(self.norm1(x)))
        return x + drop_path(mlp(self.norm2(x)))

    def window_attention(self, x: torch.Tensor) -> torch.Tensor:
        """(Shifted-)window attention of a ``(B, H, W, C)`` map."""
        batch, height, width, channels = x.shape
        ws, shift = self.window_size, self.shift_size
        count = num_windows(height, ws) * num_windows(width, ws)
        # Pad, roll and partition in one gather (see .windows).
        tokens = window_token_index(height, width, ws, shift, x.device)
        windows = gather_tokens(x, tokens).view(batch * count, ws * ws,
                                                channels)
        mask = None
        if shift:
            mask = shift_window_mask(height, width, ws, shift, x.device,
                                     x.dtype)
        windows = self.attn(windows, mask).view(batch, count * ws * ws,
                                                channels)
        # Reverse, roll back and crop: the map's tokens from the windows.
        position = window_position_index(height, width, ws, shift, x.device)
        return windows.index_select(1, position).view(batch, height, width,
                                                      channels)


class SwinStage(nn.Module):
    """A stage: ``depth`` blocks alternating plain and shifted windows, then
    an optional patch merging (official layout: ``downsample`` at the end).

    On CPU in eager mode the blocks run through
    :mod:`mmswin.models.cpu_fast_path` (same parameters, same arithmetic,
    tokens kept in window order) unless ``cpu_fast_path=False``; under
    tracing, ``torch.compile`` and export, and on other devices, they run
    as written here.

    Args:
        dim: Channels C.
        depth: Number of blocks.
        num_heads: Attention heads.
        window_size: Window side ws.
        drop_path: One probability per block, or one for all.
        downsample: Append a :class:`PatchMerging`.
        with_cp: Gradient checkpointing per block (saves activation memory).
        extra_norm_every: V2 huge/giant: a LayerNorm after every k-th block.
        cpu_fast_path: Allow the CPU fast path.
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
                 extra_norm_every: int = 0, cpu_fast_path: bool = True,
                 **block_kwargs) -> None:
        super().__init__()
        if isinstance(drop_path, (int, float)):
            drop_path = [float(drop_path)] * depth
        self.window_size = window_size
        self.with_cp = with_cp
        self.extra_norm_every = extra_norm_every
        self.cpu_fast_path = cpu_fast_path
        self.blocks = nn.ModuleList([
            SwinBlock(dim, num_heads, window_size,
                      shift_size=0 if i % 2 == 0 else window_size // 2,
                      drop_path=drop_path[i], **block_kwargs)
            for i in range(depth)
        ])
        if extra_norm_every and depth >= extra_norm_every:
            self.extra_norms = nn.ModuleList([
                nn.LayerNorm(dim) for _ in range(depth // extra_norm_every)])
        norm_after = block_kwargs.get('post_norm', False)
        self.downsample = PatchMerging(dim, norm_after) if downsample else None

    def extra_norm(self, block_index: int, x: torch.Tensor) -> torch.Tensor:
        """V2 huge/giant: the LayerNorm after block ``block_index``, if any
        (per token, so any token order works)."""
        every = self.extra_norm_every
        if every and (block_index + 1) % every == 0:
            return self.extra_norms[(block_index + 1) // every - 1](x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cpu_fast_path and cpu_fast_path.applies(x):
            return cpu_fast_path.run_stage(self, x)
        for i, block in enumerate(self.blocks):
            if self.with_cp and x.requires_grad:
                x = cp.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
            x = self.extra_norm(i, x)
        return x
