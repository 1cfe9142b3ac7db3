# Cascade Mask R-CNN + SwinV2-G for 8 x 40 GiB GPUs: parameters, gradients
# and AdamW state sharded over the 8 processes by FSDP2 (mmswin.FSDP2Strategy:
# one shard group per Swin block, per patch merging, per stage and the root;
# every block checkpointed), mixed precision. Everything else as the ZeRO-1
# config for 8 x 80 GiB (tools/analysis_tools/estimate_memory.py: ZeRO-1
# keeps 24 GB of parameters and gradients per GPU and does not fit 40 GiB).
# Train with tools/dist_train.sh as usual: runner_type selects mmengine's
# FlexibleRunner.
_base_ = ('./cascade-mask-rcnn_swinv2-g-w16_fpn_giou-4conv1f_'
          'amp-cp-zero1-ms-crop-3x_coco.py')

optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=0.0001,
                                    betas=(0.9, 0.999), weight_decay=0.05))
custom_hooks = []
runner_type = 'FlexibleRunner'
strategy = dict(type='mmswin.FSDP2Strategy')
