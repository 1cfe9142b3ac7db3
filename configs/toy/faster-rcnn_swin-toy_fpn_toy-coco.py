# A CPU-sized Faster R-CNN on the toy COCO shapes: the toy Mask R-CNN
# without its mask branch (boxes only), e.g. for the box-only full export.
_base_ = ['./mask-rcnn_swin-toy_fpn_toy-coco.py']

model = dict(
    type='FasterRCNN',
    roi_head=dict(mask_roi_extractor=None, mask_head=None))

val_evaluator = dict(metric='bbox')
test_evaluator = val_evaluator
