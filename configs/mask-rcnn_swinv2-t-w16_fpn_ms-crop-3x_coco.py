# Mask R-CNN + SwinV2-T (window 16) on COCO: the V1 Swin-T 3x recipe
# (mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py: AdamW 1e-4, wd 0.05,
# multi-scale crop, 36 epochs, drop_path 0.2) with the SwinV2 backbone of
# _base_/models/swinv2-t-w16.py, which says what is published and what is
# our choice.
_base_ = [
    './mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py',
    './_base_/models/swinv2-t-w16.py',
]

model = dict(backbone=dict(**_base_.swinv2_backbone, drop_path_rate=0.2))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys=_base_.swinv2_no_decay))
