"""Swin Transformer (V1) backbone for dense prediction."""
from typing import Any, Dict, Optional

from ...registry import MODELS
from .base import ArchSpec, LayerVariant, SwinBackbone

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
class SwinTransformer(SwinBackbone):
    """Swin Transformer (V1) backbone: pre-norm blocks, scaled dot-product
    window attention with a learned relative position bias table.

    A drop-in for mmdet's and mmseg's ``SwinTransformer``: it accepts every
    argument of theirs, with any number of stages, and gives the same
    outputs given the same weights (see :class:`~.base.SwinBackbone` for the
    arguments they share with V2 and for what each does).

    Args:
        arch: ``'tiny'``, ``'small'``, ``'base'``, ``'large'`` or a dict with
            ``embed_dims``, ``depths`` and ``num_heads``.
        qk_scale: Attention logit scale; None means ``head_dim ** -0.5``.
        **kwargs: The arguments of :class:`~.base.SwinBackbone` (an unknown
            name raises TypeError naming it; V2's ``pretrained_window_sizes``
            and ``post_norm`` are unknown here).

    Shape:
        - x: ``(B, in_channels, H, W)``.
        - output: one ``(B, C * 2**i, ceil(H / 4 / 2**i), ...)`` map per i
          in ``out_indices`` at ``patch_size=4`` (see ``SwinBackbone``).
    """

    arch_settings = ARCH_SETTINGS
    version = 1

    def __init__(self, arch: ArchSpec = 'tiny', *,
                 qk_scale: Optional[float] = None, **kwargs: Any) -> None:
        super().__init__(arch, LayerVariant(post_norm=False,
                                            qk_scale=qk_scale), **kwargs)
