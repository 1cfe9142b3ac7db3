# Official Swin detection repo: cascade_mask_rcnn_swin_tiny_patch4_window7_
# mstrain_480-800_giou_4conv1f_adamw_1x_coco (box AP 48.1, mask AP 41.7).
_base_ = [
    './_base_/models/cascade-mask-rcnn_swin-t-p4-w7_fpn_giou-4conv1f.py',
    './_base_/datasets/coco-instance_ms-crop.py',
    './_base_/schedules/swin-adamw_1x.py',
    'mmdet::_base_/default_runtime.py',
]

model = dict(backbone=dict(drop_path_rate=0.0))
