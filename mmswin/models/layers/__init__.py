from .attention import WindowAttention
from .block import DropPath, SwinBlock, SwinStage
from .mlp import Mlp
from .patch import PatchEmbed, PatchMerging

__all__ = ['WindowAttention', 'DropPath', 'Mlp', 'SwinBlock', 'SwinStage',
           'PatchEmbed', 'PatchMerging']
