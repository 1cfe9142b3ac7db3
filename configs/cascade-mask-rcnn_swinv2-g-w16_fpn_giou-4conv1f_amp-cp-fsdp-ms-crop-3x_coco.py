# Cascade Mask R-CNN + SwinV2-G with parameters, gradients and AdamW state
# sharded over the processes by FSDP2 (mmswin.FSDP2Strategy: one shard group
# per Swin block, per patch merging, per stage and the root; every block
# checkpointed), mixed precision; everything else as the ZeRO-1 config.
# tools/analysis_tools/estimate_memory.py on 8 GPUs: 16.7 GiB per GPU (ZeRO-1:
# 35.1), so it fits 8 x 40 GiB with room to spare, and 24 GiB GPUs.
# Train with tools/dist_train.sh as usual: runner_type selects mmengine's
# FlexibleRunner.
_base_ = ('./cascade-mask-rcnn_swinv2-g-w16_fpn_giou-4conv1f_'
          'amp-cp-zero1-ms-crop-3x_coco.py')

optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=0.0001,
                                    betas=(0.9, 0.999), weight_decay=0.05))
custom_hooks = []
runner_type = 'FlexibleRunner'
strategy = dict(type='mmswin.FSDP2Strategy')
