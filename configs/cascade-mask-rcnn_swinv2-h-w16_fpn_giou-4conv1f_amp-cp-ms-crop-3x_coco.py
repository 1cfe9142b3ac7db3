# Cascade Mask R-CNN + SwinV2-H (0.66B backbone parameters, window 16, an
# extra LayerNorm every 6 blocks) at 1333x800, 2 images per GPU: mixed
# precision and activation checkpointing, plain DDP.
# tools/analysis_tools/estimate_memory.py (docs/en/advanced_guides/
# large_models.md): 17.2 GiB per GPU on 8 GPUs, so it fits 8 x 40 GiB and
# 8 x 80 GiB GPUs.
# No public SwinV2-H checkpoint: see the SwinV2-G config for init_cfg.
_base_ = './cascade-mask-rcnn_swinv2-b-w16_fpn_giou-4conv1f_ms-crop-3x_coco.py'

model = dict(
    backbone=dict(
        arch='huge',
        pretrained_window_sizes=0,
        with_cp=True,
        init_cfg=None),
    neck=dict(in_channels=[352, 704, 1408, 2816]))
optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic')
