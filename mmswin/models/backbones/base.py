"""The body shared by the Swin V1 and V2 backbones.

:class:`SwinBackbone` holds everything the two versions have in common: the
arguments, their checks, the patch embedding, the stages, the output norms,
freezing, weight init and the forward pass. What sets the versions apart
inside the layers is one :class:`LayerVariant`, which
:class:`~.swin.SwinTransformer` and :class:`~.swin_v2.SwinTransformerV2`
build from their own arguments; users never pass it.
"""
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from torch.nn.modules.batchnorm import _BatchNorm

from ...checkpoint import install_layout_hook
from ..layers import PatchEmbed, SwinStage
from .validation import (
    check_arch,
    check_bool,
    check_cfg,
    check_float,
    check_indices,
    check_init_cfg,
    check_input,
    check_int,
    check_per_stage,
    check_size,
    check_strides,
)

ArchSpec = Union[str, Dict[str, Sequence[int]]]
PerStage = Union[int, Sequence[int]]

TRACING_MESSAGE = (
    'Swin backbones do not support torch.jit.trace nor the legacy TorchScript '
    'ONNX exporter (torch.onnx.export(..., dynamo=False)): tracing would '
    'freeze the padding and the shift mask at the traced input size, so '
    'other sizes would silently give wrong outputs. Export with '
    'torch.onnx.export(..., dynamo=True) or torch.export.export instead.')
COMPILE_FINITE_MESSAGE = (
    'check_finite=True cannot run under torch.compile or torch.export: the '
    'NaN/Inf check depends on the input values, which a compiled or exported '
    'graph does not see. Build the backbone with check_finite=False for '
    'compiling or exporting (and check inputs before the model).')


class LayerVariant(NamedTuple):
    """What V1 and V2 do differently inside the shared layers.

    Attributes:
        post_norm: SwinV2's res-post-norm blocks, scaled cosine attention
            with a continuous position bias, and reduce-then-norm merging.
        qk_scale: V1's attention scale (None: ``head_dim ** -0.5``).
        pretrained_window_sizes: V2's pretraining window per stage (or one
            for all; 0: the stage's own window).
    """
    post_norm: bool
    qk_scale: Optional[float] = None
    pretrained_window_sizes: PerStage = 0


class SwinBackbone(BaseModule):
    """Swin Transformer backbone emitting hierarchical features, one map per
    stage, shared by :class:`~.swin.SwinTransformer` (V1) and
    :class:`~.swin_v2.SwinTransformerV2` (V2); build one of those.

    Accepts every argument of mmdet's and mmseg's ``SwinTransformer`` (any
    number of stages, as mmdet's), so an existing config switches by changing
    ``type`` alone, and names its parameters as the official Microsoft code
    does (``patch_embed.proj``, ``layers.{i}.blocks.{j}.attn.qkv``,
    ``layers.{i}.downsample``, ``norm{i}``), so official checkpoints load
    without renaming. Every argument either does what is documented here or
    is refused with a TypeError/ValueError that names it.

    Any input size works: sides that are not multiples of the patch size,
    of the window, or odd before patch merging are zero-padded at the
    bottom/right as in the official detection code.

    ``frozen_stages`` (one convention, kept through ``train()``):
    ``-1`` freezes nothing; ``0`` the patch embedding (and the absolute
    position embedding); ``k >= 1`` additionally stages ``0..k-1`` with
    their patch merging and their output norms. Frozen parameters get
    ``requires_grad=False``, so DDP with ``find_unused_parameters=False``
    works. Stages after the last of ``out_indices`` are not computed and are
    frozen the same way.

    Args:
        arch: A preset name of the subclass's ``arch_settings`` or a dict
            with ``embed_dims``, ``depths`` and ``num_heads`` (one entry per
            stage, any number of stages; V2 also ``extra_norm_every``).
        variant: Set by the subclass from its own arguments.
        pretrain_img_size: Image size of the pretraining, an int or a
            ``(size,)`` or ``(height, width)`` sequence; sets the grid of the
            absolute position embedding.
        in_channels: Input image channels.
        embed_dims, depths, num_heads: Override the ``arch`` values (mmdet
            configs state them this way).
        patch_size: Side of the patch embedding.
        window_size: Attention window side, one for all stages or one each.
        mlp_ratio: MLP hidden width relative to C.
        strides: mmdet compatibility: ``(patch_size, 2, ..., 2)`` with one
            entry per stage, or None. Other strides are refused (Swin
            downsamples by 2x2 patch merging only).
        out_indices: Stages to output, each passed through ``norm{i}``.
        qkv_bias: Biases on q, k, v (V2: on q and v).
        patch_norm: LayerNorm after the patch embedding.
        drop_rate: Dropout after the position embedding and in the blocks.
        attn_drop_rate: Dropout on attention weights.
        drop_path_rate: Stochastic depth, rising linearly over all blocks.
        use_abs_pos_embed: Learned absolute position embedding, resized
            (bicubic) to each input's grid.
        act_cfg, norm_cfg: mmdet compatibility: None, ``dict(type='GELU')``
            and ``dict(type='LN')`` (mmseg's ``requires_grad=True`` too), the
            only layers Swin has; anything else is refused.
        with_cp: Gradient checkpointing per block.
        frozen_stages: See above.
        norm_eval: Keep norm layers in eval mode during training.
        attn_impl: ``'sdpa'`` (fused scaled_dot_product_attention) or
            ``'math'`` (explicit softmax, for checking).
        cpu_fast_path: CPU eager speed-ups
            (:mod:`mmswin.models.cpu_fast_path`); ignored under
            ``torch.compile``/export and on other devices; outputs equal the
            plain path within fp32 rounding.
        check_finite: Raise on NaN/Inf inputs (off by default: it syncs).
            A check on the values cannot be in a graph: ``forward`` raises
            under ``torch.export`` and ``torch.compile(fullgraph=True)``.
        convert_weights: mmdet compatibility; either value gives the same
            result, because mmswin detects a checkpoint's layout and converts
            it on every load.
        pretrained: A checkpoint path or URL; shorthand for
            ``init_cfg=dict(type='Pretrained', checkpoint=pretrained)``.
        init_cfg: mmengine init config; ``type='Pretrained'`` goes through
            mmswin's loader, which detects the checkpoint's layout.

    Shape:
        - x: ``(B, in_channels, H, W)``.
        - output: tuple of ``(B, C * 2**i, H_i, W_i)`` for i in
          ``out_indices``, with ``H_0 = ceil(H / patch_size)`` and
          ``H_{i+1} = ceil(H_i / 2)``.

    Raises:
        TypeError: an argument or the input has the wrong type (including
            an unknown keyword argument, and an input whose dtype differs
            from the weights' outside autocast).
        ValueError: an argument or the input has a wrong value (shape,
            range, NaN/Inf with ``check_finite``). Messages start with the
            argument's name (``input`` for the input) and say what is
            allowed.
        RuntimeError: ``forward`` under ``torch.jit.trace`` (or the legacy
            ONNX exporter), or with ``check_finite`` under export.
    """

    arch_settings: Dict[str, Dict] = {}  # the subclass's presets
    version: int = 0  # 1 or 2, set by the subclass (the loader reads it)

    def __init__(self,
                 arch: ArchSpec,
                 variant: LayerVariant,
                 pretrain_img_size: Union[int, Sequence[int]] = 224,
                 in_channels: int = 3,
                 embed_dims: Optional[int] = None,
                 depths: Optional[Sequence[int]] = None,
                 num_heads: Optional[Sequence[int]] = None,
                 patch_size: int = 4,
                 window_size: PerStage = 7,
                 mlp_ratio: float = 4.,
                 strides: Optional[Sequence[int]] = None,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 qkv_bias: bool = True,
                 patch_norm: bool = True,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.1,
                 use_abs_pos_embed: bool = False,
                 act_cfg: Optional[dict] = None,
                 norm_cfg: Optional[dict] = None,
                 with_cp: bool = False,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 attn_impl: str = 'sdpa',
                 cpu_fast_path: bool = True,
                 check_finite: bool = False,
                 convert_weights: bool = True,
                 pretrained: Optional[str] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=check_init_cfg(pretrained, init_cfg))
        arch = check_arch(arch, self.arch_settings, embed_dims, depths,
                          num_heads)
        self.embed_dims = arch['embed_dims']
        self.depths = arch['depths']
        self.num_heads = arch['num_heads']
        num_stages = len(self.depths)
        self.window_sizes = check_per_stage('window_size', window_size,
                                            num_stages)
        check_int('patch_size', patch_size, 1)
        check_int('in_channels', in_channels, 1)
        check_strides(strides, patch_size, num_stages)
        self._check_rates(mlp_ratio, drop_rate, attn_drop_rate,
                          drop_path_rate)
        check_cfg('act_cfg', act_cfg, dict(type='GELU'))
        check_cfg('norm_cfg', norm_cfg, dict(type='LN'), requires_grad=True)
        for name, flag in (('qkv_bias', qkv_bias), ('patch_norm', patch_norm),
                           ('use_abs_pos_embed', use_abs_pos_embed),
                           ('with_cp', with_cp), ('norm_eval', norm_eval),
                           ('cpu_fast_path', cpu_fast_path),
                           ('check_finite', check_finite),
                           ('convert_weights', convert_weights)):
            check_bool(name, flag)
        pretrain_img_size = check_size('pretrain_img_size', pretrain_img_size)
        block_options = _block_options(variant, num_stages)
        self.out_indices = check_indices('out_indices', out_indices,
                                         num_stages)
        self.frozen_stages = check_int('frozen_stages', frozen_stages, -1,
                                       num_stages)
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.norm_eval = norm_eval
        self.check_finite = check_finite
        self.convert_weights = convert_weights
        self.num_features = [self.embed_dims * 2**i for i in range(num_stages)]

        self.patch_embed = PatchEmbed(in_channels, self.embed_dims,
                                      patch_size, patch_norm)
        self.use_abs_pos_embed = use_abs_pos_embed
        if use_abs_pos_embed:
            grid = [-(-s // patch_size) for s in pretrain_img_size]
            self.absolute_pos_embed = nn.Parameter(
                torch.zeros(1, self.embed_dims, *grid))
        self.pos_drop = nn.Dropout(drop_rate)

        # On the CPU explicitly: under `with torch.device('meta')` a meta
        # tensor has no values to read back.
        rates = torch.linspace(0, drop_path_rate, sum(self.depths),
                               device='cpu').tolist()
        self.layers = nn.ModuleList()
        for i, depth in enumerate(self.depths):
            start = sum(self.depths[:i])
            self.layers.append(SwinStage(
                self.num_features[i], depth, self.num_heads[i],
                window_size=self.window_sizes[i],
                drop_path=rates[start:start + depth],
                downsample=i < num_stages - 1, with_cp=with_cp,
                extra_norm_every=arch['extra_norm_every'],
                cpu_fast_path=cpu_fast_path, mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias, drop=drop_rate, attn_drop=attn_drop_rate,
                attn_impl=attn_impl, **block_options[i]))
        for i in self.out_indices:
            self.add_module(f'norm{i}', nn.LayerNorm(self.num_features[i]))
        self._freeze()
        # Any state dict loaded into the backbone (load_from, tools/test.py)
        # converts foreign Swin layouts on the way in.
        install_layout_hook(self)

    def _check_rates(self, mlp_ratio: float, drop_rate: float,
                     attn_drop_rate: float, drop_path_rate: float) -> None:
        check_float('mlp_ratio', mlp_ratio, 0, low_inclusive=False)
        if int(self.embed_dims * mlp_ratio) < 1:
            raise ValueError(f'mlp_ratio={mlp_ratio!r} leaves no hidden '
                             f'units at embed_dims={self.embed_dims}; it must '
                             f'be >= 1 / {self.embed_dims}')
        for name, rate in (('drop_rate', drop_rate),
                           ('attn_drop_rate', attn_drop_rate),
                           ('drop_path_rate', drop_path_rate)):
            check_float(name, rate, 0, 1)

    # -- freezing ------------------------------------------------------------
    def _frozen_modules(self) -> List[nn.Module]:
        last = max(self.out_indices)
        mods: List[nn.Module] = []
        if self.frozen_stages >= 0:
            mods.append(self.patch_embed)
        for i, stage in enumerate(self.layers):
            if i < self.frozen_stages:
                mods.append(stage)
                if i in self.out_indices:
                    mods.append(getattr(self, f'norm{i}'))
            elif i > last:
                mods.append(stage)  # never computed
            elif i == last and stage.downsample is not None:
                mods.append(stage.downsample)  # its output is never used
        return mods

    def _freeze(self) -> None:
        if self.use_abs_pos_embed and self.frozen_stages >= 0:
            self.absolute_pos_embed.requires_grad_(False)
        for module in self._frozen_modules():
            module.eval()
            module.requires_grad_(False)

    def train(self, mode: bool = True) -> 'SwinBackbone':
        """Set train mode, keeping frozen parts and (``norm_eval``) norms in
        eval mode. Returns ``self`` so ``model.eval()`` chains."""
        super().train(mode)
        for module in self._frozen_modules():
            module.eval()
        if mode and self.norm_eval:
            norms = (nn.LayerNorm, _BatchNorm, nn.GroupNorm)
            for module in self.modules():
                if isinstance(module, norms):
                    module.eval()
        return self

    # -- weights -------------------------------------------------------------
    def init_weights(self) -> None:
        """Truncated-normal init, or load ``init_cfg``'s checkpoint through
        mmswin's layout-detecting loader."""
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            from ...checkpoint import load_pretrained
            load_pretrained(self, cfg['checkpoint'],
                            prefix=cfg.get('prefix'),
                            map_location=cfg.get('map_location', 'cpu'))
            self._is_init = True
            return
        if cfg is not None:
            super().init_weights()
            return
        self.apply(_init_module)
        if self.use_abs_pos_embed:
            trunc_normal_(self.absolute_pos_embed, std=.02)
        for name, param in self.named_parameters():
            if name.endswith('relative_position_bias_table'):
                trunc_normal_(param, std=.02)
        self._is_init = True

    # -- forward -------------------------------------------------------------
    def _abs_pos_embed(self, height: int, width: int) -> torch.Tensor:
        """The position embedding resized to the ``(height, width)`` grid,
        ``(1, height, width, C)``. Always resampled: at the pretraining grid
        bicubic resampling returns the table unchanged, and a branch on the
        size would specialise a compiled or exported graph to one size."""
        pos = F.interpolate(self.absolute_pos_embed, size=(height, width),
                            mode='bicubic', align_corners=False)
        return pos.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """The ``out_indices`` feature maps of ``x`` (see the class Shape).
        """
        if torch.jit.is_tracing():
            raise RuntimeError(TRACING_MESSAGE)
        if self.check_finite and torch.compiler.is_compiling():
            raise RuntimeError(COMPILE_FINITE_MESSAGE)
        check_input(x, self.in_channels, self.check_finite,
                    self.patch_embed.proj.weight.dtype)
        x = self.patch_embed(x)  # (B, H, W, C)
        if self.use_abs_pos_embed:
            x = x + self._abs_pos_embed(x.shape[1], x.shape[2])
        x = self.pos_drop(x)
        outs = []
        last = max(self.out_indices)
        for i, stage in enumerate(self.layers[:last + 1]):
            x = stage(x)
            if i in self.out_indices:
                out = getattr(self, f'norm{i}')(x)
                outs.append(out.permute(0, 3, 1, 2).contiguous())
            if i < last:
                x = stage.downsample(x)
        return tuple(outs)


def _block_options(variant: LayerVariant, num_stages: int) -> List[dict]:
    """The SwinBlock options of each stage that ``variant`` sets."""
    if variant.qk_scale is not None:
        check_float('qk_scale', variant.qk_scale, 0, low_inclusive=False)
    pretrained = check_per_stage('pretrained_window_sizes',
                                 variant.pretrained_window_sizes, num_stages,
                                 low=0)
    return [dict(post_norm=variant.post_norm, qk_scale=variant.qk_scale,
                 pretrained_window_size=window) for window in pretrained]


def _init_module(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
