# Official Swin detection repo: cascade_mask_rcnn_swin_base_patch4_window7_
# mstrain_480-800_giou_4conv1f_adamw_3x_coco (box AP 51.9, mask AP 45.0).
# Its README lists ImageNet-1K pretraining: the window-7, 224 px, 1K file.
_base_ = './cascade-mask-rcnn_swin-t-p4-w7_fpn_giou-4conv1f_ms-crop-3x_coco.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.3,
        init_cfg=dict(
            checkpoint='https://github.com/SwinTransformer/storage/releases/'
            'download/v1.0.0/swin_base_patch4_window7_224.pth')),
    neck=dict(in_channels=[128, 256, 512, 1024]))
