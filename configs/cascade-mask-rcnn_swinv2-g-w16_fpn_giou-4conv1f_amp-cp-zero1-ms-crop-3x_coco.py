# Cascade Mask R-CNN + SwinV2-G (3.0B backbone parameters, window 16, an
# extra LayerNorm every 6 blocks) at 1333x800, 2 images per GPU: the SwinV2
# paper's memory recipe (its ZeRO stage 1, activation checkpointing, mixed
# precision). tools/analysis_tools/estimate_memory.py (docs/en/
# advanced_guides/large_models.md) on 8 GPUs: 35.1 GiB per GPU, which fits
# 8 x 80 GiB and, narrowly, 8 x 40 GiB (DDP without ZeRO: 55.1 GiB; the
# parameters, gradients and AdamW state alone are 45.5 GiB). The FSDP config
# of the same name needs 16.7 GiB: headroom on 40 GiB, or 24 GiB GPUs.
#
# Not published: no SwinV2-G/H checkpoint is public (the paper's giant was
# pretrained on a private 70M-image set), so the backbone starts from
# scratch unless init_cfg names one:
#   --cfg-options model.backbone.init_cfg.type=Pretrained \
#                 model.backbone.init_cfg.checkpoint=PATH
# The rest is the SwinV2-B Cascade recipe (drop_path 0.3: our choice).
# The SwinV2-H config's recipe (AMP, with_cp, no checkpoint) at the giant
# size, with ZeRO-1.
_base_ = './cascade-mask-rcnn_swinv2-h-w16_fpn_giou-4conv1f_amp-cp-ms-crop-3x_coco.py'

model = dict(
    backbone=dict(arch='giant'),
    neck=dict(in_channels=[512, 1024, 2048, 4096]))
optim_wrapper = dict(optimizer=dict(
    type='mmswin.ZeroRedundancyOptimizer', optimizer_type='AdamW'))
# rank 0 saves alone: the optimizer shards are gathered before each save
custom_hooks = [dict(type='mmswin.ZeroConsolidateHook')]
