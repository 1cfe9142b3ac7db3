# UperNet + SwinV2-G with FSDP2 (mmswin.FSDP2Strategy, every Swin block its
# own shard group and checkpointed) and mixed precision: 9.5 GiB per GPU on 8
# GPUs (tools/analysis_tools/estimate_memory.py), for GPUs of 24 GiB or for
# larger crops/batches on 40 GiB; otherwise the ZeRO-1 config. runner_type
# selects mmengine's FlexibleRunner; train with tools/dist_train.sh as usual.
_base_ = './upernet_swinv2-g-w16_amp-cp-zero1_8xb2-160k_ade20k-512x512.py'

optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=6e-05,
                                    betas=(0.9, 0.999), weight_decay=0.01))
custom_hooks = []
runner_type = 'FlexibleRunner'
strategy = dict(type='mmswin.FSDP2Strategy')
