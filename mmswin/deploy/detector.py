"""A two-stage detector (Mask R-CNN, Cascade Mask R-CNN, Faster R-CNN) as
one traceable graph: image in; boxes, scores, labels and mask maps out.

mmdet's test path branches on data (``nonzero``, empty checks, per-image
Python loops) and calls compiled mmcv kernels. This wrapper runs the same
steps with mmdet's own modules and functions (heads, prior generators, box
coders, ``regress_by_class``, ``map_roi_levels``) and replaces only the
data-dependent glue:

- a filter (``score > thr``, ``min_bbox_size``) becomes a score of ``-inf``
  that NMS drops, as mmdet's filter drops the box;
- mmdet's ``batched_nms`` offset trick is computed the same way (offsets
  from the largest coordinate of the boxes that pass the filter);
- RoIs are pooled level by level without mmdet's skip of empty levels.

So the wrapper's eager outputs are mmdet's outputs (a test checks it), and the
exported graph computes them with ONNX's NonMaxSuppression and RoiAlign.
"""
from typing import Dict, List, Tuple

import torch
import torch.nn as nn
from mmdet.structures.bbox import get_box_tensor

from .ops import nms, roi_align
from .preprocess import ImagePreprocess

NO_THRESHOLD = float('-inf')


def offset_nms(boxes: torch.Tensor, scores: torch.Tensor,
               groups: torch.Tensor, iou_threshold: float,
               score_threshold: float, max_num: int) -> torch.Tensor:
    """mmdet's ``batched_nms`` (``class_agnostic=False``): NMS within each
    group, by shifting each group's boxes by ``group * (max_coord + 1)``.

    Args:
        boxes: ``(N, 4)``; scores: ``(N,)``, ``-inf`` for filtered boxes;
        groups: ``(N,)`` class or level index.

    Returns:
        ``(K,)`` kept indices by decreasing score, ``K <= max_num``.
    """
    passing = (scores > score_threshold)[:, None]
    # boxes are clipped to the image (>= 0): 0 is neutral for the maximum
    max_coordinate = torch.where(passing, boxes, 0).max()
    offsets = groups.to(boxes) * (max_coordinate + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold,
               score_threshold, max_num)


def check_nms_cfg(nms_cfg: dict, where: str) -> float:
    """The IoU threshold of an ``nms`` config; other NMS kinds refuse."""
    kind = nms_cfg.get('type', 'nms')
    if kind != 'nms' or nms_cfg.get('class_agnostic', False):
        raise NotImplementedError(
            f'{where}: only plain class-wise NMS (type="nms") exports, got '
            f'{dict(nms_cfg)}')
    return float(nms_cfg['iou_threshold'])


def extract_rois(extractor: nn.Module, feats: Tuple[torch.Tensor, ...],
                 rois: torch.Tensor) -> torch.Tensor:
    """mmdet's ``SingleRoIExtractor`` on ``rois`` ``(K, 5)``: each RoI is
    pooled at the level ``map_roi_levels`` gives it (without mmdet's
    branch on an empty level)."""
    layers = extractor.roi_layers
    for layer in layers:
        if getattr(layer, 'pool_mode', 'avg') != 'avg' or not hasattr(
                layer, 'aligned'):
            raise NotImplementedError(
                f'RoI layer {type(layer).__name__} does not export; only '
                "mmcv's RoIAlign with pool_mode='avg' does")
    levels = extractor.map_roi_levels(rois, len(layers))
    pooled = feats[0].new_zeros(rois.shape[0], extractor.out_channels,
                                *layers[0].output_size)
    for level, layer in enumerate(layers):
        index = torch.nonzero(levels == level).squeeze(1)
        pooled = pooled.index_put((index, ), roi_align(
            feats[level], rois[index], *layer.output_size,
            float(layer.spatial_scale), int(layer.sampling_ratio),
            bool(layer.aligned)))
    return pooled


def as_rois(boxes: torch.Tensor) -> torch.Tensor:
    """``(K, 4)`` boxes of image 0 as ``(K, 5)`` RoIs."""
    return torch.cat([boxes.new_zeros(boxes.shape[0], 1), boxes], 1)


class TwoStageDetectorExport(nn.Module):
    """Inference of an mmdet two-stage detector on one image, traceable with
    dynamic height and width.

    Args:
        detector: A built mmdet ``TwoStageDetector`` (RPN + a
            ``StandardRoIHead`` or ``CascadeRoIHead``), in eval mode.

    Shape:
        - images: ``(1, 3, H, W)`` float, pixels as the test pipeline loads
          them (after its resize).
        - boxes: ``(N, 4)`` ``x1, y1, x2, y2`` in input pixels; scores
          ``(N,)``; labels ``(N,)`` int64; masks ``(N, M, M)`` mask
          probabilities in each box (Mask R-CNN's ``M = 28``; only with a
          mask head), to paste with :func:`mmswin.deploy.paste_masks`.
          ``N <= test_cfg.rcnn.max_per_img``, by decreasing score.
    """

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        if not (hasattr(detector, 'rpn_head') and hasattr(
                detector, 'roi_head')):
            raise NotImplementedError(
                f'{type(detector).__name__} is not an RPN + RoI-head '
                'detector; export its backbone and neck with '
                "part='features' instead")
        self.preprocess = ImagePreprocess(detector.data_preprocessor)
        self.detector = detector
        roi_head = detector.roi_head
        self.cascade = hasattr(roi_head, 'num_stages')
        self.with_mask = bool(roi_head.with_mask)
        self.rpn_cfg = detector.test_cfg.rpn
        self.rcnn_cfg = detector.test_cfg.rcnn
        self.rpn_iou = check_nms_cfg(self.rpn_cfg.nms, 'test_cfg.rpn.nms')
        self.rcnn_iou = check_nms_cfg(self.rcnn_cfg.nms, 'test_cfg.rcnn.nms')

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        img_shape = (images.shape[2], images.shape[3])
        feats = self.detector.extract_feat(self.preprocess(images))
        proposals, valid = self.rpn(feats, img_shape)
        meta = dict(img_shape=img_shape)
        roi_head = self.detector.roi_head
        if self.cascade:
            rois, cls_score, bbox_pred = self.cascade_stages(
                feats, as_rois(proposals), meta)
            bbox_head = roi_head.bbox_head[-1]
        else:
            rois = as_rois(proposals)
            bbox_head = roi_head.bbox_head
            cls_score, bbox_pred = bbox_head(
                extract_rois(roi_head.bbox_roi_extractor, feats, rois))
        boxes, scores, labels = self.detections(bbox_head, rois, valid,
                                                cls_score, bbox_pred, meta)
        if not self.with_mask:
            return boxes, scores, labels
        return boxes, scores, labels, self.masks(feats, boxes, labels)

    # -- RPN ---------------------------------------------------------------
    def rpn(self, feats: Tuple[torch.Tensor, ...],
            img_shape: Tuple[int, int]
            ) -> Tuple[torch.Tensor, torch.Tensor]:
        """mmdet's ``RPNHead.predict`` for image 0.

        Returns:
            ``(P, 4)`` proposals and ``(P,)`` their validity, with ``P =
            test_cfg.rpn.max_per_img``: mmdet's ``K <= P`` proposals first,
            then copies of a box that no detection may come from.
        """
        head, cfg = self.detector.rpn_head, self.rpn_cfg
        cls_scores, bbox_preds = head(feats)
        priors = head.prior_generator.grid_priors(
            [s.shape[-2:] for s in cls_scores], dtype=feats[0].dtype,
            device=feats[0].device)
        nms_pre = cfg.get('nms_pre', -1)
        all_scores, all_deltas, all_priors, all_levels = [], [], [], []
        for level, (cls_score, bbox_pred, prior) in enumerate(
                zip(cls_scores, bbox_preds, priors)):
            deltas = bbox_pred[0].permute(1, 2, 0).reshape(
                -1, head.bbox_coder.encode_size)
            logits = cls_score[0].permute(1, 2, 0).reshape(
                -1, head.cls_out_channels)
            scores = (logits.sigmoid() if head.use_sigmoid_cls else
                      logits.softmax(-1)[:, :-1]).reshape(-1)
            if nms_pre > 0:  # mmdet sorts and keeps the nms_pre best
                scores, top = scores.topk(
                    torch.sym_min(nms_pre, scores.shape[0]))
                deltas, prior = deltas[top], prior[top]
            all_scores.append(scores)
            all_deltas.append(deltas)
            all_priors.append(prior)
            all_levels.append(torch.full_like(scores, level,
                                              dtype=torch.long))
        boxes = get_box_tensor(head.bbox_coder.decode(
            torch.cat(all_priors), torch.cat(all_deltas),
            max_shape=img_shape))
        scores = torch.cat(all_scores)
        min_size = cfg.get('min_bbox_size', -1)
        if min_size >= 0:
            width, height = (boxes[:, 2] - boxes[:, 0],
                             boxes[:, 3] - boxes[:, 1])
            scores = scores.masked_fill(
                (width <= min_size) | (height <= min_size), NO_THRESHOLD)
        keep = offset_nms(boxes, scores, torch.cat(all_levels), self.rpn_iou,
                          NO_THRESHOLD, cfg.max_per_img)
        # A fixed number of proposals keeps the RoI heads' shapes static
        # (mmdet's box decoder branches on an empty input).
        slots = torch.arange(cfg.max_per_img, device=keep.device)
        valid = slots < keep.shape[0]
        keep = torch.cat([keep, keep.new_zeros(cfg.max_per_img)])
        return boxes[keep[:cfg.max_per_img]], valid

    # -- RoI heads ---------------------------------------------------------
    def cascade_stages(self, feats, rois: torch.Tensor, meta: Dict
                       ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``CascadeRoIHead._refine_roi`` for image 0: the last stage's RoIs
        and box deltas, and the stages' mean class logits."""
        roi_head = self.detector.roi_head
        stage_logits: List[torch.Tensor] = []
        for stage in range(roi_head.num_stages):
            bbox_head = roi_head.bbox_head[stage]
            cls_score, bbox_pred = bbox_head(extract_rois(
                roi_head.bbox_roi_extractor[stage], feats, rois))
            stage_logits.append(cls_score)
            if stage < roi_head.num_stages - 1:
                if bbox_head.custom_activation:
                    cls_score = bbox_head.loss_cls.get_activation(cls_score)
                labels = cls_score[:, :-1].argmax(dim=1)
                refined = bbox_head.regress_by_class(rois[:, 1:], labels,
                                                     bbox_pred, meta)
                rois = torch.cat([rois[:, :1], get_box_tensor(refined)], 1)
        mean_logits = sum(stage_logits) / float(len(stage_logits))
        return rois, mean_logits, bbox_pred

    def detections(self, bbox_head: nn.Module, rois: torch.Tensor,
                   valid: torch.Tensor, cls_score: torch.Tensor,
                   bbox_pred: torch.Tensor,
                   meta: Dict) -> Tuple[torch.Tensor, ...]:
        """``BBoxHead._predict_by_feat_single`` + ``multiclass_nms``."""
        cfg = self.rcnn_cfg
        scores = (bbox_head.loss_cls.get_activation(cls_score)
                  if bbox_head.custom_cls_channels else cls_score.softmax(-1))
        num_rois = rois.shape[0]
        num_classes = scores.shape[1] - 1
        reg_classes = 1 if bbox_head.reg_class_agnostic else num_classes
        boxes = get_box_tensor(bbox_head.bbox_coder.decode(
            rois[:, 1:].repeat_interleave(reg_classes, dim=0),
            bbox_pred.reshape(-1, bbox_head.bbox_coder.encode_size),
            max_shape=meta['img_shape']))
        boxes = boxes.reshape(num_rois, reg_classes, 4).expand(
            num_rois, num_classes, 4).reshape(-1, 4)
        scores = scores[:, :-1].masked_fill(~valid[:, None], NO_THRESHOLD)
        scores = scores.reshape(-1)
        labels = torch.arange(num_classes, device=scores.device).repeat(
            num_rois)
        keep = offset_nms(boxes, scores, labels, self.rcnn_iou,
                          float(cfg.score_thr), cfg.max_per_img)
        return boxes[keep], scores[keep], labels[keep]

    def masks(self, feats, boxes: torch.Tensor,
              labels: torch.Tensor) -> torch.Tensor:
        """Mask probabilities ``(N, M, M)`` of each detection's class (the
        mean over the stages of a cascade, as mmdet's ``merge_aug_masks``)."""
        roi_head = self.detector.roi_head
        rois = as_rois(boxes)
        if self.cascade:
            heads = list(zip(roi_head.mask_roi_extractor, roi_head.mask_head))
        else:
            extractor = (roi_head.bbox_roi_extractor
                         if roi_head.share_roi_extractor else
                         roi_head.mask_roi_extractor)
            heads = [(extractor, roi_head.mask_head)]
        probabilities = []
        for extractor, mask_head in heads:
            logits = mask_head(extract_rois(extractor, feats, rois))
            if not mask_head.class_agnostic:
                logits = logits[torch.arange(logits.shape[0]), labels]
            else:
                logits = logits[:, 0]
            probabilities.append(logits.sigmoid())
        return torch.stack(probabilities).mean(dim=0)
