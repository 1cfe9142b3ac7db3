# Cascade Mask R-CNN + Swin-L (window 12, ImageNet-22K 384 pretraining) at
# 1333x800, 2 images per GPU, mixed precision: the Swin-B Cascade 3x recipe
# with the large architecture and its official checkpoint (drop_path 0.3 as
# Swin-B; the Swin paper's own Swin-L detector is HTC++, not this one).
# tools/analysis_tools/estimate_memory.py (docs/en/advanced_guides/
# large_models.md) on 8 GPUs: 18.4 GiB per GPU, which fits 8 x 40 GiB and
# 8 x 80 GiB without checkpointing (with it: 6.0 GiB, for 24 GiB GPUs).
_base_ = './cascade-mask-rcnn_swin-b-p4-w7_fpn_giou-4conv1f_ms-crop-3x_coco.py'

model = dict(
    backbone=dict(
        arch='large',
        window_size=12,
        pretrain_img_size=384,
        init_cfg=dict(
            checkpoint='https://github.com/SwinTransformer/storage/releases/'
            'download/v1.0.0/swin_large_patch4_window12_384_22k.pth')),
    neck=dict(in_channels=[192, 384, 768, 1536]))
optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic')
