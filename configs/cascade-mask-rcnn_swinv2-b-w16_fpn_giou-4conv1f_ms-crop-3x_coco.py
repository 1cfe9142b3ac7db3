# Cascade Mask R-CNN + SwinV2-B (window 16): as the SwinV2-T config with the
# base architecture and the official swinv2_base_patch4_window16_256
# (ImageNet-1K) checkpoint; drop_path 0.3 as the V1 Swin-B cascade 3x recipe.
_base_ = './cascade-mask-rcnn_swinv2-t-w16_fpn_giou-4conv1f_ms-crop-3x_coco.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.3,
        init_cfg=dict(
            checkpoint='https://github.com/SwinTransformer/storage/releases/'
            'download/v2.0.0/swinv2_base_patch4_window16_256.pth')),
    neck=dict(in_channels=[128, 256, 512, 1024]))
