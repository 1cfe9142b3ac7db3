# The official Swin detection schedule, 3x: as 1x, 36 epochs, lr x 0.1
# after epochs 27 and 33.
_base_ = './swin-adamw_1x.py'

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
_warmup, _steps = _base_.param_scheduler
param_scheduler = [
    _warmup,
    dict(_steps, end=max_epochs, milestones=[27, 33]),
]
del _warmup, _steps
