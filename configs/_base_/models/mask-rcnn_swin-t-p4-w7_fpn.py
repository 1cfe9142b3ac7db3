# Mask R-CNN with a Swin-T (patch 4, window 7) backbone, as in the official
# detection repo; every other setting is mmdet's Mask R-CNN R-50-FPN.
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py', './swin-t-p4-w7.py']

model = dict(
    backbone=_base_.swin_t_backbone,
    neck=dict(in_channels=_base_.swin_t_channels))
