"""The SwinV2 dense-prediction configs: the V1 recipes with the SwinV2
backbone of configs/_base_/models/swinv2-t-w16.py, nothing else changed.

Their mmdet builds and test-mode forwards run in test_det_configs.py (it
covers every mmdet config); the mmseg ones run here.
"""
import re
import sys

import numpy as np
import pytest
import torch
from helpers import (
    TOY_DET_CONFIG,
    coco_data_options,
    run_tool_ok,
    sync_bn_to_bn,
)
from helpers import load_config as load

URL = 'https://github.com/SwinTransformer/storage/releases/download/v2.0.0/'
ARCH = {'t': 'tiny', 's': 'small', 'b': 'base'}

# V2 config -> (its V1 recipe, arch letter, drop_path_rate)
V2_CONFIGS = {
    'mask-rcnn_swinv2-t-w16_fpn_ms-crop-3x_coco':
    ('mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco', 't', 0.2),
    **{
        f'cascade-mask-rcnn_swinv2-{a}-w16_fpn_giou-4conv1f_ms-crop-3x_coco':
        (f'cascade-mask-rcnn_swin-{a}-p4-w7_fpn_giou-4conv1f_ms-crop-3x_coco',
         a, 0.3 if a == 'b' else 0.2)
        for a in 'tsb'
    },
    **{
        f'upernet_swinv2-{a}-w16_8xb2-160k_ade20k-512x512':
        (f'upernet_swin-{a}-p4-w7_8xb2-160k_ade20k-512x512', a, 0.3)
        for a in 'tsb'
    },
}
HELPERS = ('swinv2_backbone', 'swinv2_no_decay')


@pytest.mark.parametrize('name', sorted(V2_CONFIGS))
def test_v2_config_is_the_v1_recipe_with_a_v2_backbone(name):
    v1_name, arch, drop_path = V2_CONFIGS[name]
    v2, v1 = load(name).to_dict(), load(v1_name).to_dict()
    backbone = v2['model'].pop('backbone')
    assert backbone == dict(
        type='mmswin.SwinTransformerV2', arch=ARCH[arch], window_size=16,
        pretrained_window_sizes=(16, 16, 16, 8), out_indices=(0, 1, 2, 3),
        drop_path_rate=drop_path,
        init_cfg=dict(type='Pretrained', checkpoint=(
            f'{URL}swinv2_{ARCH[arch]}_patch4_window16_256.pth')))
    v1['model'].pop('backbone')
    keys = v2['optim_wrapper']['paramwise_cfg'].pop('custom_keys')
    v1_keys = v1['optim_wrapper']['paramwise_cfg'].pop('custom_keys')
    assert keys == dict(v1_keys, logit_scale=dict(decay_mult=0.),
                        cpb_mlp=dict(decay_mult=0.))
    assert set(v1_keys) == {'absolute_pos_embed',
                            'relative_position_bias_table', 'norm'}
    for key in HELPERS:
        v2.pop(key)
    assert v2 == v1  # every other setting is the V1 recipe's


def test_no_decay_reaches_every_v2_specific_parameter():
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    cfg = load('upernet_swinv2-t-w16_8xb2-160k_ade20k-512x512')
    sync_bn_to_bn(cfg)
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    decay = {id(p): g['weight_decay'] for g in wrapper.optimizer.param_groups
             for p in g['params']}
    names = dict(model.backbone.named_parameters())
    for name, param in names.items():
        no_decay = any(k in name for k in (
            'logit_scale', 'cpb_mlp', 'norm', 'absolute_pos_embed'))
        assert decay[id(param)] == (0.0 if no_decay else 0.01), name
    assert any('cpb_mlp.2.weight' in n for n in names)


@pytest.mark.parametrize('arch', 'tsb')
def test_v2_segmentation_config_runs_inference(arch):
    from mmseg.apis import inference_model, init_model
    cfg = load(f'upernet_swinv2-{arch}-w16_8xb2-160k_ade20k-512x512')
    sync_bn_to_bn(cfg)
    cfg.test_pipeline = [
        dict(t, scale=(320, 64)) if t.type == 'Resize' else t
        for t in cfg.test_pipeline]
    model = init_model(cfg, device='cpu')  # backbone init_cfg set to None
    assert type(model.backbone).__name__ == 'SwinTransformerV2'
    image = np.random.default_rng(0).integers(0, 256, (64, 80, 3),
                                             dtype=np.uint8)
    result = inference_model(model, image)
    assert result.seg_logits.data.shape == (150, 64, 80)
    assert torch.isfinite(result.seg_logits.data).all()


def test_toy_training_with_a_v2_backbone(make_toy_coco, tmp_path):
    """3 iterations of the toy Mask R-CNN through tools/train.py with
    SwinTransformerV2 as the backbone: finite, logged losses."""
    root = make_toy_coco(seed=3, num_train=6, num_val=2)
    options = coco_data_options(root) + [
        'model.backbone.type=mmswin.SwinTransformerV2',
        'model.backbone.window_size=8', 'train_dataloader.batch_size=2',
        'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False', 'train_cfg.max_epochs=1',
        'train_cfg.val_begin=2', 'default_hooks.logger.interval=1']
    log = run_tool_ok([sys.executable, 'tools/train.py', TOY_DET_CONFIG,
                       '--work-dir', str(tmp_path / 'work'), '--cfg-options',
                       *options])
    assert 'SwinTransformerV2' in log
    losses = [float(x) for x in re.findall(r'  loss: ([\d.]+)', log)]
    assert len(losses) == 3 and all(0 < x < 100 for x in losses), losses
