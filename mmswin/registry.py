"""mmswin's registry scope.

Each registry is a child of mmengine's root registry of the same kind, in the
scope ``'mmswin'``. A config whose ``default_scope`` is ``'mmdet'`` or
``'mmseg'`` reaches mmswin's modules as ``type='mmswin.SwinTransformer'``: the
scope prefix makes mmengine search the root's children for ``'mmswin'``, so
neither mmdet nor mmseg is patched.
"""
from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import OPTIMIZERS as MMENGINE_OPTIMIZERS
from mmengine.registry import STRATEGIES as MMENGINE_STRATEGIES
from mmengine.registry import Registry


class ScopeRegistry(Registry):
    """A registry that, asked for a name it does not hold, says which names
    it does hold.

    mmengine answers an unknown ``type='mmswin.SwinTransformr'`` with a
    generic "not in the registry" message; here the lookup raises a
    ``KeyError`` listing mmswin's registered names instead. Dotted names
    (``'mmswin.models.SwinTransformer'``, full import paths) keep mmengine's
    behaviour, and ``name in registry`` still answers False.
    """

    def get(self, key: str):
        """The class registered as ``key`` (searching parents as mmengine
        does); raises ``KeyError`` listing the registered names if none."""
        obj = super().get(key)
        scope, name = self.split_scope_key(key)
        if obj is None and scope in (None, self.scope) and '.' not in name:
            raise KeyError(
                f'{name!r} is not registered in mmswin\'s {self.name} '
                f'registry; registered: {sorted(self.module_dict)}')
        return obj

    def __contains__(self, key: str) -> bool:
        try:
            return super().get(key) is not None
        except KeyError:
            return False


MODELS = ScopeRegistry(
    'model', parent=MMENGINE_MODELS, scope='mmswin',
    locations=['mmswin.models', 'mmswin.deploy'])
HOOKS = ScopeRegistry(
    'hook', parent=MMENGINE_HOOKS, scope='mmswin',
    locations=['mmswin.engine'])
DATA_SAMPLERS = ScopeRegistry(
    'data sampler', parent=MMENGINE_DATA_SAMPLERS, scope='mmswin',
    locations=['mmswin.engine'])
OPTIM_WRAPPERS = ScopeRegistry(
    'optim_wrapper', parent=MMENGINE_OPTIM_WRAPPERS, scope='mmswin',
    locations=['mmswin.engine'])
OPTIMIZERS = ScopeRegistry(
    'optimizer', parent=MMENGINE_OPTIMIZERS, scope='mmswin',
    locations=['mmswin.engine'])
STRATEGIES = ScopeRegistry(
    'strategy', parent=MMENGINE_STRATEGIES, scope='mmswin',
    locations=['mmswin.engine'])
