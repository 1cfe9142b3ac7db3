"""Windows of a ``(B, H, W, C)`` map: padding, partition, the shift mask.

Everything here is computed from the input's shape with tensor ops, with
no Python branch on a size and no cache keyed by sizes, so the same code
runs eagerly, under ``torch.compile(dynamic=True)`` and in an exported
graph with dynamic height and width.
"""
import torch
import torch.nn.functional as F

# Additive logit for token pairs that belong to different regions of a
# shifted window. Every official implementation uses -100: exp(-100) is below
# fp32 resolution next to the unmasked logits, and -100 stays finite in fp16.
SHIFT_MASK_VALUE = -100.0


def padded_size(size: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``size``."""
    return -(-size // multiple) * multiple


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad a ``(B, H, W, C)`` map at the bottom and right so that H
    and W are multiples of ``multiple`` (a no-op pad when they are)."""
    # As a modulo: symbolic shapes (compile, export) know that -h % m lies
    # in [0, m), so the padded map provably covers the map; from the
    # equivalent (h + m - 1) // m * m they cannot derive it and an export
    # would silently specialise to the traced size.
    pad_h = -x.shape[1] % multiple
    pad_w = -x.shape[2] % multiple
    return F.pad(x, (0, 0, 0, pad_w, 0, pad_h))


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """Split a map into non-overlapping windows.

    Args:
        x: ``(B, H, W, C)`` with H and W multiples of ``window_size``.

    Returns:
        ``(B * num_windows, window_size**2, C)``, windows in row-major order.
    """
    # Explicit sizes, no -1: inferring one costs symbolic shapes (compile,
    # export) a divisibility proof per call.
    b, h, w, c = x.shape
    ws = window_size
    rows, cols = h // ws, w // ws
    x = x.view(b, rows, ws, cols, ws, c).transpose(2, 3)
    return x.reshape(b * rows * cols, ws * ws, c)


def window_reverse(windows: torch.Tensor, window_size: int, batch: int,
                   height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`.

    Args:
        windows: ``(batch * num_windows, window_size**2, C)``.
        batch, height, width: The map's batch and (padded) sides.

    Returns:
        ``(batch, height, width, C)``.
    """
    ws, c = window_size, windows.shape[-1]
    x = windows.view(batch, height // ws, width // ws, ws, ws, c)
    return x.transpose(2, 3).reshape(batch, height, width, c)


def _shift_regions(size: int, window_size: int, shift_size: int,
                   device: torch.device) -> torch.Tensor:
    """Region label 0, 1 or 2 of each position along one padded side: the
    official slices ``[0, -ws)``, ``[-ws, -shift)`` and ``[-shift, end)``."""
    index = torch.arange(size, device=device)
    return ((index >= size - window_size).long() +
            (index >= size - shift_size).long())


def shift_window_mask(height: int, width: int, window_size: int,
                      shift_size: int, device: torch.device = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive mask of the official shifted-window attention.

    Window ``w`` (row-major over the padded ``height x width`` map rolled by
    ``-shift_size``) uses ``mask[w]``: 0 where two tokens come from the same
    region of the unrolled map, ``SHIFT_MASK_VALUE`` where they do not.
    Derived from the shapes alone, never saved in checkpoints.

    Returns:
        ``(num_windows, N, N)`` with ``N = window_size**2``.
    """
    rows = _shift_regions(height, window_size, shift_size, device)
    cols = _shift_regions(width, window_size, shift_size, device)
    label = rows[:, None] * 3 + cols[None, :]
    windows = window_partition(label[None, :, :, None], window_size)
    windows = windows.squeeze(-1)  # (num_windows, N)
    different = windows[:, None, :] != windows[:, :, None]
    return different.to(dtype) * SHIFT_MASK_VALUE


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
