"""The config's data preprocessor (channel order, mean/std, padding) as a
graph module, so an exported model takes images as mmcv loads them."""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


class ImagePreprocess(nn.Module):
    """What mmdet's ``DetDataPreprocessor`` and mmseg's
    ``SegDataPreProcessor`` do to test images, in the same order: BGR to RGB
    (if configured), ``(x - mean) / std``, then zero padding at the bottom
    and right up to a multiple of ``pad_divisor``.

    Args:
        data_preprocessor: The built model's ``data_preprocessor``.

    Shape:
        - images: ``(B, 3, H, W)`` float, pixel values as loaded (0..255, the
          channel order of the test pipeline); optional ``image_sizes``
          ``(B, 2)`` int64.
        - output: ``(B, 3, H', W')`` with ``H'``, ``W'`` the padded sides.
    """

    def __init__(self, data_preprocessor: nn.Module) -> None:
        super().__init__()
        pre = data_preprocessor
        self.flip_channels = bool(getattr(
            pre, '_channel_conversion', getattr(pre, 'channel_conversion',
                                                False)))
        self.normalize = bool(getattr(pre, '_enable_normalize', False))
        if self.normalize:
            self.register_buffer('mean', pre.mean.detach().clone().view(
                1, -1, 1, 1), persistent=False)
            self.register_buffer('std', pre.std.detach().clone().view(
                1, -1, 1, 1), persistent=False)
        test_cfg = getattr(pre, 'test_cfg', None) or {}
        if test_cfg.get('size') is not None:
            raise NotImplementedError(
                'data_preprocessor.test_cfg.size pads test images to a fixed '
                'size, which a dynamic-shape export cannot express; remove '
                'it (--cfg-options model.data_preprocessor.test_cfg=None) '
                'and pass images of the size you want')
        # mmdet: pad_size_divisor / pad_value; mmseg: test_cfg.size_divisor
        self.pad_divisor = int(getattr(pre, 'pad_size_divisor', 1) or
                               test_cfg.get('size_divisor') or 1)
        self.pad_value = float(getattr(pre, 'pad_value',
                                       getattr(pre, 'pad_val', 0)))

    def forward(self, images: torch.Tensor,
                image_sizes: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Args: ``images`` ``(B, 3, H, W)``; ``image_sizes`` ``(B, 2)``
        each image's ``(h, w)`` in a batch of mixed sizes: outside it, the
        output is ``pad_value`` whatever the input holds there (as mmdet
        pads each image after normalising it)."""
        if self.flip_channels:
            images = images.flip(1)
        if self.normalize:
            images = (images - self.mean) / self.std
        if image_sizes is not None:
            rows = torch.arange(images.shape[2], device=images.device)
            cols = torch.arange(images.shape[3], device=images.device)
            inside = ((rows[None, :, None] < image_sizes[:, :1, None])
                      & (cols[None, None, :] < image_sizes[:, 1:, None]))
            images = torch.where(inside[:, None], images, self.pad_value)
        return F.pad(images, self.padding(images.shape[-2:]),
                     value=self.pad_value)

    def input_pad_value(self) -> torch.Tensor:
        """``(3,)`` pixel values, in the input's channel order, that become
        ``pad_value`` (mmdet/mmseg's padding, 0 by default) after the channel
        flip and the normalisation: ``mean + pad_value * std``. Images padded
        with it before :meth:`forward` equal images padded after it."""
        if not self.normalize:
            return torch.full((3, ), self.pad_value)
        value = (self.mean + self.pad_value * self.std).flatten()
        return value.flip(0) if self.flip_channels else value

    def padding(self, size: Tuple[int, int]) -> Tuple[int, int, int, int]:
        """``F.pad`` amounts (left, right, top, bottom) for an image of
        ``size = (H, W)``.

        The padded side is written as ``divisor * ceil(side / divisor)``
        (not ``side + (-side % divisor)``): while exporting, every size
        downstream is then a plain multiple of a symbol, which keeps the
        symbolic shape reasoning short.
        """
        height, width = size
        divisor = self.pad_divisor
        return (0, (width + divisor - 1) // divisor * divisor - width,
                0, (height + divisor - 1) // divisor * divisor - height)
