# Official Swin detection repo: mask_rcnn_swin_tiny_patch4_window7_
# mstrain_480-800_adamw_1x_coco (box AP 43.7, mask AP 39.8).
_base_ = [
    './_base_/models/mask-rcnn_swin-t-p4-w7_fpn.py',
    './_base_/datasets/coco-instance_ms-crop.py',
    './_base_/schedules/swin-adamw_1x.py',
    'mmdet::_base_/default_runtime.py',
]

model = dict(backbone=dict(drop_path_rate=0.1))
