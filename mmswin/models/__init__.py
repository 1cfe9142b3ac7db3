from .backbones import SwinTransformer, SwinTransformerV2

__all__ = ['SwinTransformer', 'SwinTransformerV2']
