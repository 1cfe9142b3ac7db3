from .base import SwinBackbone
from .swin import SwinTransformer
from .swin_v2 import OFFICIAL_V2_CHECKPOINTS, SwinTransformerV2

__all__ = ['SwinBackbone', 'SwinTransformer', 'SwinTransformerV2',
           'OFFICIAL_V2_CHECKPOINTS']
