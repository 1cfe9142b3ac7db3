"""Adaptive average pooling that exports exactly at every input size.

``nn.AdaptiveAvgPool2d`` has no fixed kernel: its bins depend on the input
size. The dynamo exporter decomposes it into a pooling whose kernel and
stride are fixed at the traced size (wrong, or failing, at other sizes), and
mmdeploy's rewrite is wrong for some scale/size pairs (issue 13). Here the
bins are built in the graph from the input's shape, as two small averaging
matrices, so one exported graph pools every size exactly as PyTorch does.
"""
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn

from ..registry import MODELS

OutputSize = Union[int, None, Tuple[Optional[int], Optional[int]]]


def adaptive_pool_matrix(size, bins: int, dtype: torch.dtype,
                         device: torch.device) -> torch.Tensor:
    """Averaging weights of PyTorch's adaptive pooling along one side.

    Bin ``i`` of ``bins`` covers ``[floor(i * size / bins),
    ceil((i + 1) * size / bins))``, the same bins as ``adaptive_avg_pool2d``.

    Args:
        size: The side's length (an int, or a symbolic int while exporting).
        bins: Output length along that side.

    Returns:
        ``(bins, size)``: row ``i`` is ``1 / len(bin i)`` on bin ``i`` and 0
        elsewhere.
    """
    index = torch.arange(bins, device=device)
    start = torch.div(index * size, bins, rounding_mode='floor')
    end = torch.div((index + 1) * size + bins - 1, bins,
                    rounding_mode='floor')
    position = torch.arange(size, device=device)
    inside = (position[None, :] >= start[:, None]) & (
        position[None, :] < end[:, None])
    return inside.to(dtype) / (end - start)[:, None].to(dtype)


@MODELS.register_module()
class ExportableAdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    """``nn.AdaptiveAvgPool2d`` as matrix products with shape-derived bins.

    Same arguments and results as ``nn.AdaptiveAvgPool2d`` (to float
    rounding: the sums run in another order); unlike it, an exported graph
    stays correct at every input size. :func:`swap_adaptive_pools` puts it
    into a built model (mmseg's PPM in UPerHead and PSPHead) for export.

    Shape:
        - x: ``(B, C, H, W)`` or ``(C, H, W)``.
        - output: ``(B, C, h, w)`` or ``(C, h, w)`` with ``(h, w)`` the
          output size (``None`` keeps that side).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in (3, 4):
            raise ValueError('input of ExportableAdaptiveAvgPool2d must be '
                             f'(B, C, H, W) or (C, H, W), got shape '
                             f'{tuple(x.shape)}')
        out_h, out_w = _pair(self.output_size)
        height, width = x.shape[-2], x.shape[-1]
        if out_w is not None:  # (..., H, W) @ (W, w) -> (..., H, w)
            x = x @ adaptive_pool_matrix(width, out_w, x.dtype, x.device).T
        if out_h is not None:  # (h, H) @ (..., H, w) -> (..., h, w)
            x = adaptive_pool_matrix(height, out_h, x.dtype, x.device) @ x
        return x


def _pair(size: OutputSize) -> Tuple[Optional[int], Optional[int]]:
    if isinstance(size, (tuple, list)):
        return size[0], size[1]
    return size, size


def swap_adaptive_pools(model: nn.Module) -> int:
    """Replace every ``nn.AdaptiveAvgPool2d`` in ``model`` (in place) by an
    :class:`ExportableAdaptiveAvgPool2d` of the same output size.

    Returns:
        How many modules were replaced.
    """
    swapped = 0
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is nn.AdaptiveAvgPool2d:
                setattr(parent, name,
                        ExportableAdaptiveAvgPool2d(child.output_size))
                swapped += 1
    return swapped
