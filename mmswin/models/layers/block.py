"""Swin blocks and stages, shared by V1 and V2."""
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp

from .attention import WindowAttention
from .mlp import Mlp, chunk_rows
from .patch import PatchMerging
from .windows import (
    TokenLayout,
    WindowRun,
    change_layout,
    enter_layout,
    leave_layout,
    token_layout,
)


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample.

    Shape: any ``(B, ...)`` in, same out; or, with ``row_sample``, rows
    ``(R, C)`` of several samples, row ``r`` belonging to sample
    ``row_sample[r]`` (``num_samples`` of them).
    """

    def __init__(self, drop_prob: float = 0.) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob}'

    def forward(self, x: torch.Tensor,
                row_sample: Optional[torch.Tensor] = None,
                num_samples: int = 0) -> torch.Tensor:
        if self.drop_prob == 0. or not self.training:
            return x
        keep = 1 - self.drop_prob
        if row_sample is None:
            shape = (x.shape[0], ) + (1, ) * (x.ndim - 1)
            return x * x.new_empty(shape).bernoulli_(keep).div_(keep)
        scale = x.new_empty(num_samples).bernoulli_(keep).div_(keep)
        return x * scale[row_sample][:, None]


class SwinBlock(nn.Module):
    """One (shifted-)window attention block plus MLP.

    V1 (pre-norm): ``x + dp(attn(norm1(x)))``, then ``x + dp(mlp(norm2(x)))``.
    V2 (``post_norm=True``, res-post-norm as in the official code):
    ``x + dp(norm1(attn(x)))``, then ``x + dp(norm2(mlp(x)))``.

    The block works on a stage's token rows in the :class:`TokenLayout` of
    its shift (see :mod:`.windows`): the real tokens only, the attention
    reading the padding as the official zeros, so there is no pad, crop,
    roll or partition per block and no work on padded tokens outside
    attention.
    Without autograd (``torch.no_grad``/``inference_mode``), in eval mode
    and on CPU, it processes the windows in cache-sized pieces; the
    arithmetic per token is the same.

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
        - x: ``(R, C)`` rows in ``layout``, ``R = B * H * W``.
        - layout: a :class:`TokenLayout` with this block's window and shift.
        - output: ``(R, C)`` in the same layout.
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

    def forward(self, x: torch.Tensor, layout: TokenLayout,
                out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The block on rows ``x`` in ``layout``; without autograd the
        result may be written to ``out``, which may be ``x`` itself (each
        piece of rows is read before it is overwritten)."""
        if (layout.window_size, layout.shift_size) != (self.window_size,
                                                      self.shift_size):
            raise ValueError(
                f'layout has window {layout.window_size} and shift '
                f'{layout.shift_size}, this block {self.window_size} and '
                f'{self.shift_size}; build it with token_layout(..., '
                f'{self.window_size}, {self.shift_size}, device)')
        if torch.is_grad_enabled():
            return self._forward_windows(x, layout.windows, layout.batch)
        if self.training or x.device.type != 'cpu':
            return self._forward_windows(x, layout.windows, layout.batch,
                                         out=out)
        if out is None:
            out = torch.empty_like(x)
        bias = self.attn.position_bias()
        rows = chunk_rows(self.mlp.fc1.out_features)
        for first, stop, run in layout.chunks(rows):
            self._forward_windows(x[first:stop], run, layout.batch, bias,
                                  out=out[first:stop])
        return out

    def _forward_windows(self, x: torch.Tensor, windows: WindowRun,
                         batch: int,
                         position_bias: Optional[torch.Tensor] = None,
                         out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The block on the rows ``x`` of the run ``windows`` (written to
        ``out`` when given)."""

        def drop_path(y: torch.Tensor) -> torch.Tensor:
            return self.drop_path(y, windows.row_image, batch)

        def attn(y: torch.Tensor) -> torch.Tensor:
            return self.attn(y, windows=windows, position_bias=position_bias)

        if self.post_norm:
            x = x + drop_path(self.norm1(attn(x)))
            y = drop_path(self.norm2(self.mlp(x)))
        else:
            x = x + drop_path(attn(self.norm1(x)))
            y = drop_path(self.mlp(self.norm2(x)))
        return x + y if out is None else torch.add(x, y, out=out)


class SwinStage(nn.Module):
    """A stage: ``depth`` blocks alternating plain and shifted windows, then
    an optional patch merging (official layout: ``downsample`` at the end).

    The map enters the stage's window layout once (one gather), each
    change between plain and shifted windows is one gather, and the map
    leaves once.

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
        if extra_norm_every and depth >= extra_norm_every:
            self.extra_norms = nn.ModuleList([
                nn.LayerNorm(dim) for _ in range(depth // extra_norm_every)])
        norm_after = block_kwargs.get('post_norm', False)
        self.downsample = PatchMerging(dim, norm_after) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, _ = x.shape
        layouts = {
            shift: token_layout(batch, height, width, self.window_size,
                                shift, x.device)
            for shift in sorted({block.shift_size for block in self.blocks})
        }
        layout = layouts[0] if 0 in layouts else next(iter(layouts.values()))
        x = enter_layout(x, layout)
        # Without autograd the rows live in two buffers of the stage's own:
        # each block overwrites its input, each change of layout gathers
        # into the other buffer (fresh maps over 32 MB are page-faulted
        # anew by every op: 1600x2688 took 4.4x the time of 800x1344).
        in_place = not torch.is_grad_enabled()
        spare = None
        for i, block in enumerate(self.blocks):
            target = layouts[block.shift_size]
            if in_place and target is not layout:
                spare = torch.empty_like(x) if spare is None else spare
                x, spare = change_layout(x, layout, target, out=spare), x
            else:
                x = change_layout(x, layout, target)
            layout = target
            if in_place:
                x = block(x, layout, out=x)
            elif self.with_cp and x.requires_grad:
                x = cp.checkpoint(block, x, layout, use_reentrant=False)
            else:
                x = block(x, layout)
            if self.extra_norm_every and (i + 1) % self.extra_norm_every == 0:
                x = self.extra_norms[(i + 1) // self.extra_norm_every - 1](x)
        return leave_layout(x, layout)
