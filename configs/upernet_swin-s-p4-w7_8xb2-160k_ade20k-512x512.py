# UperNet + Swin-S (ImageNet-1K 224 pretraining) on ADE20K, 512x512 crops,
# 160k iterations: the official segmentation repo's
# configs/swin/upernet_swin_small_patch4_window7_512x512_160k_ade20k.py.
# Published: 47.64 mIoU single-scale, 49.47 multi-scale + flip, 81M params,
# 1038G FLOPs. Only the depth of stage 3 and the checkpoint differ from
# Swin-T; every training setting is the Swin-T config's.
_base_ = './upernet_swin-t-p4-w7_8xb2-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        depths=[2, 2, 18, 2],
        init_cfg=dict(
            checkpoint='https://github.com/SwinTransformer/storage/releases/'
            'download/v1.0.0/swin_small_patch4_window7_224.pth')))
