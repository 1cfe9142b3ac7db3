# UperNet + SwinV2-B (window 16): as the SwinV2-S config with the base
# architecture and the official swinv2_base_patch4_window16_256 (ImageNet-1K)
# checkpoint.
_base_ = './upernet_swinv2-s-w16_8xb2-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='base',
        init_cfg=dict(
            checkpoint='https://github.com/SwinTransformer/storage/releases/'
            'download/v2.0.0/swinv2_base_patch4_window16_256.pth')),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
