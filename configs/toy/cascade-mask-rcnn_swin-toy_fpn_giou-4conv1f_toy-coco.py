# A CPU-sized Cascade Mask R-CNN on the toy COCO shapes: the paper's
# giou-4conv1f cascade, shrunk by `toy_model`, with plain BN in the box
# heads (SyncBN needs CUDA once several processes train).
_base_ = [
    '../_base_/models/cascade-mask-rcnn_swin-t-p4-w7_fpn_giou-4conv1f.py',
    './_base_/toy-coco_swin.py',
]

model = dict(
    _base_.toy_model,
    roi_head=dict(
        _base_.toy_model.roi_head,
        bbox_head=[
            dict(head, in_channels=32, conv_out_channels=32,
                 fc_out_channels=128, num_classes=3,
                 norm_cfg=dict(type='BN', requires_grad=True))
            for head in _base_.model.roi_head.bbox_head
        ]),
    train_cfg=dict(
        _base_.toy_model.train_cfg,
        rcnn=[
            dict(stage, sampler=dict(stage.sampler, num=64))
            for stage in _base_.model.train_cfg.rcnn
        ]))
