# What the toy detectors share: the toy COCO shapes (made by
# tools/misc/make_toy_data.py), a CPU-sized schedule on the paper's AdamW
# settings, and `toy_model`, the overrides that shrink a Swin-T detector
# (a 4-stage Swin with 32 channels, 32-channel FPN and heads, trained from
# scratch). Each toy detector merges `toy_model` into its own model.
_base_ = [
    'mmdet::_base_/datasets/coco_instance.py',
    '../../_base_/schedules/swin-adamw_1x.py',
    'mmdet::_base_/default_runtime.py',
]

data_root = 'data/toy/coco/'
metainfo = dict(
    classes=('square', 'disc', 'triangle'),
    palette=[(230, 60, 60), (60, 200, 60), (70, 110, 240)])
image_size = 160  # the generator's default side

toy_model = dict(
    backbone=dict(
        embed_dims=32,
        depths=(1, 1, 2, 1),
        num_heads=(1, 2, 4, 8),
        drop_path_rate=0.0,
        init_cfg=None),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=32),
    rpn_head=dict(in_channels=32, feat_channels=32),
    # mmcv's CPU RoIAlign dominates the step time: few channels, 2x2
    # samples per bin.
    roi_head=dict(
        bbox_roi_extractor=dict(
            out_channels=32, roi_layer=dict(sampling_ratio=2)),
        mask_roi_extractor=dict(
            out_channels=32, roi_layer=dict(sampling_ratio=2)),
        mask_head=dict(num_convs=2, in_channels=32, conv_out_channels=32,
                       num_classes=3)),
    # At most 4 shapes per image: far fewer proposals and detections.
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300)),
    test_cfg=dict(
        rpn=dict(nms_pre=500, max_per_img=100),
        rcnn=dict(max_per_img=20)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5, direction=['horizontal', 'vertical']),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor')),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=1,
    # per-sample seeds: --resume sees the uninterrupted run's augmentations
    batch_sampler=dict(type='mmswin.ResumableBatchSampler',
                       batch_sampler=dict(type='AspectRatioBatchSampler')),
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=8),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=1,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/val.json')
test_evaluator = val_evaluator

# 400 images / 4 per batch = 100 iterations per epoch; two epochs at the
# full lr already reach ~0.6 bbox mAP, the third refines at lr / 10.
max_epochs = 3
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=100),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[2], gamma=0.1),
]
# From scratch on 4 images per batch: 10x the paper's lr (the paper's
# 1e-4 fine-tunes a pretrained backbone with 16 images per batch).
optim_wrapper = dict(optimizer=dict(lr=1e-3))
auto_scale_lr = dict(base_batch_size=4)

default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(type='mmswin.ResumableCheckpointHook',
                    interval=max_epochs, max_keep_ckpts=1))
log_processor = dict(window_size=20)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
# Same data order and initial weights in every run.
randomness = dict(seed=0)
