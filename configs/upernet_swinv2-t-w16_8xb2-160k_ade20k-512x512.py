# UperNet + SwinV2-T (window 16) on ADE20K, 512x512, 160k iterations: the
# V1 Swin-T recipe (upernet_swin-t-p4-w7_8xb2-160k_ade20k-512x512.py: AdamW
# 6e-5, wd 0.01, warmup + poly, drop_path 0.3) with the SwinV2 backbone of
# _base_/models/swinv2-t-w16.py, which says what is published and what is
# our choice.
_base_ = [
    './upernet_swin-t-p4-w7_8xb2-160k_ade20k-512x512.py',
    './_base_/models/swinv2-t-w16.py',
]

model = dict(backbone=dict(**_base_.swinv2_backbone, drop_path_rate=0.3))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys=_base_.swinv2_no_decay))
