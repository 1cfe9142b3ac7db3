"""Traceable inference wrappers for mmseg segmentors and for the backbone +
neck of any mmdet/mmseg model. Each takes images as the test pipeline loads
them and runs the config's preprocessing in the graph."""
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .preprocess import ImagePreprocess


class SegmentorExport(nn.Module):
    """mmseg ``EncoderDecoder`` whole-image inference: the logits of
    ``model.predict`` for unpadded images, before the argmax.

    Args:
        segmentor: A built mmseg ``EncoderDecoder`` in eval mode, with
            ``test_cfg.mode='whole'``.

    Shape:
        - images: ``(B, 3, H, W)`` float pixels as loaded.
        - logits: ``(B, num_classes, H, W)``.
    """

    def __init__(self, segmentor: nn.Module) -> None:
        super().__init__()
        mode = (segmentor.test_cfg or {}).get('mode', 'whole')
        if mode != 'whole':
            raise NotImplementedError(
                f"test_cfg.mode={mode!r} does not export (its windows "
                "depend on the image size); export with "
                "--cfg-options model.test_cfg.mode=whole")
        self.preprocess = ImagePreprocess(segmentor.data_preprocessor)
        self.segmentor = segmentor

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[2], images.shape[3]
        padded = self.preprocess(images)
        logits = self.segmentor.decode_head(
            self.segmentor.extract_feat(padded))
        # mmseg resizes to the padded input, then crops the padding
        logits = F.interpolate(
            logits, size=padded.shape[2:], mode='bilinear',
            align_corners=self.segmentor.decode_head.align_corners)
        return logits[:, :, :height, :width]


class FeaturesExport(nn.Module):
    """The backbone and neck (``model.extract_feat``) of an mmdet or mmseg
    model, e.g. Swin + FPN of a Mask R-CNN.

    Shape:
        - images: ``(B, 3, H, W)`` float pixels as loaded.
        - features: one ``(B, C_i, H_i, W_i)`` per level, of the image after
          the config's padding.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.preprocess = ImagePreprocess(model.data_preprocessor)
        self.model = model

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return tuple(self.model.extract_feat(self.preprocess(images)))
