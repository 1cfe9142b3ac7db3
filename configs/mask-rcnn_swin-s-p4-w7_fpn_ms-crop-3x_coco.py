# Official Swin detection repo: mask_rcnn_swin_small_patch4_window7_
# mstrain_480-800_adamw_3x_coco (box AP 48.5, mask AP 43.3).
_base_ = './mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py'

model = dict(
    backbone=dict(
        arch='small',
        init_cfg=dict(
            checkpoint='https://github.com/SwinTransformer/storage/releases/'
            'download/v1.0.0/swin_small_patch4_window7_224.pth')))
