"""mmswin: Swin Transformer V1/V2 backbones for OpenMMLab 2.0.

Importing the package fills the ``mmswin`` registry scope, so configs only
need ``custom_imports=dict(imports=['mmswin'], allow_failed_imports=False)``.
"""
from . import engine, models  # noqa: F401  (registers modules and hooks)
from .checkpoint import safe_globals  # noqa: F401  (resume, weights_only)
from .models import SwinTransformer, SwinTransformerV2
from .registry import HOOKS, MODELS
from .version import __version__

__all__ = ['__version__', 'MODELS', 'HOOKS', 'SwinTransformer',
           'SwinTransformerV2']
