# UperNet + Swin-T (patch 4, window 7, ImageNet-1K 224 pretraining) on
# ADE20K, 512x512 crops, 160k iterations: the official segmentation repo's
# configs/swin/upernet_swin_tiny_patch4_window7_512x512_160k_ade20k.py
# (SwinTransformer/Swin-Transformer-Semantic-Segmentation, mmseg 0.11) in
# mmseg 1.x form. Published: 44.51 mIoU single-scale, 45.81 multi-scale +
# flip, 60M params, 945G FLOPs at 512x2048.
#
# Everything not stated here is mmseg's own base config, which matches the
# official one: UperNet head (512 ch, pool scales 1/2/3/6, dropout 0.1,
# SyncBN), auxiliary FCNHead on stage 2 (256 ch, 1 conv, loss weight 0.4),
# whole-image test at (2048, 512), train pipeline = resize to (2048, 512)
# with ratio 0.5-2.0, 512 crop (cat_max_ratio 0.75), flip, photometric
# distortion; drop_path_rate 0.3 for T/S/B.
#
# On CPU or a single process: mmengine reverts SyncBN to BN by itself; to
# force BN (e.g. multi-process CPU), pass
#   --cfg-options model.decode_head.norm_cfg.type=BN \
#                 model.auxiliary_head.norm_cfg.type=BN
_base_ = [
    'mmseg::_base_/models/upernet_swin.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['mmswin'], allow_failed_imports=False)

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='mmswin.SwinTransformer',
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/SwinTransformer/storage/releases/'
            'download/v1.0.0/swin_tiny_patch4_window7_224.pth')),
    decode_head=dict(num_classes=150),
    auxiliary_head=dict(num_classes=150))

# AdamW, lr 6e-5, wd 0.01 for 16 images per iteration (2 per GPU x 8); no
# weight decay on position tables and norms (keys match mmswin's names:
# norm1/norm2, norm0..3, patch_embed.norm, downsample.norm).
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        custom_keys={
            'absolute_pos_embed': dict(decay_mult=0.),
            'relative_position_bias_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.),
        }))
auto_scale_lr = dict(enable=False, base_batch_size=16)

# The official mmcv 1.x 'poly' policy with linear warmup: lr(i) =
# 6e-5 * (1 - i / 160k) * (1e-6 + (1 - 1e-6) * min(i / 1500, 1)). The two
# schedulers overlap and multiply; mmengine reaches a scheduler's final
# value at end - 1, hence end = 1500 + 1 and 160k + 1 for the exact
# official factors (tests/test_seg_configs.py checks every iteration).
max_iters = 160000
warmup_iters = 1500
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
         end=warmup_iters + 1),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=0,
         end=max_iters + 1),
]
train_cfg = dict(max_iters=max_iters)

# Each sample draws its augmentations from its own seed, so a run resumed
# with --resume sees those of the uninterrupted run (any number of
# persistent workers).
train_dataloader = dict(
    batch_size=2, batch_sampler=dict(type='mmswin.ResumableBatchSampler'))
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader

# Multi-scale + flip test (tools/test.py --tta), as the official
# MultiScaleFlipAug: scales are ratios 0.5-1.75 of the test scale
# (2048, 512), not of the raw image, each plain and flipped; SegTTAModel
# averages the softmax maps.
test_scale = (2048, 512)
img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [
                dict(type='Resize', keep_ratio=True,
                     scale=(int(test_scale[0] * r), int(test_scale[1] * r)))
                for r in img_ratios
            ],
            [
                dict(type='RandomFlip', prob=0., direction='horizontal'),
                dict(type='RandomFlip', prob=1., direction='horizontal'),
            ],
            [dict(type='LoadAnnotations', reduce_zero_label=True)],
            [dict(type='PackSegInputs')],
        ]),
]
