# UperNet + SwinV2-H (0.66B backbone parameters, window 16, an extra
# LayerNorm every 6 blocks) on ADE20K 512x512 crops, 2 per GPU: mixed
# precision and activation checkpointing, plain DDP.
# tools/analysis_tools/estimate_memory.py (docs/en/advanced_guides/
# large_models.md): 12.0 GiB per GPU on 8 GPUs, so it fits 8 x 40 GiB and
# 8 x 80 GiB GPUs.
# No public SwinV2-H checkpoint: the backbone starts from scratch unless
#   --cfg-options model.backbone.init_cfg.type=Pretrained \
#                 model.backbone.init_cfg.checkpoint=PATH
_base_ = './upernet_swinv2-b-w16_8xb2-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='huge',
        pretrained_window_sizes=0,
        with_cp=True,
        init_cfg=None),
    decode_head=dict(in_channels=[352, 704, 1408, 2816]),
    auxiliary_head=dict(in_channels=1408))
optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic')
