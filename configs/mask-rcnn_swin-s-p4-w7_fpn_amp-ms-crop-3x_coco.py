# mask-rcnn_swin-s-p4-w7_fpn_ms-crop-3x_coco with native automatic mixed precision (the official
# runs used apex O1): fp16 autocast and a dynamic loss scale.
_base_ = './mask-rcnn_swin-s-p4-w7_fpn_ms-crop-3x_coco.py'

optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic')
