# The official Swin detection schedule, 1x: AdamW (lr 1e-4, wd 0.05) for
# 16 images per iteration (2 per GPU x 8), no weight decay on position
# tables and norms, 500-iteration linear warmup from 0.001 x lr, lr x 0.1
# after epochs 8 and 11 of 12.
_base_ = 'mmdet::_base_/schedules/schedule_1x.py'

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[8, 11], gamma=0.1),
]
optim_wrapper = dict(
    optimizer=dict(
        _delete_=True,
        type='AdamW',
        lr=0.0001,
        betas=(0.9, 0.999),
        weight_decay=0.05),
    paramwise_cfg=dict(
        custom_keys={
            'absolute_pos_embed': dict(decay_mult=0.),
            'relative_position_bias_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.),
        }))
# lr above is for 16 images per iteration; pass --auto-scale-lr to
# tools/train.py to scale it linearly to another total batch size.
auto_scale_lr = dict(enable=False, base_batch_size=16)
