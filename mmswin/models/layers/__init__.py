from .attention import WindowAttention
from .block import DropPath, Mlp, SwinBlock, SwinStage
from .patch import PatchEmbed, PatchMerging

__all__ = ['WindowAttention', 'DropPath', 'Mlp', 'SwinBlock', 'SwinStage',
           'PatchEmbed', 'PatchMerging']
