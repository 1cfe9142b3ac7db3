"""mmswin's registry scope.

Each registry is a child of mmengine's root registry of the same kind, in the
scope ``'mmswin'``. A config whose ``default_scope`` is ``'mmdet'`` or
``'mmseg'`` reaches mmswin's modules as ``type='mmswin.SwinTransformer'``: the
scope prefix makes mmengine search the root's children for ``'mmswin'``, so
neither mmdet nor mmseg is patched.
"""
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

MODELS = Registry(
    'model', parent=MMENGINE_MODELS, scope='mmswin',
    locations=['mmswin.models'])
HOOKS = Registry(
    'hook', parent=MMENGINE_HOOKS, scope='mmswin',
    locations=['mmswin.engine'])
