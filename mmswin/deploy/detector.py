"""A two-stage detector (Mask R-CNN, Cascade Mask R-CNN, Faster R-CNN) as
one traceable graph with a dynamic batch: images and their sizes in; per
image a fixed number of detection rows out, padded as TensorRT's
EfficientNMS pads them (``num_dets``, ``boxes``, ``scores``, ``labels``,
``masks``).

mmdet's test path branches on data (``nonzero``, empty checks, per-image
Python loops) and calls compiled mmcv kernels. This wrapper runs the same
steps with mmdet's own modules and functions (heads, prior generators, box
coders, ``regress_by_class``, ``map_roi_levels``) on the whole batch and
replaces only the data-dependent glue:

- a filter (``score > thr``, ``min_bbox_size``) becomes a score of ``-inf``
  that NMS drops, as mmdet's filter drops the box;
- mmdet's ``batched_nms`` offset trick is computed the same way, per image
  (offsets from the largest coordinate of the image's boxes that pass the
  filter); images are NMS's batch, as in ONNX's ``NonMaxSuppression``;
- each image keeps a fixed number of proposals and detections, the rows past
  its count marked invalid (proposals) or zero (detections);
- boxes are clipped to each image's own size (``image_sizes``), as mmdet
  clips to each image's ``img_shape``, not to the padded batch;
- RoIs are pooled level by level without mmdet's skip of empty levels.

So the wrapper's eager outputs are mmdet's outputs on the same padded batch
(a test checks it), and the exported graph computes them with ONNX's
NonMaxSuppression and RoiAlign.
"""
from typing import List, Tuple

import torch
import torch.nn as nn
from mmdet.structures.bbox import get_box_tensor

from .ops import nms, roi_align
from .preprocess import ImagePreprocess

NO_THRESHOLD = float('-inf')


def offset_nms(boxes: torch.Tensor, scores: torch.Tensor,
               groups: torch.Tensor, iou_threshold: float,
               score_threshold: float,
               max_num: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """mmdet's ``batched_nms`` (``class_agnostic=False``) on each image:
    NMS within each group, by shifting each group's boxes by ``group *
    (max_coord + 1)``, ``max_coord`` the image's largest coordinate.

    Args:
        boxes: ``(B, N, 4)``; scores: ``(B, N)``, ``-inf`` for filtered
            boxes; groups: ``(B, N)`` or ``(N,)`` class or level index.

    Returns:
        ``(B, max_num)`` kept indices per image by decreasing score (0 past
        the image's count) and ``(B,)`` the counts.
    """
    passing = (scores > score_threshold)[..., None]
    # boxes are clipped to the image (>= 0): 0 is neutral for the maximum
    max_coordinate = torch.where(passing, boxes, 0).amax(dim=(1, 2))
    offsets = groups.to(boxes) * (max_coordinate[:, None] + 1)
    return nms(boxes + offsets[..., None], scores, iou_threshold,
               score_threshold, max_num)


def check_nms_cfg(nms_cfg: dict, where: str) -> float:
    """The IoU threshold of an ``nms`` config; other NMS kinds refuse."""
    kind = nms_cfg.get('type', 'nms')
    if kind != 'nms' or nms_cfg.get('class_agnostic', False):
        raise NotImplementedError(
            f'{where}: only plain class-wise NMS (type="nms") exports, got '
            f'{dict(nms_cfg)}')
    return float(nms_cfg['iou_threshold'])


def decode_boxes(coder, priors: torch.Tensor, deltas: torch.Tensor,
                 bounds: torch.Tensor) -> torch.Tensor:
    """``coder.decode(priors, deltas, max_shape=img_shape)`` with each row's
    own image size.

    Args:
        priors: ``(..., 4)``; deltas: ``(..., coder.encode_size)``.
        bounds: ``(w, h, w, h)`` of each row's image, broadcastable to the
            boxes ``(..., 4)``.

    mmdet decodes ``(N, 4)`` rows of one image and clips to its
    ``img_shape``: here every row is decoded flat (mmdet's 2-D path, not its
    batched ONNX one), then clipped the same way to its own image.
    """
    boxes = get_box_tensor(coder.decode(
        priors.reshape(-1, 4), deltas.reshape(-1, coder.encode_size)))
    boxes = boxes.reshape(priors.shape)
    if getattr(coder, 'clip_border', True):
        boxes = torch.minimum(boxes.clamp(min=0), bounds)
    return boxes


def gather_rows(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values[b, index[b, k]]`` for ``values`` ``(B, N, ...)`` and
    ``index`` ``(B, K)``: ``(B, K, ...)``."""
    trailing = values.shape[2:]
    index = index.reshape(*index.shape, *([1] * len(trailing)))
    return values.gather(1, index.expand(*index.shape[:2], *trailing))


def extract_rois(extractor: nn.Module, feats: Tuple[torch.Tensor, ...],
                 rois: torch.Tensor) -> torch.Tensor:
    """mmdet's ``SingleRoIExtractor`` on ``rois`` ``(K, 5)`` (``batch_index,
    x1, y1, x2, y2``): each RoI is pooled at the level ``map_roi_levels``
    gives it (without mmdet's branch on an empty level)."""
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
        # NonZero of a float mask: TensorRT's NonZero takes no bool
        index = torch.nonzero((levels == level).to(rois.dtype)).squeeze(1)
        pooled = pooled.index_put((index, ), roi_align(
            feats[level], rois[index], *layer.output_size,
            float(layer.spatial_scale), int(layer.sampling_ratio),
            bool(layer.aligned)))
    return pooled


def as_rois(boxes: torch.Tensor) -> torch.Tensor:
    """``(B, K, 4)`` boxes per image as ``(B * K, 5)`` RoIs."""
    batch, count = boxes.shape[0], boxes.shape[1]
    index = torch.arange(batch, device=boxes.device).to(boxes)
    index = index[:, None, None].expand(batch, count, 1)
    return torch.cat([index, boxes], 2).reshape(-1, 5)


class TwoStageDetectorExport(nn.Module):
    """Inference of an mmdet two-stage detector on a batch of images of
    different sizes, traceable with a dynamic batch, height and width.

    Args:
        detector: A built mmdet ``TwoStageDetector`` (RPN + a
            ``StandardRoIHead`` or ``CascadeRoIHead``; Mask R-CNN, Cascade
            Mask R-CNN, Faster R-CNN), in eval mode.

    Shape:
        - images: ``(B, 3, H, W)`` float, pixels as the test pipeline loads
          them (after its resize), each image at the top left; what lies
          outside an image's size is ignored (set to mmdet's padding), see
          :func:`mmswin.deploy.pack_images`.
        - image_sizes: ``(B, 2)`` int64, each image's ``(h, w)`` (mmdet's
          ``img_shape``).
        - num_dets: ``(B,)`` int64, detections per image.
        - boxes: ``(B, K, 4)`` ``x1, y1, x2, y2`` in input pixels; scores
          ``(B, K)``; labels ``(B, K)`` int64; masks ``(B, K, M, M)`` mask
          probabilities in each box (Mask R-CNN's ``M = 28``; only with a
          mask head), to paste with :func:`mmswin.deploy.paste_masks`.
          ``K = test_cfg.rcnn.max_per_img``; each image's rows are by
          decreasing score, rows past ``num_dets`` are 0.
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
        for key, cfg in (('rpn', self.rpn_cfg), ('rcnn', self.rcnn_cfg)):
            if cfg.get('max_per_img', 0) <= 0:
                raise NotImplementedError(
                    f'test_cfg.{key}.max_per_img must be > 0 for a fixed '
                    f'number of rows per image, got {cfg.get("max_per_img")}')

    def forward(self, images: torch.Tensor,
                image_sizes: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        feats = self.detector.extract_feat(
            self.preprocess(images, image_sizes))
        # (w, h, w, h) of each image: the clipping bounds of its boxes
        bounds = image_sizes.flip(1).repeat(1, 2).to(images.dtype)
        proposals, valid = self.rpn(feats, bounds)
        rois = as_rois(proposals)
        roi_bounds = bounds.repeat_interleave(proposals.shape[1], dim=0)
        roi_head = self.detector.roi_head
        if self.cascade:
            rois, cls_score, bbox_pred = self.cascade_stages(
                feats, rois, roi_bounds)
            bbox_head = roi_head.bbox_head[-1]
        else:
            bbox_head = roi_head.bbox_head
            cls_score, bbox_pred = bbox_head(
                extract_rois(roi_head.bbox_roi_extractor, feats, rois))
        num_dets, boxes, scores, labels = self.detections(
            bbox_head, rois, valid, cls_score, bbox_pred, bounds)
        if not self.with_mask:
            return num_dets, boxes, scores, labels
        return num_dets, boxes, scores, labels, self.masks(
            feats, boxes, labels, num_dets)

    # -- RPN ---------------------------------------------------------------
    def rpn(self, feats: Tuple[torch.Tensor, ...], bounds: torch.Tensor
            ) -> Tuple[torch.Tensor, torch.Tensor]:
        """mmdet's ``RPNHead.predict`` for each image.

        Returns:
            ``(B, P, 4)`` proposals and ``(B, P)`` their validity, with ``P
            = test_cfg.rpn.max_per_img``: mmdet's ``K <= P`` proposals
            first, then copies of a box that no detection may come from.
        """
        head, cfg = self.detector.rpn_head, self.rpn_cfg
        cls_scores, bbox_preds = head(feats)
        batch = cls_scores[0].shape[0]
        priors = head.prior_generator.grid_priors(
            [s.shape[-2:] for s in cls_scores], dtype=feats[0].dtype,
            device=feats[0].device)
        nms_pre = cfg.get('nms_pre', -1)
        all_scores, all_deltas, all_priors, all_levels = [], [], [], []
        for level, (cls_score, bbox_pred, prior) in enumerate(
                zip(cls_scores, bbox_preds, priors)):
            deltas = bbox_pred.permute(0, 2, 3, 1).reshape(
                batch, -1, head.bbox_coder.encode_size)
            logits = cls_score.permute(0, 2, 3, 1).reshape(
                batch, -1, head.cls_out_channels)
            scores = (logits.sigmoid() if head.use_sigmoid_cls else
                      logits.softmax(-1)[..., :-1]).reshape(batch, -1)
            prior = prior.expand(batch, *prior.shape)
            if nms_pre > 0:  # mmdet sorts and keeps the nms_pre best
                scores, top = scores.topk(
                    torch.sym_min(nms_pre, scores.shape[1]), dim=1)
                deltas, prior = gather_rows(deltas, top), gather_rows(
                    prior, top)
            all_scores.append(scores)
            all_deltas.append(deltas)
            all_priors.append(prior)
            all_levels.append(torch.full_like(scores[0], level,
                                              dtype=torch.long))
        boxes = decode_boxes(head.bbox_coder, torch.cat(all_priors, 1),
                             torch.cat(all_deltas, 1), bounds[:, None])
        scores = torch.cat(all_scores, 1)
        min_size = cfg.get('min_bbox_size', -1)
        if min_size >= 0:
            width, height = (boxes[..., 2] - boxes[..., 0],
                             boxes[..., 3] - boxes[..., 1])
            scores = scores.masked_fill(
                (width <= min_size) | (height <= min_size), NO_THRESHOLD)
        # A fixed number of proposals keeps the RoI heads' shapes static
        # (mmdet's box decoder branches on an empty input).
        keep, count = offset_nms(boxes, scores, torch.cat(all_levels),
                                 self.rpn_iou, NO_THRESHOLD, cfg.max_per_img)
        slots = torch.arange(cfg.max_per_img, device=keep.device)
        return gather_rows(boxes, keep), slots < count[:, None]

    # -- RoI heads ---------------------------------------------------------
    def cascade_stages(self, feats, rois: torch.Tensor,
                       roi_bounds: torch.Tensor
                       ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``CascadeRoIHead._refine_roi``: the last stage's RoIs and box
        deltas, and the stages' mean class logits (``roi_bounds``: each
        RoI's image bounds ``(w, h, w, h)``)."""
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
                refined = get_box_tensor(bbox_head.regress_by_class(
                    rois[:, 1:], labels, bbox_pred, dict(img_shape=None)))
                if getattr(bbox_head.bbox_coder, 'clip_border', True):
                    refined = torch.minimum(refined.clamp(min=0),
                                            roi_bounds)
                rois = torch.cat([rois[:, :1], refined], 1)
        mean_logits = sum(stage_logits) / float(len(stage_logits))
        return rois, mean_logits, bbox_pred

    def detections(self, bbox_head: nn.Module, rois: torch.Tensor,
                   valid: torch.Tensor, cls_score: torch.Tensor,
                   bbox_pred: torch.Tensor,
                   bounds: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """``BBoxHead._predict_by_feat_single`` + ``multiclass_nms`` per
        image: ``num_dets (B,)``, ``boxes (B, K, 4)``, ``scores (B, K)``,
        ``labels (B, K)``, zero past ``num_dets``."""
        cfg = self.rcnn_cfg
        batch, num_rois = valid.shape
        scores = (bbox_head.loss_cls.get_activation(cls_score)
                  if bbox_head.custom_cls_channels else cls_score.softmax(-1))
        num_classes = scores.shape[1] - 1
        reg_classes = 1 if bbox_head.reg_class_agnostic else num_classes
        boxes = decode_boxes(
            bbox_head.bbox_coder,
            rois[:, 1:].reshape(batch, num_rois, 1, 4).expand(
                batch, num_rois, reg_classes, 4),
            bbox_pred.reshape(batch, num_rois, reg_classes, -1),
            bounds[:, None, None])
        boxes = boxes.expand(batch, num_rois, num_classes, 4).reshape(
            batch, -1, 4)
        scores = scores[:, :-1].reshape(batch, num_rois, num_classes)
        scores = scores.masked_fill(~valid[..., None], NO_THRESHOLD)
        scores = scores.reshape(batch, -1)
        labels = torch.arange(num_classes, device=scores.device).repeat(
            num_rois)
        keep, count = offset_nms(boxes, scores, labels, self.rcnn_iou,
                                 float(cfg.score_thr), cfg.max_per_img)
        found = (torch.arange(cfg.max_per_img, device=keep.device)
                 < count[:, None])
        boxes = torch.where(found[..., None], gather_rows(boxes, keep), 0)
        scores = torch.where(found, scores.gather(1, keep), 0)
        labels = torch.where(found, keep.remainder(num_classes), 0)
        return count, boxes, scores, labels

    def masks(self, feats, boxes: torch.Tensor, labels: torch.Tensor,
              num_dets: torch.Tensor) -> torch.Tensor:
        """Mask probabilities ``(B, K, M, M)`` of each detection's class
        (the mean over the stages of a cascade, as mmdet's
        ``merge_aug_masks``), 0 past ``num_dets``."""
        roi_head = self.detector.roi_head
        rois = as_rois(boxes)
        flat_labels = labels.reshape(-1)
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
                logits = logits[torch.arange(logits.shape[0]), flat_labels]
            else:
                logits = logits[:, 0]
            probabilities.append(logits.sigmoid())
        masks = torch.stack(probabilities).mean(dim=0)
        masks = masks.reshape(*boxes.shape[:2], *masks.shape[1:])
        found = (torch.arange(boxes.shape[1], device=boxes.device)
                 < num_dets[:, None])
        return torch.where(found[..., None, None], masks, 0)
