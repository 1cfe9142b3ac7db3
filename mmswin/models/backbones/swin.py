"""Swin Transformer (V1) backbone for dense prediction."""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from torch.nn.modules.batchnorm import _BatchNorm

from ...registry import MODELS
from ..layers import PatchEmbed, SwinStage
from ..layers.attention import ATTN_IMPLS
from .validation import check_arch, check_choice, check_input, check_range

ArchSpec = Union[str, Dict[str, Sequence[int]]]

# Swin paper, Table 7: C, blocks per stage, heads per stage.
ARCH_SETTINGS: Dict[str, Dict] = {
    'tiny': dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    'small': dict(embed_dims=96, depths=(2, 2, 18, 2),
                  num_heads=(3, 6, 12, 24)),
    'base': dict(embed_dims=128, depths=(2, 2, 18, 2),
                 num_heads=(4, 8, 16, 32)),
    'large': dict(embed_dims=192, depths=(2, 2, 18, 2),
                  num_heads=(6, 12, 24, 48)),
}


@MODELS.register_module()
class SwinTransformer(BaseModule):
    """Swin Transformer backbone emitting 4-stage hierarchical features.

    Accepts every argument of mmdet's and mmseg's ``SwinTransformer`` so an
    existing config switches by changing ``type`` alone, and names its
    parameters as the official Microsoft code does (``patch_embed.proj``,
    ``layers.{i}.blocks.{j}.attn.qkv``, ``layers.{i}.downsample``,
    ``norm{i}``), so official checkpoints load without renaming.

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
        arch: ``'tiny'``, ``'small'``, ``'base'``, ``'large'`` or a dict with
            ``embed_dims``, ``depths`` and ``num_heads``.
        pretrain_img_size: Image size of the pretraining; sets the grid of
            the absolute position embedding.
        in_channels: Input image channels.
        embed_dims, depths, num_heads: Override the ``arch`` values (mmdet
            configs state them this way).
        patch_size: Side of the patch embedding.
        window_size: Attention window side, one for all stages or one each.
        mlp_ratio: MLP hidden width relative to C.
        strides: mmdet compatibility; must be ``(patch_size, 2, 2, 2)``.
        out_indices: Stages to output, each passed through ``norm{i}``.
        qkv_bias: Biases on q, k, v.
        qk_scale: Attention scale; None means ``head_dim ** -0.5``.
        patch_norm: LayerNorm after the patch embedding.
        drop_rate: Dropout after the position embedding and in the blocks.
        attn_drop_rate: Dropout on attention weights.
        drop_path_rate: Stochastic depth, rising linearly over all blocks.
        use_abs_pos_embed: Learned absolute position embedding, resized
            (bicubic) to each input's grid.
        act_cfg, norm_cfg: mmdet compatibility; only GELU and LN exist.
        with_cp: Gradient checkpointing per block.
        frozen_stages: See above.
        norm_eval: Keep norm layers in eval mode during training.
        attn_impl: ``'sdpa'`` (fused scaled_dot_product_attention) or
            ``'math'`` (explicit softmax, for checking).
        check_finite: Raise on NaN/Inf inputs (off by default: it syncs).
        convert_weights, pretrained: mmdet compatibility; checkpoints are
            always converted on load, ``pretrained=PATH`` is a shorthand for
            ``init_cfg=dict(type='Pretrained', checkpoint=PATH)``.
        init_cfg: mmengine init config; ``type='Pretrained'`` goes through
            mmswin's loader, which detects the checkpoint's layout.

    Shape:
        - x: ``(B, in_channels, H, W)``.
        - output: tuple of ``(B, C * 2**i, H_i, W_i)`` for i in
          ``out_indices``, with ``H_0 = ceil(H / patch_size)`` and
          ``H_{i+1} = ceil(H_i / 2)``.
    """

    arch_settings = ARCH_SETTINGS
    version = 1

    def __init__(self,
                 arch: ArchSpec = 'tiny',
                 pretrain_img_size: Union[int, Tuple[int, int]] = 224,
                 in_channels: int = 3,
                 embed_dims: Optional[int] = None,
                 depths: Optional[Sequence[int]] = None,
                 num_heads: Optional[Sequence[int]] = None,
                 patch_size: int = 4,
                 window_size: Union[int, Sequence[int]] = 7,
                 mlp_ratio: float = 4.,
                 strides: Optional[Sequence[int]] = None,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 qkv_bias: bool = True,
                 qk_scale: Optional[float] = None,
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
                 check_finite: bool = False,
                 convert_weights: bool = True,
                 pretrained: Optional[str] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None,
                 **stage_kwargs) -> None:
        if pretrained is not None:
            if init_cfg is not None:
                raise ValueError('pass either pretrained or init_cfg, not both')
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        super().__init__(init_cfg=init_cfg)
        arch = check_arch(arch, self.arch_settings, embed_dims, depths,
                          num_heads)
        self.embed_dims = arch['embed_dims']
        self.depths = tuple(arch['depths'])
        self.num_heads = tuple(arch['num_heads'])
        num_stages = len(self.depths)
        self.window_sizes = self._per_stage('window_size', window_size,
                                            num_stages)
        self._check_args(patch_size, strides, in_channels, mlp_ratio,
                         act_cfg, norm_cfg, attn_impl, drop_rate,
                         attn_drop_rate, drop_path_rate, qk_scale)
        self.out_indices = tuple(
            check_range('out_indices', i, 0, num_stages - 1)
            for i in out_indices)
        if not self.out_indices:
            raise ValueError('out_indices must name at least one stage')
        self.frozen_stages = check_range('frozen_stages', frozen_stages, -1,
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
            size = pretrain_img_size
            size = (size, size) if isinstance(size, int) else tuple(size)
            grid = [-(-s // patch_size) for s in size]
            self.absolute_pos_embed = nn.Parameter(
                torch.zeros(1, self.embed_dims, *grid))
        self.pos_drop = nn.Dropout(drop_rate)

        rates = torch.linspace(0, drop_path_rate, sum(self.depths)).tolist()
        self.layers = nn.ModuleList()
        for i, depth in enumerate(self.depths):
            start = sum(self.depths[:i])
            self.layers.append(SwinStage(
                self.num_features[i], depth, self.num_heads[i],
                window_size=self.window_sizes[i],
                drop_path=rates[start:start + depth],
                downsample=i < num_stages - 1, with_cp=with_cp,
                mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop_rate,
                attn_drop=attn_drop_rate, attn_impl=attn_impl,
                **self._stage_options(i), **stage_kwargs))
            if qk_scale is not None:
                for block in self.layers[-1].blocks:
                    block.attn.scale = qk_scale
        for i in self.out_indices:
            self.add_module(f'norm{i}', nn.LayerNorm(self.num_features[i]))
        self._freeze()

    # -- construction helpers -------------------------------------------------
    def _stage_options(self, stage: int) -> dict:
        """Version-specific options of stage ``stage`` (V2 overrides)."""
        return {}

    def _per_stage(self, name: str, value, num_stages: int) -> Tuple[int]:
        values = (value, ) * num_stages if isinstance(value, int) else tuple(
            value)
        if len(values) != num_stages:
            raise ValueError(f'{name} must be an int or one value per stage '
                             f'({num_stages}), got {value!r}')
        return values

    def _check_args(self, patch_size, strides, in_channels, mlp_ratio,
                    act_cfg, norm_cfg, attn_impl, drop_rate, attn_drop_rate,
                    drop_path_rate, qk_scale) -> None:
        for ws in self.window_sizes:
            if not isinstance(ws, int) or ws < 1:
                raise ValueError('window_size must be a positive int (or one '
                                 f'per stage), got {self.window_sizes!r}')
        for name, value in (('patch_size', patch_size),
                            ('in_channels', in_channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f'{name} must be a positive int, got {value!r}')
        if strides is not None and tuple(strides) != (patch_size, 2, 2, 2)[
                :len(self.depths)]:
            raise ValueError(f'strides must be (patch_size, 2, 2, 2) = '
                             f'({patch_size}, 2, 2, 2), got {tuple(strides)}; '
                             'Swin downsamples by patch merging only')
        if mlp_ratio <= 0:
            raise ValueError(f'mlp_ratio must be > 0, got {mlp_ratio!r}')
        for name, rate in (('drop_rate', drop_rate),
                           ('attn_drop_rate', attn_drop_rate),
                           ('drop_path_rate', drop_path_rate)):
            if not 0 <= rate < 1:
                raise ValueError(f'{name} must be in [0, 1), got {rate!r}')
        if qk_scale is not None and qk_scale <= 0:
            raise ValueError(f'qk_scale must be > 0 or None, got {qk_scale!r}')
        check_choice('attn_impl', attn_impl, ATTN_IMPLS)
        if act_cfg is not None:
            check_choice("act_cfg['type']", act_cfg.get('type'), ('GELU', ))
        if norm_cfg is not None:
            check_choice("norm_cfg['type']", norm_cfg.get('type'), ('LN', ))

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

    def train(self, mode: bool = True) -> 'SwinTransformer':
        """Set train mode, keeping frozen parts and (``norm_eval``) norms in
        eval mode. Returns ``self`` so ``model.eval()`` chains."""
        super().train(mode)
        for module in self._frozen_modules():
            module.eval()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, (nn.LayerNorm, _BatchNorm, nn.GroupNorm)):
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
        pos = self.absolute_pos_embed
        if pos.shape[2:] != (height, width):
            pos = F.interpolate(pos, size=(height, width), mode='bicubic',
                                align_corners=False)
        return pos.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        check_input(x, self.in_channels, self.check_finite)
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


def _init_module(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
