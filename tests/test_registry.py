"""mmswin's scope is reachable from mmdet and mmseg configs."""
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope, init_default_scope

import mmswin
from mmswin.registry import MODELS


def _config(scope: str) -> Config:
    return Config(dict(
        default_scope=scope,
        custom_imports=dict(imports=['mmswin'], allow_failed_imports=False),
        backbone=dict(type='mmswin.SwinTransformer', arch='tiny',
                      out_indices=(1, 3))))


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_openmmlab_registries_build_mmswin_modules(scope):
    cfg = _config(scope)
    if scope == 'mmdet':
        from mmdet.registry import MODELS as LIB_MODELS
    else:
        from mmseg.registry import MODELS as LIB_MODELS
    init_default_scope(cfg.default_scope)
    with DefaultScope.overwrite_default_scope(scope):
        backbone = LIB_MODELS.build(cfg.backbone)
    assert type(backbone) is mmswin.SwinTransformer
    assert backbone.out_indices == (1, 3)
    with torch.no_grad():
        outs = backbone.eval()(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [192, 768]


def test_scope_is_a_child_of_mmengine_root():
    from mmengine.registry import MODELS as ROOT
    assert MODELS.scope == 'mmswin'
    assert MODELS.parent is ROOT
    assert {'SwinTransformer', 'SwinTransformerV2'} <= set(MODELS.module_dict)


def test_version_is_exported():
    assert mmswin.__version__.count('.') == 2
