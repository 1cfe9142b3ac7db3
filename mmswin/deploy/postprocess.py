"""Turn the detector graph's outputs into mmdet's results: per-box mask
maps pasted into image-sized binary masks, boxes back to the original
image's scale."""
from typing import Sequence, Tuple

import torch


def paste_masks(masks: torch.Tensor, boxes: torch.Tensor,
                image_size: Tuple[int, int],
                threshold: float = 0.5) -> torch.Tensor:
    """mmdet's ``FCNMaskHead`` pasting of per-box mask probabilities.

    Args:
        masks: ``(N, M, M)`` probabilities (the graph's ``masks``).
        boxes: ``(N, 4)`` boxes in the pixels of ``image_size``.
        image_size: ``(H, W)`` of the image the boxes are in.
        threshold: ``mask_thr_binary`` of the config's ``test_cfg.rcnn``.

    Returns:
        ``(N, H, W)`` bool masks, as mmdet's ``pred_instances.masks``.
    """
    from mmdet.models.roi_heads.mask_heads.fcn_mask_head import _do_paste_mask
    height, width = image_size
    pasted = torch.zeros(len(masks), height, width, dtype=torch.bool)
    # one box at a time, around the box only, as mmdet does on CPU
    for i in range(len(masks)):
        chunk, region = _do_paste_mask(masks[i:i + 1, None], boxes[i:i + 1],
                                       height, width, skip_empty=True)
        pasted[(slice(i, i + 1), ) + region] = chunk >= threshold
    return pasted


def rescale_boxes(boxes: torch.Tensor,
                  scale_factor: Sequence[float]) -> torch.Tensor:
    """Boxes of the resized image back in the original image's pixels
    (mmdet's ``rescale=True``); ``scale_factor = (w_scale, h_scale)``."""
    w_scale, h_scale = scale_factor
    return boxes / boxes.new_tensor([w_scale, h_scale, w_scale, h_scale])
