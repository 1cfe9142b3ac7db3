"""The five ADE20K UperNet configs: published settings, builds, inference.

Each paper config is checked against the values of the official
segmentation repo (configs/swin/upernet_swin_*_512x512_160k_ade20k.py) and
the Swin README / paper for the 640x640 ImageNet-22K rows, then built with
random weights (no checkpoint download, SyncBN set to BN for the CPU) and
run on a small image.
"""
import os.path as osp

import numpy as np
import pytest
import torch
from helpers import ROOT, config_path, load_tool, sync_bn_to_bn
from helpers import load_config as load

import mmswin  # noqa: F401  (registers mmswin.SwinTransformer)

URL = 'https://github.com/SwinTransformer/storage/releases/download/v1.0.0/'

# name -> (embed_dims, depths, heads, window, pretrain size, checkpoint,
#          crop, published params in M)
PUBLISHED = {
    'upernet_swin-t-p4-w7_8xb2-160k_ade20k-512x512':
    (96, (2, 2, 6, 2), (3, 6, 12, 24), 7, 224,
     'swin_tiny_patch4_window7_224.pth', 512, 60),
    'upernet_swin-s-p4-w7_8xb2-160k_ade20k-512x512':
    (96, (2, 2, 18, 2), (3, 6, 12, 24), 7, 224,
     'swin_small_patch4_window7_224.pth', 512, 81),
    'upernet_swin-b-p4-w7_8xb2-160k_ade20k-512x512':
    (128, (2, 2, 18, 2), (4, 8, 16, 32), 7, 224,
     'swin_base_patch4_window7_224.pth', 512, 121),
    'upernet_swin-b-p4-w12-in22k-384-pre_8xb2-160k_ade20k-640x640':
    (128, (2, 2, 18, 2), (4, 8, 16, 32), 12, 384,
     'swin_base_patch4_window12_384_22k.pth', 640, 121),
    'upernet_swin-l-p4-w12-in22k-384-pre_8xb2-160k_ade20k-640x640':
    (192, (2, 2, 18, 2), (6, 12, 24, 48), 12, 384,
     'swin_large_patch4_window12_384_22k.pth', 640, 234),
}

# name -> (mIoU single-scale, mIoU multi-scale + flip, FLOPs in G)
RESULTS = {
    'upernet_swin-t-p4-w7_8xb2-160k_ade20k-512x512': (44.51, 45.81, 945),
    'upernet_swin-s-p4-w7_8xb2-160k_ade20k-512x512': (47.64, 49.47, 1038),
    'upernet_swin-b-p4-w7_8xb2-160k_ade20k-512x512': (48.13, 49.72, 1188),
    'upernet_swin-b-p4-w12-in22k-384-pre_8xb2-160k_ade20k-640x640':
    (50.04, 51.66, 1841),
    'upernet_swin-l-p4-w12-in22k-384-pre_8xb2-160k_ade20k-640x640':
    (52.05, 53.53, 3230),
}


def mmcv1_poly_with_warmup(i: int, base_lr: float = 6e-5,
                           max_iters: int = 160000, warmup: int = 1500,
                           ratio: float = 1e-6) -> float:
    """The official schedule, written from mmcv 1.x's PolyLrUpdaterHook
    (power 1, min_lr 0) with its linear warmup."""
    lr = base_lr * (1 - i / max_iters)
    if i < warmup:
        lr *= 1 - (1 - i / warmup) * (1 - ratio)
    return lr


@pytest.mark.parametrize('name', sorted(PUBLISHED))
def test_hyper_parameters_match_published(name):
    dims, depths, heads, window, pre_size, ckpt, crop, _ = PUBLISHED[name]
    cfg = load(name)
    assert cfg.default_scope == 'mmseg'
    assert cfg.custom_imports.imports == ['mmswin']
    backbone = cfg.model.backbone
    assert backbone.type == 'mmswin.SwinTransformer'
    assert (backbone.embed_dims, tuple(backbone.depths),
            tuple(backbone.num_heads)) == (dims, depths, heads)
    assert backbone.window_size == window
    assert backbone.pretrain_img_size == pre_size
    assert (backbone.patch_size, backbone.mlp_ratio) == (4, 4)
    assert backbone.drop_path_rate == 0.3
    assert not backbone.use_abs_pos_embed
    assert backbone.init_cfg == dict(type='Pretrained',
                                     checkpoint=URL + ckpt)

    channels = [dims * 2**i for i in range(4)]
    head = cfg.model.decode_head
    assert head.type == 'UPerHead' and head.channels == 512
    assert head.in_channels == channels and head.in_index == [0, 1, 2, 3]
    assert tuple(head.pool_scales) == (1, 2, 3, 6)
    assert head.dropout_ratio == 0.1 and head.num_classes == 150
    assert head.norm_cfg.type == 'SyncBN'
    assert head.loss_decode.loss_weight == 1.0
    aux = cfg.model.auxiliary_head
    assert aux.type == 'FCNHead' and aux.in_index == 2
    assert aux.in_channels == channels[2] and aux.channels == 256
    assert aux.num_convs == 1 and not aux.concat_input
    assert aux.num_classes == 150 and aux.norm_cfg.type == 'SyncBN'
    assert aux.loss_decode.loss_weight == 0.4
    assert cfg.model.test_cfg.mode == 'whole'

    optim = cfg.optim_wrapper
    assert optim.type == 'OptimWrapper'
    assert optim.optimizer == dict(type='AdamW', lr=6e-5,
                                   betas=(0.9, 0.999), weight_decay=0.01)
    assert optim.paramwise_cfg.custom_keys == {
        key: dict(decay_mult=0.)
        for key in ('absolute_pos_embed', 'relative_position_bias_table',
                    'norm')}
    assert cfg.train_cfg.type == 'IterBasedTrainLoop'
    assert cfg.train_cfg.max_iters == 160000
    assert cfg.train_dataloader.batch_size == 2  # x 8 GPUs
    assert cfg.auto_scale_lr.base_batch_size == 16

    scale = (4 * crop, crop)  # (2048, 512) or (2560, 640)
    assert cfg.model.data_preprocessor.size == (crop, crop)
    steps = {t.type: t for t in cfg.train_dataloader.dataset.pipeline}
    assert list(steps) == ['LoadImageFromFile', 'LoadAnnotations',
                           'RandomResize', 'RandomCrop', 'RandomFlip',
                           'PhotoMetricDistortion', 'PackSegInputs']
    assert steps['LoadAnnotations'].reduce_zero_label
    assert steps['RandomResize'].scale == scale
    assert steps['RandomResize'].ratio_range == (0.5, 2.0)
    assert steps['RandomCrop'].crop_size == (crop, crop)
    assert steps['RandomCrop'].cat_max_ratio == 0.75
    assert steps['RandomFlip'].prob == 0.5
    test_steps = {t.type: t for t in cfg.test_dataloader.dataset.pipeline}
    assert test_steps['Resize'].scale == scale
    assert test_steps['Resize'].keep_ratio

    # Multi-scale + flip: ratios 0.5..1.75 of the test scale, each flipped
    # and not.
    assert cfg.tta_model.type == 'SegTTAModel'
    resizes, flips = cfg.tta_pipeline[1].transforms[:2]
    assert [r.scale for r in resizes] == [
        (int(scale[0] * r), int(scale[1] * r))
        for r in (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)]
    assert all(r.keep_ratio for r in resizes)
    assert sorted(f.prob for f in flips) == [0.0, 1.0]


def test_schedule_is_official_poly_with_warmup():
    """mmengine's schedulers built from the config give mmcv 1.x's lr at
    every iteration (relative error < 1e-9)."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import PARAM_SCHEDULERS, init_default_scope
    cfg = load('upernet_swin-t-p4-w7_8xb2-160k_ade20k-512x512')
    init_default_scope('mmseg')
    wrapper = build_optim_wrapper(torch.nn.Linear(2, 2), cfg.optim_wrapper)
    schedulers = [PARAM_SCHEDULERS.build(dict(s, optimizer=wrapper))
                  for s in cfg.param_scheduler]
    worst = 0.0
    for i in range(cfg.train_cfg.max_iters):
        lr = wrapper.optimizer.param_groups[0]['lr']
        worst = max(worst, abs(lr - mmcv1_poly_with_warmup(i)) /
                    mmcv1_poly_with_warmup(i))
        for scheduler in schedulers:
            scheduler.step()
    assert worst < 1e-9, worst


def test_no_decay_keys_reach_every_norm_and_table():
    """The config's name-based no-decay keys catch every LayerNorm and
    every relative position bias table of mmswin's backbone (found by
    module type), and nothing else."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    cfg = load('upernet_swin-t-p4-w7_8xb2-160k_ade20k-512x512')
    init_default_scope('mmseg')
    backbone = dict(cfg.model.backbone, init_cfg=None, embed_dims=32,
                    depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8))
    model = MODELS.build(backbone)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    decay_of = {id(p): group['weight_decay']
                for group in wrapper.optimizer.param_groups
                for p in group['params']}
    no_decay = set()
    for module in model.modules():
        if isinstance(module, torch.nn.LayerNorm):
            no_decay.update(id(p) for p in module.parameters())
        table = getattr(module, 'relative_position_bias_table', None)
        if table is not None:
            no_decay.add(id(table))
    # LayerNorms (weight + bias): patch embedding, 2 in each of the 5
    # blocks, 3 patch mergings, 4 outputs; plus one table per block
    assert len(no_decay) == 2 * (1 + 2 * 5 + 3 + 4) + 5
    for name, param in model.named_parameters():
        expected = 0.0 if id(param) in no_decay else 0.01
        assert decay_of[id(param)] == expected, name


@pytest.mark.parametrize('name', sorted(PUBLISHED))
def test_builds_and_runs_inference(name):
    """Random weights, BN heads, a 64x80 image kept at its size: the
    prediction covers the input and the parameter count is the published
    one within 2%."""
    from mmseg.apis import inference_model, init_model
    cfg = load(name)
    sync_bn_to_bn(cfg)
    cfg.test_pipeline = [
        dict(t, scale=(320, 64)) if t.type == 'Resize' else t
        for t in cfg.test_pipeline]
    model = init_model(cfg, device='cpu')  # sets backbone init_cfg=None
    assert model.backbone.init_cfg is None
    params = sum(p.numel() for p in model.parameters()) / 1e6
    published = PUBLISHED[name][-1]
    assert abs(params - published) / published < 0.02, params

    image = np.random.default_rng(0).integers(0, 256, (64, 80, 3),
                                             dtype=np.uint8)
    result = inference_model(model, image)
    logits = result.seg_logits.data
    assert logits.shape == (150, 64, 80)
    assert torch.isfinite(logits).all()
    assert result.pred_sem_seg.data.shape == (1, 64, 80)
    assert torch.equal(result.pred_sem_seg.data[0], logits.argmax(0))


def test_get_flops_matches_published_swin_t():
    """tools/analysis_tools/get_flops.py on UperNet Swin-T at 512 x 2048:
    params within 2% of the published 60M, FLOPs within 2% of 945G, and
    this count exactly: 59.94M, 939.5G (-0.6%; the count is exact, so any
    change of the model or of the counter shows)."""
    get_flops = load_tool('tools/analysis_tools/get_flops.py').main
    result = get_flops([
        config_path('upernet_swin-t-p4-w7_8xb2-160k_ade20k-512x512'),
        '--shape', '512', '2048'])
    assert result['shape'] == (512, 2048)
    assert abs(result['params'] / 60e6 - 1) < 0.02, result['params']
    assert abs(result['flops'] / 945e9 - 1) < 0.02, result['flops']
    assert (round(result['params'] / 1e6, 2),
            round(result['flops'] / 1e9, 1)) == (59.94, 939.5), result


def test_init_cfg_loads_an_official_classification_checkpoint(tmp_path):
    """The configs' backbone init_cfg reads an official ImageNet file
    (``{'model': ...}`` with the classifier's ``norm`` and ``head``, no
    per-output norms): every backbone weight it has is loaded as is."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    cfg = load('upernet_swin-b-p4-w12-in22k-384-pre_8xb2-160k_ade20k-640x640')
    sync_bn_to_bn(cfg)
    small = dict(embed_dims=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8))
    init_default_scope('mmseg')
    source = MODELS.build(dict(cfg.model.backbone, init_cfg=None, **small))
    source.init_weights()
    official = {k: v for k, v in source.state_dict().items()
                if not k.startswith('norm')}
    official.update({'norm.weight': torch.ones(256),
                     'norm.bias': torch.zeros(256),
                     'head.weight': torch.zeros(1000, 256),
                     'head.bias': torch.zeros(1000)})
    path = str(tmp_path / 'swin_window12_384_22k.pth')
    torch.save({'model': official}, path)

    cfg.model.backbone.update(small)
    cfg.model.backbone.init_cfg.checkpoint = path
    cfg.model.decode_head.in_channels = [32, 64, 128, 256]
    cfg.model.auxiliary_head.in_channels = 128
    model = MODELS.build(cfg.model)
    model.init_weights()
    loaded = model.backbone.state_dict()
    for key, value in official.items():
        if not key.startswith(('norm.', 'head.')):
            assert torch.equal(loaded[key], value), key
    # the window-12 tables (23 x 23 offsets) came through unresized
    table = 'layers.0.blocks.0.attn.relative_position_bias_table'
    assert loaded[table].shape == (23 * 23, 1)


def test_metafile_lists_the_published_numbers():
    import yaml
    with open(osp.join(ROOT, 'configs', 'metafile.yml')) as f:
        index = yaml.safe_load(f)
    models = {m['Name']: m for m in index['Models']}
    assert 'UPerNet' in {c['Name'] for c in index['Collections']}
    for name, (ss, ms, flops) in RESULTS.items():
        model = models[name]
        assert model['Config'] == f'configs/{name}.py'
        assert model['In Collection'] == 'UPerNet'
        metrics = {k: v for result in model['Results']
                   for k, v in result['Metrics'].items()}
        assert metrics == {'mIoU': ss, 'mIoU(ms+flip)': ms}
        assert model['Results'][0]['Dataset'] == 'ADE20K'
        meta = model['Metadata']
        assert meta['Parameters'] == PUBLISHED[name][-1] * 10**6
        assert meta['FLOPs'] == flops * 10**9
        assert meta['Pretrain'].endswith(
            load(name).model.backbone.init_cfg.checkpoint)
        assert 'Swin-Transformer' in meta['Source']
