# COCO instances with the official Swin detection repo's multi-scale
# training (from DETR / Sparse R-CNN): flip, then one of two policies,
# A: short side in 480..800 (step 32), long side <= 1333;
# B: short side in {400, 500, 600}, random crop of 384..600 px (negative
#    crops allowed), then resize as in A.
# Images are padded to a multiple of 32 by the detector's data_preprocessor.
_base_ = 'mmdet::_base_/datasets/coco_instance.py'

_scales_a = [(short, 1333) for short in range(480, 801, 32)]
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='AutoAugment',
        policies=[
            [dict(type='RandomChoiceResize', scales=_scales_a,
                  keep_ratio=True)],
            [
                dict(type='RandomChoiceResize',
                     scales=[(400, 1333), (500, 1333), (600, 1333)],
                     keep_ratio=True),
                dict(type='RandomCrop',
                     crop_type='absolute_range',
                     crop_size=(384, 600),
                     allow_negative_crop=True),
                dict(type='RandomChoiceResize', scales=_scales_a,
                     keep_ratio=True),
            ],
        ]),
    dict(type='PackDetInputs'),
]
# Each sample draws its augmentations from its own seed, so a run resumed
# with --resume sees those of the uninterrupted run (any number of
# persistent workers); mmdet's aspect-ratio grouping still forms the batches.
train_dataloader = dict(
    batch_sampler=dict(type='mmswin.ResumableBatchSampler',
                       batch_sampler=dict(type='AspectRatioBatchSampler')),
    dataset=dict(pipeline=train_pipeline))
del _scales_a
