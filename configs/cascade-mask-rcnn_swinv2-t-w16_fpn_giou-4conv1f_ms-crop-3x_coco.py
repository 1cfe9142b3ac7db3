# Cascade Mask R-CNN (giou, 4conv1f) + SwinV2-T (window 16) on COCO: the V1
# Swin-T cascade 3x recipe (drop_path 0.2) with the SwinV2 backbone of
# _base_/models/swinv2-t-w16.py, which says what is published and what is
# our choice.
_base_ = [
    './cascade-mask-rcnn_swin-t-p4-w7_fpn_giou-4conv1f_ms-crop-3x_coco.py',
    './_base_/models/swinv2-t-w16.py',
]

model = dict(backbone=dict(**_base_.swinv2_backbone, drop_path_rate=0.2))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys=_base_.swinv2_no_decay))
