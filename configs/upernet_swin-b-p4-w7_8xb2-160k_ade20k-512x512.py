# UperNet + Swin-B (ImageNet-1K 224 pretraining) on ADE20K, 512x512 crops,
# 160k iterations: the official segmentation repo's
# configs/swin/upernet_swin_base_patch4_window7_512x512_160k_ade20k.py.
# Published: 48.13 mIoU single-scale, 49.72 multi-scale + flip, 121M
# params, 1188G FLOPs. Width 128, heads (4, 8, 16, 32) and the checkpoint
# differ from Swin-S; every training setting is the Swin-T config's.
_base_ = './upernet_swin-s-p4-w7_8xb2-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        embed_dims=128,
        num_heads=[4, 8, 16, 32],
        init_cfg=dict(
            checkpoint='https://github.com/SwinTransformer/storage/releases/'
            'download/v1.0.0/swin_base_patch4_window7_224.pth')),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
