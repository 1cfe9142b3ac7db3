"""Swin Transformer (V1) backbone for dense prediction."""
import inspect
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from torch.nn.modules.batchnorm import _BatchNorm

from ...checkpoint import install_layout_hook
from ...registry import MODELS
from ..layers import PatchEmbed, SwinBlock, SwinStage
from ..layers.attention import ATTN_IMPLS
from .validation import (
    check_arch,
    check_bool,
    check_cfg_type,
    check_choice,
    check_float,
    check_indices,
    check_input,
    check_int,
    check_kwargs,
    check_pair,
    check_per_stage,
)

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

    Raises:
        TypeError: an argument or the input has the wrong type (including
            an unknown keyword argument, and an input whose dtype differs
            from the weights' outside autocast).
        ValueError: an argument or the input has a wrong value (shape,
            range, NaN/Inf with ``check_finite``). Messages start with the
            argument's name (``input`` for the input) and say what is
            allowed.
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
        init_cfg = self._check_init_cfg(pretrained, init_cfg)
        super().__init__(init_cfg=init_cfg)
        arch = check_arch(arch, self.arch_settings, embed_dims, depths,
                          num_heads)
        self.embed_dims = arch['embed_dims']
        self.depths = tuple(arch['depths'])
        self.num_heads = tuple(arch['num_heads'])
        num_stages = len(self.depths)
        self.window_sizes = check_per_stage('window_size', window_size,
                                            num_stages)
        self._check_args(patch_size, strides, in_channels, mlp_ratio,
                         act_cfg, norm_cfg, attn_impl, drop_rate,
                         attn_drop_rate, drop_path_rate, qk_scale)
        for name, flag in (('qkv_bias', qkv_bias), ('patch_norm', patch_norm),
                           ('use_abs_pos_embed', use_abs_pos_embed),
                           ('with_cp', with_cp), ('norm_eval', norm_eval),
                           ('check_finite', check_finite),
                           ('convert_weights', convert_weights)):
            check_bool(name, flag)
        pretrain_img_size = check_pair('pretrain_img_size', pretrain_img_size)
        check_kwargs(type(self).__name__, stage_kwargs,
                     self._accepted_kwargs())
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
        # Any state dict loaded into the backbone (load_from, tools/test.py)
        # converts foreign Swin layouts on the way in.
        install_layout_hook(self)

    # -- construction helpers -------------------------------------------------
    def _stage_options(self, stage: int) -> dict:
        """Version-specific options of stage ``stage`` (V2 overrides)."""
        return {}

    def _per_stage(self, name: str, value, num_stages: int) -> Tuple[int]:
        """One int >= 0 for all stages or one per stage, as a tuple."""
        return check_per_stage(name, value, num_stages, low=0)

    # Stage and block options that the backbone itself sets.
    _SET_BY_BACKBONE = frozenset((
        'self', 'dim', 'depth', 'num_heads', 'window_size', 'shift_size',
        'drop_path', 'downsample', 'with_cp', 'mlp_ratio', 'qkv_bias', 'drop',
        'attn_drop', 'attn_impl'))

    def _accepted_kwargs(self) -> set:
        """Names this backbone accepts: its signature (and its bases') plus
        the stage/block options it passes on through ``**stage_kwargs``."""
        def names(fns) -> set:
            return {p.name for fn in fns
                    for p in inspect.signature(fn).parameters.values()
                    if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}

        own = names(c.__init__ for c in type(self).__mro__
                    if issubclass(c, SwinTransformer))
        passed_on = names((SwinStage.__init__, SwinBlock.__init__))
        return (own | (passed_on - self._SET_BY_BACKBONE - set(
            self._stage_options(0)))) - {'self'}

    @staticmethod
    def _check_init_cfg(pretrained: Optional[str],
                        init_cfg: Optional[Union[dict, List[dict]]]
                        ) -> Optional[Union[dict, List[dict]]]:
        """Fold ``pretrained`` into ``init_cfg`` and check a Pretrained
        init_cfg names a checkpoint."""
        if pretrained is not None:
            if not isinstance(pretrained, str):
                raise TypeError('pretrained must be a checkpoint path or URL '
                                f'(str) or None, got {pretrained!r}')
            if init_cfg is not None:
                raise ValueError('pass either pretrained or init_cfg, not '
                                 'both')
            return dict(type='Pretrained', checkpoint=pretrained)
        if init_cfg is not None and not isinstance(init_cfg, (dict, list)):
            raise TypeError('init_cfg must be a dict, a list of dicts or None,'
                            f' got {type(init_cfg).__name__} {init_cfg!r}')
        if isinstance(init_cfg, dict) and init_cfg.get(
                'type') == 'Pretrained' and not isinstance(
                    init_cfg.get('checkpoint'), str):
            raise ValueError("init_cfg of type 'Pretrained' needs "
                             "checkpoint=<path or URL>, got "
                             f"{init_cfg.get('checkpoint')!r}")
        return init_cfg

    def _check_args(self, patch_size, strides, in_channels, mlp_ratio,
                    act_cfg, norm_cfg, attn_impl, drop_rate, attn_drop_rate,
                    drop_path_rate, qk_scale) -> None:
        check_int('patch_size', patch_size, 1)
        check_int('in_channels', in_channels, 1)
        expected = (patch_size, 2, 2, 2)[:len(self.depths)]
        if strides is not None and (not isinstance(strides, (
                list, tuple)) or tuple(strides) != expected):
            raise ValueError('strides must be (patch_size, 2, 2, 2) for the '
                             f'stages = {expected} or None, got {strides!r};'
                             ' Swin downsamples by patch merging only')
        check_float('mlp_ratio', mlp_ratio, 0, low_inclusive=False)
        if int(self.embed_dims * mlp_ratio) < 1:
            raise ValueError(f'mlp_ratio={mlp_ratio!r} leaves no hidden '
                             f'units at embed_dims={self.embed_dims}; it must '
                             f'be >= 1 / {self.embed_dims}')
        for name, rate in (('drop_rate', drop_rate),
                           ('attn_drop_rate', attn_drop_rate),
                           ('drop_path_rate', drop_path_rate)):
            check_float(name, rate, 0, 1)
        if qk_scale is not None:
            check_float('qk_scale', qk_scale, 0, low_inclusive=False)
        check_choice('attn_impl', attn_impl, ATTN_IMPLS)
        check_cfg_type('act_cfg', act_cfg, ('GELU', ))
        check_cfg_type('norm_cfg', norm_cfg, ('LN', ))

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
        pos = self.absolute_pos_embed
        if pos.shape[2:] != (height, width):
            pos = F.interpolate(pos, size=(height, width), mode='bicubic',
                                align_corners=False)
        return pos.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
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


def _init_module(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
