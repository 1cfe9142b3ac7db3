# UperNet + SwinV2-G (3.0B backbone parameters) on ADE20K 512x512 crops, 2 per
# GPU: ZeRO stage 1, activation checkpointing and mixed precision, the SwinV2
# paper's recipe. tools/analysis_tools/estimate_memory.py (see
# docs/en/advanced_guides/large_models.md): 27.9 GiB per GPU on 8 GPUs, so
# it fits 8 x 40 GiB and 8 x 80 GiB (DDP without ZeRO: 47.8 GiB). For 24 GiB
# GPUs: the FSDP config of the same name (9.5 GiB). No public SwinV2-G
# checkpoint: see the SwinV2-H config for init_cfg.
# The SwinV2-H config's recipe (AMP, with_cp, no checkpoint) at the giant
# size, with ZeRO-1.
_base_ = './upernet_swinv2-h-w16_amp-cp_8xb2-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(arch='giant'),
    decode_head=dict(in_channels=[512, 1024, 2048, 4096]),
    auxiliary_head=dict(in_channels=2048))
optim_wrapper = dict(optimizer=dict(
    type='mmswin.ZeroRedundancyOptimizer', optimizer_type='AdamW'))
# rank 0 saves alone: the optimizer shards are gathered before each save
custom_hooks = [dict(type='mmswin.ZeroConsolidateHook')]
