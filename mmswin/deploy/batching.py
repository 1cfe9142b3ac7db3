"""Host side of the batched detector graph: images of different sizes into
one padded batch (as mmdet's data preprocessor pads them), and the graph's
padded per-image outputs back into one result per image."""
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn

from .preprocess import ImagePreprocess

ImageLike = Union[np.ndarray, torch.Tensor]
DETECTION_KEYS = ('boxes', 'scores', 'labels', 'masks')


def _as_chw(image: ImageLike, index: int) -> np.ndarray:
    """One image as a ``(3, h, w)`` float32 array."""
    array = (image.detach().cpu().numpy()
             if isinstance(image, torch.Tensor) else np.asarray(image))
    if array.ndim == 3 and array.shape[0] == 3:
        return array.astype(np.float32, copy=False)  # the pipeline's layout
    if array.ndim == 3 and array.shape[2] == 3:
        return array.transpose(2, 0, 1).astype(np.float32)
    raise ValueError(
        f'image {index} must be (3, h, w) or (h, w, 3) with 3 colour '
        f'channels, got shape {array.shape}; convert grey or RGBA images '
        'to 3 channels first')


def pack_images(images: Sequence[ImageLike],
                data_preprocessor: nn.Module) -> Tuple[np.ndarray,
                                                       np.ndarray]:
    """Images of any sizes as one batch for an exported graph.

    Each image goes to the top-left of the batch; the rest is filled with
    each channel's mean (input channel order), i.e. the value the graph's
    normalisation turns into mmdet's/mmseg's padding value (0), so the graph
    sees what ``model.predict`` sees on the batch.

    Args:
        images: ``(3, h, w)`` or ``(h, w, 3)`` arrays or tensors, pixels as
            the test pipeline gives them (after its resize, before
            normalisation).
        data_preprocessor: The model's ``data_preprocessor`` (or an
            :class:`ImagePreprocess` of it).

    Returns:
        ``batch`` ``(B, 3, H, W)`` float32 with ``H``, ``W`` the largest
        sides, and ``image_sizes`` ``(B, 2)`` int64, each image's ``(h, w)``.
    """
    if len(images) == 0:
        raise ValueError('pack_images needs at least one image, got none')
    pre = (data_preprocessor if isinstance(data_preprocessor, ImagePreprocess)
           else ImagePreprocess(data_preprocessor))
    arrays = [_as_chw(image, i) for i, image in enumerate(images)]
    sizes = np.array([a.shape[1:] for a in arrays], dtype=np.int64)
    height, width = sizes.max(axis=0)
    fill = pre.input_pad_value().numpy().astype(np.float32)
    batch = np.empty((len(arrays), 3, height, width), np.float32)
    batch[:] = fill[None, :, None, None]
    for out, array in zip(batch, arrays):
        out[:, :array.shape[1], :array.shape[2]] = array
    return batch, sizes


def unpack_detections(outputs: Dict[str, np.ndarray]
                      ) -> List[Dict[str, np.ndarray]]:
    """The detector graph's padded outputs as one dict per image.

    Args:
        outputs: Graph outputs by name: ``num_dets`` ``(B,)``, ``boxes``
            ``(B, K, 4)``, ``scores`` ``(B, K)``, ``labels`` ``(B, K)`` and,
            for mask models, ``masks`` ``(B, K, M, M)``.

    Returns:
        Per image, ``boxes`` ``(n, 4)``, ``scores`` ``(n,)``, ``labels``
        ``(n,)`` (and ``masks`` ``(n, M, M)``) with ``n = num_dets[i]``.
    """
    missing = [k for k in ('num_dets', *DETECTION_KEYS[:3])
               if k not in outputs]
    if missing:
        raise KeyError(f'detector outputs lack {missing} (got '
                       f'{sorted(outputs)}); is this a full detector graph '
                       'of this version?')
    counts = np.asarray(outputs['num_dets']).reshape(-1)
    keys = [k for k in DETECTION_KEYS if k in outputs]
    return [{k: np.asarray(outputs[k])[i, :int(n)] for k in keys}
            for i, n in enumerate(counts)]
