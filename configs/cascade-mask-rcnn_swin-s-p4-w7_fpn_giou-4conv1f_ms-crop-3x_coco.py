# Official Swin detection repo: cascade_mask_rcnn_swin_small_patch4_window7_
# mstrain_480-800_giou_4conv1f_adamw_3x_coco (box AP 51.9, mask AP 45.0).
_base_ = './cascade-mask-rcnn_swin-t-p4-w7_fpn_giou-4conv1f_ms-crop-3x_coco.py'

model = dict(
    backbone=dict(
        arch='small',
        init_cfg=dict(
            checkpoint='https://github.com/SwinTransformer/storage/releases/'
            'download/v1.0.0/swin_small_patch4_window7_224.pth')))
