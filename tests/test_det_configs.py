"""The detection configs: every one builds and predicts, and the paper
configs carry the official Swin detection settings (ANCHORS.md, section 1).
"""
import copy
import functools
import glob
import os.path as osp

import numpy as np
import pytest
import torch
from helpers import ROOT, config_path
from mmengine.config import Config

URL = 'https://github.com/SwinTransformer/storage/releases/download/v1.0.0/'
A_SCALES = [(short, 1333) for short in range(480, 801, 32)]
B_SCALES = [(400, 1333), (500, 1333), (600, 1333)]
STAGE_STDS = [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
              [0.033, 0.033, 0.067, 0.067]]

# name -> (arch, drop_path_rate, epochs, lr milestones, cascade, checkpoint)
PAPER = {
    'mask-rcnn_swin-t-p4-w7_fpn_ms-crop-1x_coco':
    ('tiny', 0.1, 12, [8, 11], False, 'swin_tiny_patch4_window7_224.pth'),
    'mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco':
    ('tiny', 0.2, 36, [27, 33], False, 'swin_tiny_patch4_window7_224.pth'),
    'mask-rcnn_swin-s-p4-w7_fpn_ms-crop-3x_coco':
    ('small', 0.2, 36, [27, 33], False, 'swin_small_patch4_window7_224.pth'),
    'cascade-mask-rcnn_swin-t-p4-w7_fpn_giou-4conv1f_ms-crop-1x_coco':
    ('tiny', 0.0, 12, [8, 11], True, 'swin_tiny_patch4_window7_224.pth'),
    'cascade-mask-rcnn_swin-t-p4-w7_fpn_giou-4conv1f_ms-crop-3x_coco':
    ('tiny', 0.2, 36, [27, 33], True, 'swin_tiny_patch4_window7_224.pth'),
    'cascade-mask-rcnn_swin-s-p4-w7_fpn_giou-4conv1f_ms-crop-3x_coco':
    ('small', 0.2, 36, [27, 33], True, 'swin_small_patch4_window7_224.pth'),
    'cascade-mask-rcnn_swin-b-p4-w7_fpn_giou-4conv1f_ms-crop-3x_coco':
    ('base', 0.3, 36, [27, 33], True, 'swin_base_patch4_window7_224.pth'),
}
# name -> box AP, mask AP, params (M), FLOPs (G): the official detection
# repo's README (ANCHORS.md, section 1).
PUBLISHED = {
    'mask-rcnn_swin-t-p4-w7_fpn_ms-crop-1x_coco': (43.7, 39.8, 48, 267),
    'mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco': (46.0, 41.6, 48, 267),
    'mask-rcnn_swin-s-p4-w7_fpn_ms-crop-3x_coco': (48.5, 43.3, 69, 359),
    'cascade-mask-rcnn_swin-t-p4-w7_fpn_giou-4conv1f_ms-crop-1x_coco':
    (48.1, 41.7, 86, 745),
    'cascade-mask-rcnn_swin-t-p4-w7_fpn_giou-4conv1f_ms-crop-3x_coco':
    (50.4, 43.7, 86, 745),
    'cascade-mask-rcnn_swin-s-p4-w7_fpn_giou-4conv1f_ms-crop-3x_coco':
    (51.9, 45.0, 107, 838),
    'cascade-mask-rcnn_swin-b-p4-w7_fpn_giou-4conv1f_ms-crop-3x_coco':
    (51.9, 45.0, 145, 982),
}
AMP = {name.replace('_ms-crop-3x', '_amp-ms-crop-3x'): name
       for name in PAPER if name.endswith('3x_coco')}


# Detector config names start with the detector (mmdet's naming); the
# segmentation configs (upernet_...) have their own tests.
DETECTORS = ('mask-rcnn_', 'cascade-mask-rcnn_', 'faster-rcnn_',
             'cascade-rcnn_', 'retinanet_')


@functools.cache
def _load_cached(path: str) -> Config:
    return Config.fromfile(path)


def _load(path: str) -> Config:
    """A fresh copy of the config (loading takes ~1 s; copies are cheap)."""
    return copy.deepcopy(_load_cached(path))


def detection_configs():
    """Every shipped detection config, relative to the repo."""
    paths = glob.glob(osp.join(ROOT, 'configs', '**', '*.py'),
                      recursive=True)
    return sorted(osp.relpath(p, ROOT) for p in paths
                  if '_base_' not in p.split(osp.sep)
                  and osp.basename(p).startswith(DETECTORS))


def paper_config(name: str) -> Config:
    return _load(config_path(name))


def test_every_paper_config_is_shipped():
    names = {osp.splitext(osp.basename(p))[0] for p in detection_configs()}
    assert set(PAPER) | set(AMP) <= names, sorted(set(PAPER) | set(AMP)
                                                 - names)


# An -amp config's model is its 3x twin's (asserted below): built once.
@pytest.mark.parametrize(
    'path', [p for p in detection_configs() if '_amp-' not in p])
def test_config_builds_and_predicts(path):
    """Build (no pretrained weights) and run a test-mode forward on a
    72 x 100 image; with score_thr 0 the mask head runs as well. SyncBN
    stays: in eval mode it normalizes with its running statistics on CPU
    too (training needs BN on CPU, see tools/tool_utils.replace_sync_bn).
    """
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmengine.registry import init_default_scope
    cfg = _load(osp.join(ROOT, path))
    assert cfg.default_scope == 'mmdet'
    cfg.model.backbone.init_cfg = None
    # 20 proposals instead of 1000: the cascade heads are costly on a CPU.
    cfg.model.test_cfg.rpn.update(nms_pre=100, max_per_img=20)
    cfg.model.test_cfg.rcnn.score_thr = 0.0
    cfg.model.test_cfg.rcnn.max_per_img = 5
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model).eval()
    name = osp.splitext(osp.basename(path))[0]
    if name in PUBLISHED:  # e.g. 47.79M vs 48M, 144.98M vs 145M
        params = sum(p.numel() for p in model.parameters()) / 1e6
        assert abs(params / PUBLISHED[name][2] - 1) < 0.02, params
    meta = dict(img_shape=(72, 100), ori_shape=(72, 100),
                scale_factor=(1.0, 1.0))
    data = dict(inputs=[torch.randint(0, 256, (3, 72, 100),
                                      dtype=torch.uint8)],
                data_samples=[DetDataSample(metainfo=meta)])
    with torch.no_grad():
        pred = model.test_step(data)[0].pred_instances
    heads = cfg.model.roi_head
    with_mask = heads.get('mask_head') is not None
    num_classes = (heads.mask_head if with_mask
                   else heads.bbox_head).num_classes
    assert 0 < len(pred) <= 5
    assert pred.bboxes.shape == (len(pred), 4)
    if with_mask:
        assert pred.masks.shape == (len(pred), 72, 100)
        assert pred.masks.dtype == torch.bool
    else:
        assert 'masks' not in pred
    assert int(pred.labels.max()) < num_classes
    assert torch.all(pred.bboxes[:, 2:] <= torch.tensor([100., 72.]))


@pytest.mark.parametrize('name', sorted(PAPER))
def test_paper_settings(name):
    arch, drop_path, epochs, milestones, cascade, ckpt = PAPER[name]
    cfg = paper_config(name)
    backbone = cfg.model.backbone
    assert backbone.type == 'mmswin.SwinTransformer'
    assert (backbone.arch, backbone.window_size) == (arch, 7)
    assert backbone.get('patch_size', 4) == 4
    assert backbone.drop_path_rate == drop_path
    assert not backbone.get('use_abs_pos_embed', False)
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=URL + ckpt)
    width = 128 if arch == 'base' else 96
    assert cfg.model.neck.in_channels == [width * 2**i for i in range(4)]
    assert cfg.custom_imports.imports == ['mmswin']

    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer == dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999),
                             weight_decay=0.05)
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys == {
        'absolute_pos_embed': dict(decay_mult=0.),
        'relative_position_bias_table': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.)}
    warmup, steps = cfg.param_scheduler
    assert warmup == dict(type='LinearLR', start_factor=0.001,
                          by_epoch=False, begin=0, end=500)
    assert steps == dict(type='MultiStepLR', begin=0, end=epochs,
                         by_epoch=True, milestones=milestones, gamma=0.1)
    assert cfg.train_cfg.max_epochs == epochs
    assert cfg.train_dataloader.batch_size == 2  # x 8 GPUs = 16
    assert cfg.auto_scale_lr.base_batch_size == 16
    assert cfg.model.data_preprocessor.pad_size_divisor == 32

    flip, multi_scale = cfg.train_dataloader.dataset.pipeline[2:4]
    assert flip == dict(type='RandomFlip', prob=0.5)
    assert multi_scale.type == 'AutoAugment'
    policy_a, policy_b = multi_scale.policies
    assert policy_a == [dict(type='RandomChoiceResize', scales=A_SCALES,
                             keep_ratio=True)]
    assert policy_b == [
        dict(type='RandomChoiceResize', scales=B_SCALES, keep_ratio=True),
        dict(type='RandomCrop', crop_type='absolute_range',
             crop_size=(384, 600), allow_negative_crop=True),
        dict(type='RandomChoiceResize', scales=A_SCALES, keep_ratio=True)]
    if cascade:
        _check_cascade(cfg.model)
    else:
        assert cfg.model.type == 'MaskRCNN'


def _check_cascade(model):
    """The official giou_4conv1f Cascade Mask R-CNN."""
    assert model.type == 'CascadeRCNN'
    assert model.roi_head.stage_loss_weights == [1, 0.5, 0.25]
    assert len(model.roi_head.bbox_head) == 3
    for head, stds in zip(model.roi_head.bbox_head, STAGE_STDS):
        assert head.type == 'ConvFCBBoxHead'
        assert (head.num_shared_convs, head.num_shared_fcs) == (4, 1)
        assert (head.conv_out_channels, head.fc_out_channels) == (256, 1024)
        assert head.norm_cfg == dict(type='SyncBN', requires_grad=True)
        assert head.loss_bbox == dict(type='GIoULoss', loss_weight=10.0)
        assert head.reg_decoded_bbox and not head.reg_class_agnostic
        assert head.bbox_coder.target_stds == stds
    assert [stage.assigner.pos_iou_thr for stage in
            model.train_cfg.rcnn] == [0.5, 0.6, 0.7]
    assert model.rpn_head.loss_bbox == dict(type='SmoothL1Loss',
                                            beta=1.0 / 9.0, loss_weight=1.0)
    proposal = model.train_cfg.rpn_proposal
    assert (proposal.nms_pre, proposal.max_per_img) == (2000, 2000)


@pytest.mark.parametrize('amp_name', sorted(AMP))
def test_amp_variant_only_switches_the_optim_wrapper(amp_name):
    amp, plain = paper_config(amp_name), paper_config(AMP[amp_name])
    assert amp.optim_wrapper.type == 'AmpOptimWrapper'
    assert amp.optim_wrapper.loss_scale == 'dynamic'
    assert plain.optim_wrapper.type == 'OptimWrapper'
    amp_dict, plain_dict = amp.to_dict(), plain.to_dict()
    for cfg_dict in (amp_dict, plain_dict):
        cfg_dict['optim_wrapper'].pop('type')
        cfg_dict['optim_wrapper'].pop('loss_scale', None)
    assert amp_dict == plain_dict


def test_no_decay_groups_reach_the_optimizer():
    """Built the way the Runner builds it, AdamW gets weight decay 0 on
    position tables and norms and 0.05 elsewhere."""
    from mmdet.registry import MODELS
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    cfg = paper_config('mask-rcnn_swin-t-p4-w7_fpn_ms-crop-1x_coco')
    cfg.model.backbone.init_cfg = None
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    optimizer = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    decay_of = {}
    by_id = {id(p): name for name, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for param in group['params']:
            decay_of[by_id[id(param)]] = group['weight_decay']
    assert decay_of[
        'backbone.layers.2.blocks.3.attn.relative_position_bias_table'] == 0
    assert decay_of['backbone.layers.0.blocks.0.norm1.weight'] == 0
    assert decay_of['backbone.layers.1.downsample.norm.bias'] == 0
    assert decay_of['backbone.norm3.weight'] == 0
    assert decay_of['backbone.layers.2.blocks.3.attn.qkv.weight'] == 0.05
    assert decay_of['neck.fpn_convs.0.conv.weight'] == 0.05
    assert decay_of['roi_head.bbox_head.shared_fcs.0.weight'] == 0.05


def test_multi_scale_crop_policy_sizes():
    """Both policies end with a short side in 480..800 (step 32): crops of
    384..600 px keep the long side under 1333."""
    from mmcv.transforms import Compose
    from mmdet.structures.bbox import HorizontalBoxes
    from mmdet.structures.mask import BitmapMasks
    from mmengine.registry import init_default_scope
    cfg = paper_config('mask-rcnn_swin-t-p4-w7_fpn_ms-crop-1x_coco')
    init_default_scope('mmdet')
    transforms = Compose(cfg.train_dataloader.dataset.pipeline[2:4])
    rng = np.random.default_rng(0)
    short_sides = set()
    for _ in range(12):
        masks = np.zeros((1, 480, 640), np.uint8)
        masks[0, 100:300, 200:400] = 1
        results = transforms(dict(
            img=rng.integers(0, 255, (480, 640, 3), dtype=np.uint8),
            img_shape=(480, 640), ori_shape=(480, 640),
            gt_bboxes=HorizontalBoxes(torch.tensor([[200., 100., 400.,
                                                     300.]])),
            gt_bboxes_labels=np.array([0]), gt_ignore_flags=np.array([False]),
            gt_masks=BitmapMasks(masks, 480, 640)))
        height, width = results['img'].shape[:2]
        assert max(height, width) <= 1333
        short_sides.add(min(height, width))
    allowed = {short for short, _ in A_SCALES}
    assert short_sides <= allowed, short_sides - allowed
    assert len(short_sides) > 1  # really random


def test_metafile_lists_the_published_numbers():
    import yaml
    with open(osp.join(ROOT, 'configs', 'metafile.yml')) as f:
        index = yaml.safe_load(f)
    models = {m['Name']: m for m in index['Models']}
    collections = {c['Name'] for c in index['Collections']}
    for name in list(PUBLISHED) + list(AMP):
        model = models[name]
        box, mask, params, flops = PUBLISHED[AMP.get(name, name)]
        assert model['Config'] == f'configs/{name}.py'
        assert osp.isfile(osp.join(ROOT, model['Config']))
        assert model['In Collection'] in collections
        metrics = {k: v for result in model['Results']
                   for k, v in result['Metrics'].items()}
        assert metrics == {'box AP': box, 'mask AP': mask}
        assert model['Metadata']['Parameters'] == params * 10**6
        assert model['Metadata']['FLOPs'] == flops * 10**9
        assert 'Swin-Transformer-Object-Detection' in model['Metadata'][
            'Source']
