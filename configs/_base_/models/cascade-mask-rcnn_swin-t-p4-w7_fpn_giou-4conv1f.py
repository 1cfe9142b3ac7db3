# Cascade Mask R-CNN with a Swin-T backbone and the official detection
# repo's "giou_4conv1f" box heads: per stage 4 shared 3x3 convs (256 ch,
# SyncBN) + 1 shared fc (1024), class-specific GIoU regression on decoded
# boxes. mmdet's cascade base already has the per-stage target stds, the
# stage loss weights (1, 0.5, 0.25), IoU thresholds 0.5/0.6/0.7, RPN
# SmoothL1 (beta 1/9) and 2000 training proposals.
_base_ = ['mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py', './swin-t-p4-w7.py']

_stage_target_stds = ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
                      [0.033, 0.033, 0.067, 0.067])
model = dict(
    backbone=_base_.swin_t_backbone,
    neck=dict(in_channels=_base_.swin_t_channels),
    roi_head=dict(bbox_head=[
        dict(
            type='ConvFCBBoxHead',
            num_shared_convs=4,
            num_shared_fcs=1,
            in_channels=256,
            conv_out_channels=256,
            fc_out_channels=1024,
            roi_feat_size=7,
            num_classes=80,
            bbox_coder=dict(
                type='DeltaXYWHBBoxCoder',
                target_means=[0., 0., 0., 0.],
                target_stds=stds),
            reg_class_agnostic=False,
            reg_decoded_bbox=True,
            norm_cfg=dict(type='SyncBN', requires_grad=True),
            loss_cls=dict(
                type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type='GIoULoss', loss_weight=10.0))
        for stds in _stage_target_stds
    ]))
del _stage_target_stds
