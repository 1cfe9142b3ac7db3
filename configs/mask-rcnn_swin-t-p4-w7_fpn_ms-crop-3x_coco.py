# Official Swin detection repo: mask_rcnn_swin_tiny_patch4_window7_
# mstrain_480-800_adamw_3x_coco (box AP 46.0, mask AP 41.6).
_base_ = [
    './_base_/models/mask-rcnn_swin-t-p4-w7_fpn.py',
    './_base_/datasets/coco-instance_ms-crop.py',
    './_base_/schedules/swin-adamw_3x.py',
    'mmdet::_base_/default_runtime.py',
]

model = dict(backbone=dict(drop_path_rate=0.2))
