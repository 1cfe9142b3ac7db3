# Cascade Mask R-CNN + SwinV2-S (window 16): as the SwinV2-T config with the
# small architecture and the official swinv2_small_patch4_window16_256
# checkpoint; drop_path 0.2 as the V1 Swin-S cascade 3x recipe.
_base_ = './cascade-mask-rcnn_swinv2-t-w16_fpn_giou-4conv1f_ms-crop-3x_coco.py'

model = dict(
    backbone=dict(
        arch='small',
        init_cfg=dict(
            checkpoint='https://github.com/SwinTransformer/storage/releases/'
            'download/v2.0.0/swinv2_small_patch4_window16_256.pth')))
