"""Swin Transformer V2 backbone for dense prediction.

The same backbone as V1 with SwinV2's options switched on in the shared
layers: scaled cosine attention with a continuous position bias, res-post-norm
blocks, patch merging that reduces before it normalises, and (huge/giant) an
extra LayerNorm every 6 blocks.
"""
from typing import Any, Dict, Optional, Sequence, Union

from ...registry import MODELS
from .base import LayerVariant, PerStage, SwinBackbone
from .swin import ARCH_SETTINGS

_V2_URL = 'https://github.com/SwinTransformer/storage/releases/download/v2.0.0/'

V2_ARCH_SETTINGS: Dict[str, Dict] = dict(
    ARCH_SETTINGS,
    huge=dict(embed_dims=352, depths=(2, 2, 18, 2),
              num_heads=(11, 22, 44, 88), extra_norm_every=6),
    giant=dict(embed_dims=512, depths=(2, 2, 42, 4),
               num_heads=(16, 32, 64, 128), extra_norm_every=6),
)


def _official(arch: str, windows, pretrained=(0, 0, 0, 0), img=256) -> Dict:
    return dict(arch=arch, window_size=tuple(windows),
                pretrained_window_sizes=tuple(pretrained),
                pretrain_img_size=img)


# The official classification code shrinks a window to the stage's size
# when the stage is smaller (and then does not shift), so the windows each
# checkpoint was trained with are listed per stage: a window-16 model at 256
# pixels used window 8 in stage 3 (8x8 tokens). Dense models that reuse such a
# checkpoint set these as ``pretrained_window_sizes``.
OFFICIAL_V2_CHECKPOINTS: Dict[str, Dict] = {
    f'swinv2_{arch}_patch4_window{w}_256': _official(
        arch, (w, w, w, 8))
    for arch in ('tiny', 'small', 'base') for w in (8, 16)
}
for _arch in ('base', 'large'):
    OFFICIAL_V2_CHECKPOINTS.update({
        f'swinv2_{_arch}_patch4_window12_192_22k': _official(
            _arch, (12, 12, 12, 6), img=192),
        f'swinv2_{_arch}_patch4_window12to16_192to256_22kto1k_ft': _official(
            _arch, (16, 16, 16, 8), (12, 12, 12, 6), img=256),
        f'swinv2_{_arch}_patch4_window12to24_192to384_22kto1k_ft': _official(
            _arch, (24, 24, 24, 12), (12, 12, 12, 6), img=384),
    })
for _name, _preset in OFFICIAL_V2_CHECKPOINTS.items():
    _preset['url'] = f'{_V2_URL}{_name}.pth'


@MODELS.register_module()
class SwinTransformerV2(SwinBackbone):
    """Swin Transformer V2 backbone: res-post-norm blocks, scaled cosine
    window attention with a continuous position bias, patch merging that
    reduces before it normalises and (huge/giant) an extra LayerNorm every
    6 blocks, in the layers V1 uses.

    Everything of :class:`~.base.SwinBackbone` (any input size, any number
    of stages, ``out_indices`` with per-output norms, ``frozen_stages``,
    ``norm_eval``, ``with_cp``, SDPA or math attention). Parameter names
    follow the official SwinV2 code (``attn.logit_scale``, ``attn.cpb_mlp``,
    ``attn.q_bias``, ``attn.v_bias``).

    Args:
        arch: ``'tiny'``, ``'small'``, ``'base'``, ``'large'``, ``'huge'``,
            ``'giant'``, a dict with ``embed_dims``, ``depths``,
            ``num_heads`` and optionally ``extra_norm_every`` (a LayerNorm
            after every k-th block of a stage; 0: none), or an official
            checkpoint name such as ``'swinv2_tiny_patch4_window16_256'``
            (sets the architecture and the defaults of ``window_size``,
            ``pretrained_window_sizes`` and ``pretrain_img_size`` to what
            it was trained with; its URL is in ``OFFICIAL_V2_CHECKPOINTS``).
        window_size: Window side, one for all stages or one per stage.
            Default: the checkpoint name's windows, else 8.
        pretrained_window_sizes: Window of the pretraining per stage (or
            one for all); the continuous position bias rescales its
            coordinates by it so a window-8 checkpoint runs at window 16.
            0 means the stage's own window. Default: the checkpoint name's,
            else 0.
        pretrain_img_size: As for :class:`~.base.SwinBackbone`. Default: the
            checkpoint name's, else 224.
        **kwargs: The other arguments of :class:`~.base.SwinBackbone` (an
            unknown name raises TypeError naming it; V1's ``qk_scale`` is
            unknown here: cosine attention learns its scale).

    Shape:
        - x: ``(B, in_channels, H, W)``.
        - output: the maps of :class:`~.base.SwinBackbone`, one per
          ``out_indices`` entry (strides 4, 8, 16, 32 for the presets).
    """

    arch_settings = V2_ARCH_SETTINGS
    version = 2

    def __init__(self, arch: Union[str, Dict] = 'tiny',
                 window_size: Optional[PerStage] = None,
                 pretrained_window_sizes: Optional[PerStage] = None,
                 pretrain_img_size: Optional[Union[int, Sequence[int]]] = None,
                 **kwargs: Any) -> None:
        preset = OFFICIAL_V2_CHECKPOINTS.get(arch, {}) if isinstance(
            arch, str) else {}
        super().__init__(
            preset.get('arch', arch),
            LayerVariant(post_norm=True, pretrained_window_sizes=_first(
                pretrained_window_sizes,
                preset.get('pretrained_window_sizes'), 0)),
            window_size=_first(window_size, preset.get('window_size'), 8),
            pretrain_img_size=_first(pretrain_img_size,
                                     preset.get('pretrain_img_size'), 224),
            **kwargs)


def _first(*values):
    """The first value that is not None."""
    return next(v for v in values if v is not None)
