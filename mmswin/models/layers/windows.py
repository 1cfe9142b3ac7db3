"""Window partitioning, the cyclic shift and the shift mask.

Feature maps inside a stage are kept channels-last, ``(B, H, W, C)``, so that
partitioning is a view plus one copy and the per-token ops (LayerNorm, MLP)
run on contiguous rows.
"""
from functools import lru_cache
import torch
import torch.nn.functional as F

# Additive logit for token pairs that belong to different regions of a
# shifted window. Every official implementation uses -100: exp(-100) is below
# fp32 resolution next to the unmasked logits, and -100 stays finite in fp16.
SHIFT_MASK_VALUE = -100.0


def padded_size(size: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``size``."""
    return -(-size // multiple) * multiple


def pad_hw(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Zero-pad a ``(B, H, W, C)`` map at the bottom/right to ``height x width``."""
    pad_h, pad_w = height - x.shape[1], width - x.shape[2]
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, 0, 0, pad_w, 0, pad_h))


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """Split a map into non-overlapping windows.

    Args:
        x: ``(B, H, W, C)`` with H and W multiples of ``window_size``.

    Returns:
        ``(B * num_windows, window_size**2, C)``, windows in row-major order.
    """
    b, h, w, c = x.shape
    ws = window_size
    x = x.view(b, h // ws, ws, w // ws, ws, c).transpose(2, 3)
    return x.reshape(-1, ws * ws, c)


def window_reverse(windows: torch.Tensor, window_size: int, height: int,
                   width: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`.

    Args:
        windows: ``(B * num_windows, window_size**2, C)``.

    Returns:
        ``(B, height, width, C)``.
    """
    ws = window_size
    c = windows.shape[-1]
    x = windows.view(-1, height // ws, width // ws, ws, ws, c).transpose(2, 3)
    return x.reshape(-1, height, width, c)


@lru_cache(maxsize=64)
def _shift_mask_cpu(height: int, width: int, window_size: int,
                    shift_size: int) -> torch.Tensor:
    """``(num_windows, N, N)`` float mask; 0 where two tokens may attend."""
    region = torch.zeros(height, width)
    bounds = (slice(0, -window_size), slice(-window_size, -shift_size),
              slice(-shift_size, None))
    label = 0
    for hs in bounds:
        for ws in bounds:
            region[hs, ws] = label
            label += 1
    windows = window_partition(region[None, :, :, None], window_size)
    windows = windows.squeeze(-1)  # (num_windows, N)
    different = windows[:, None, :] != windows[:, :, None]
    return different.float() * SHIFT_MASK_VALUE


_device_cache: dict = {}


def _cached_on_device(key: tuple, build) -> torch.Tensor:
    """Per-device cache of derived tensors, bounded for varying input sizes."""
    value = _device_cache.get(key)
    if value is None:
        if len(_device_cache) >= 256:
            _device_cache.clear()
        value = _device_cache[key] = build()
    return value


def shift_window_mask(height: int, width: int, window_size: int,
                      shift_size: int, device: torch.device,
                      dtype: torch.dtype) -> torch.Tensor:
    """Cached additive mask for shifted-window attention.

    Derived from the shapes alone, never saved in checkpoints. Cached per
    (padded size, window, shift, device, dtype); the values (0 and -100) are
    exact in every float dtype, so the mask is the same under fp16/bf16.

    Returns:
        ``(num_windows, N, N)`` with ``N = window_size**2``.
    """
    key = ('shift', height, width, window_size, shift_size, str(device),
           dtype)
    return _cached_on_device(key, lambda: _shift_mask_cpu(
        height, width, window_size, shift_size).to(device=device, dtype=dtype))


def zero_padding(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Zero the bottom/right padding of a ``(B, Hp, Wp, C)`` map beyond
    ``height x width`` (out of place, so autograd and export see plain ops)."""
    hp, wp = x.shape[1], x.shape[2]
    if hp == height and wp == width:
        return x

    def build() -> torch.Tensor:
        pad = torch.ones(1, hp, wp, 1, dtype=torch.bool, device=x.device)
        pad[:, :height, :width] = False
        return pad

    key = ('pad', hp, wp, height, width, str(x.device))
    return x.masked_fill(_cached_on_device(key, build), 0)


def relative_position_index(window_size: int) -> torch.Tensor:
    """Index into a ``(2*ws-1)**2`` bias table for every pair of tokens.

    Returns:
        ``(N, N)`` long tensor with ``N = window_size**2``.
    """
    coords = torch.stack(torch.meshgrid(
        torch.arange(window_size), torch.arange(window_size), indexing='ij'))
    coords = coords.flatten(1)  # (2, N)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    rel = rel + (window_size - 1)
    return rel[..., 0] * (2 * window_size - 1) + rel[..., 1]


def shift_and_partition(x: torch.Tensor, window_size: int,
                        shift_size: int) -> torch.Tensor:
    """Roll a ``(B, H, W, C)`` map by ``-shift_size`` and split it into windows."""
    if shift_size:
        x = torch.roll(x, shifts=(-shift_size, -shift_size), dims=(1, 2))
    return window_partition(x, window_size)


def merge_and_unshift(windows: torch.Tensor, window_size: int,
                      shift_size: int, height: int,
                      width: int) -> torch.Tensor:
    """Inverse of :func:`shift_and_partition`; returns ``(B, H, W, C)``."""
    x = window_reverse(windows, window_size, height, width)
    if shift_size:
        x = torch.roll(x, shifts=(shift_size, shift_size), dims=(1, 2))
    return x
