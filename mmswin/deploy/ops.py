"""NMS and RoIAlign as exportable custom ops, with their ONNX translations.

mmcv's ``nms`` and ``roi_align`` call compiled extensions that
``torch.export`` cannot trace. ``mmswin::nms`` and ``mmswin::roi_align``
wrap them as ``torch.library`` ops: eagerly they run mmcv's kernels (so the
deploy graph computes what mmdet computes), and in the ONNX graph they become
the standard ``NonMaxSuppression`` (images as its batch; its
``(batch, class, box)`` rows scattered into a fixed ``(B, max_num)`` index
table) and ``RoiAlign`` nodes, which ONNX Runtime and OpenVINO implement
with the same arithmetic (greedy NMS with ``IoU > threshold``;
Detectron-style RoIAlign, ``half_pixel`` for ``aligned=True``). Pass
:data:`ONNX_TRANSLATIONS` as ``torch.onnx.export(...,
custom_translation_table=...)``.
"""
from typing import Tuple

import torch
from mmcv.ops import nms as mmcv_nms
from mmcv.ops import roi_align as mmcv_roi_align
from onnxscript import opset18 as op
from onnxscript.onnx_types import INT64


@torch.library.custom_op('mmswin::nms', mutates_args=())
def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float,
        score_threshold: float,
        max_num: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Greedy NMS over each image's boxes with ``score > score_threshold``.

    Args:
        boxes: ``(B, N, 4)`` as ``x1, y1, x2, y2``.
        scores: ``(B, N)``.
        iou_threshold: A box is suppressed by a kept box when their IoU is
            greater than this.
        score_threshold: Boxes scoring at or below it are dropped first.
        max_num: Keep at most this many per image (> 0).

    Returns:
        ``(B, max_num)`` int64 indices into each image's boxes, by
        decreasing score, 0 past the image's count; ``(B,)`` int64 counts.
    """
    keep = boxes.new_zeros((boxes.shape[0], max_num), dtype=torch.int64)
    counts = boxes.new_zeros((boxes.shape[0], ), dtype=torch.int64)
    for image in range(boxes.shape[0]):
        valid = torch.nonzero(scores[image] > score_threshold).squeeze(1)
        _, kept = mmcv_nms(boxes[image, valid], scores[image, valid],
                           iou_threshold, max_num=max_num)
        keep[image, :len(kept)] = valid[kept]
        counts[image] = len(kept)
    return keep, counts


@nms.register_fake
def _nms_fake(boxes, scores, iou_threshold, score_threshold, max_num):
    return (boxes.new_empty((boxes.shape[0], max_num), dtype=torch.int64),
            boxes.new_empty((boxes.shape[0], ), dtype=torch.int64))


@torch.library.custom_op('mmswin::roi_align', mutates_args=())
def roi_align(features: torch.Tensor, rois: torch.Tensor, pooled_height: int,
              pooled_width: int, spatial_scale: float, sampling_ratio: int,
              aligned: bool) -> torch.Tensor:
    """mmcv's average RoIAlign.

    Args:
        features: ``(B, C, H, W)``.
        rois: ``(K, 5)`` as ``batch_index, x1, y1, x2, y2`` in image
            pixels.

    Returns:
        ``(K, C, pooled_height, pooled_width)``.
    """
    return mmcv_roi_align(features, rois, (pooled_height, pooled_width),
                          spatial_scale, sampling_ratio, 'avg', aligned)


@roi_align.register_fake
def _roi_align_fake(features, rois, pooled_height, pooled_width,
                    spatial_scale, sampling_ratio, aligned):
    return features.new_empty(
        (rois.shape[0], features.shape[1], pooled_height, pooled_width))


def _onnx_nms(boxes, scores, iou_threshold: float, score_threshold: float,
              max_num: int):
    """ONNX ``NonMaxSuppression`` with the images as its batch and one
    class, its ``(batch, class, box)`` rows scattered into ``(B,
    max_num)``."""
    selected = op.NonMaxSuppression(
        boxes, op.Unsqueeze(scores, [1]), op.Constant(value_ints=[max_num]),
        op.Constant(value_floats=[iou_threshold]),
        op.Constant(value_floats=[score_threshold]))
    image = op.Reshape(op.Slice(selected, [0], [1], [1]), [-1])
    box = op.Reshape(op.Slice(selected, [2], [3], [1]), [-1])
    batch = op.Slice(op.Shape(boxes), [0], [1], [0])
    images = op.Range(op.Constant(value_int=0), op.Squeeze(batch, [0]),
                      op.Constant(value_int=1))
    # The rows come image by image, each by decreasing score: a row's slot
    # is its index minus the number of rows of the images before it.
    row_image, each_image = op.Unsqueeze(image, [1]), op.Unsqueeze(images,
                                                                   [0])
    before = op.ReduceSum(op.Cast(op.Less(row_image, each_image),
                                  to=INT64.dtype), [0], keepdims=0)
    counts = op.ReduceSum(op.Cast(op.Equal(row_image, each_image),
                                  to=INT64.dtype), [0], keepdims=0)
    rows = op.Range(op.Constant(value_int=0),
                    op.Squeeze(op.Shape(image), [0]),
                    op.Constant(value_int=1))
    slot = op.Sub(rows, op.Gather(before, image))
    zeros = op.Expand(op.Constant(value_ints=[0]), op.Concat(
        batch, op.Constant(value_ints=[max_num]), axis=0))
    keep = op.ScatterND(zeros, op.Concat(row_image, op.Unsqueeze(slot, [1]),
                                         axis=1), box)
    return keep, counts


def _onnx_roi_align(features, rois, pooled_height: int, pooled_width: int,
                    spatial_scale: float, sampling_ratio: int,
                    aligned: bool):
    """ONNX ``RoiAlign`` (opset 16+): ``half_pixel`` is mmcv's
    ``aligned=True``."""
    batch_index = op.Cast(op.Reshape(op.Slice(rois, [0], [1], [1]), [-1]),
                          to=INT64.dtype)
    boxes = op.Slice(rois, [1], [5], [1])
    return op.RoiAlign(
        features, boxes, batch_index,
        coordinate_transformation_mode=(
            'half_pixel' if aligned else 'output_half_pixel'),
        mode='avg', output_height=pooled_height, output_width=pooled_width,
        sampling_ratio=sampling_ratio, spatial_scale=spatial_scale)


ONNX_TRANSLATIONS = {
    torch.ops.mmswin.nms.default: _onnx_nms,
    torch.ops.mmswin.roi_align.default: _onnx_roi_align,
}
