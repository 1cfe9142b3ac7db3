# UperNet + SwinV2-S (window 16): as the SwinV2-T config with the small
# architecture and the official swinv2_small_patch4_window16_256 checkpoint.
_base_ = './upernet_swinv2-t-w16_8xb2-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='small',
        init_cfg=dict(
            checkpoint='https://github.com/SwinTransformer/storage/releases/'
            'download/v2.0.0/swinv2_small_patch4_window16_256.pth')))
