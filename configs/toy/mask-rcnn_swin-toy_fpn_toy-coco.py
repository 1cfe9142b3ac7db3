# A CPU-sized Mask R-CNN on the toy COCO shapes: `make demo` trains it in
# minutes. Same detector as the Swin-T paper config, shrunk by `toy_model`.
_base_ = [
    '../_base_/models/mask-rcnn_swin-t-p4-w7_fpn.py',
    './_base_/toy-coco_swin.py',
]

model = dict(
    _base_.toy_model,
    roi_head=dict(
        _base_.toy_model.roi_head,
        bbox_head=dict(in_channels=32, fc_out_channels=128, num_classes=3)),
    train_cfg=dict(
        _base_.toy_model.train_cfg,
        rcnn=dict(sampler=dict(num=64))))
