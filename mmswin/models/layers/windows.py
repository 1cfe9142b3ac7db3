"""Windows of a ``(B, H, W, C)`` map as gathers of its tokens.

The official code pads a map with zeros to whole windows, rolls it by
``-shift`` and cuts it into windows (and reverses each step after
attention). Here each of those layouts is one index: the map's tokens are
numbered row-major (``i * W + j``), number ``H * W`` stands for a zero
token (the padding), and a layout lists the token at each of its
positions. A partition is then a single gather of tokens, its reverse a
single gather of window positions, and patch merging a gather of 2x2
neighbours, with the same numbers as the official pad, roll and slices.

The indices are computed from the input's sizes with tensor ops, with no
Python branch on a size and no cache, so the same code runs eagerly, under
``torch.compile(dynamic=True)`` and in an exported graph with dynamic
height and width. No tensor is ever padded by a size-dependent amount:
symbolic shapes (compile, export) then stay simple expressions of the
input's sides such as ``ceil(H / 28)``, where nested pads made inductor's
index analysis run for tens of minutes.
"""
import torch
import torch.nn.functional as F

# Additive logit for token pairs that belong to different regions of a
# shifted window. Every official implementation uses -100: exp(-100) is below
# fp32 resolution next to the unmasked logits, and -100 stays finite in fp16.
SHIFT_MASK_VALUE = -100.0


def num_windows(size: int, window_size: int) -> int:
    """Windows along a side of ``size`` tokens (the last one padded)."""
    return (size + window_size - 1) // window_size


def padded_size(size: int, window_size: int) -> int:
    """A side zero-padded at the bottom/right to whole windows."""
    return num_windows(size, window_size) * window_size


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Tokens ``index`` of a map, ``(B, H, W, C)`` -> ``(B, K, C)`` for a
    ``(K,)`` index; index ``H * W`` gives a zero token."""
    b, h, w, c = x.shape
    tokens = F.pad(x.reshape(b, h * w, c), (0, 0, 0, 1))
    return tokens.index_select(1, index)


def _wrap(coord: torch.Tensor, period: int) -> torch.Tensor:
    """``coord % period`` for coordinates in ``[-period, 2 * period)``,
    without a remainder by a size (which the ONNX exporter cannot
    translate when the size is symbolic)."""
    coord = torch.where(coord < 0, coord + period, coord)
    return torch.where(coord >= period, coord - period, coord)


def _rolled_side(size: int, window_size: int, shift_size: int,
                 device: torch.device) -> torch.Tensor:
    """Along one side padded to whole windows and rolled by
    ``-shift_size``: the unrolled coordinate at each position, ``(n, ws)``
    for ``n`` windows."""
    padded = padded_size(size, window_size)
    # torch.roll(x, -s)[i] == x[(i + s) % n], as in the official code.
    coord = _wrap(torch.arange(padded, device=device) + shift_size, padded)
    return coord.view(-1, window_size)


def window_token_index(height: int, width: int, window_size: int,
                       shift_size: int = 0,
                       device: torch.device = None) -> torch.Tensor:
    """Token at each position of each (shifted) window.

    Windows are row-major over the map zero-padded at the bottom/right to
    whole windows and rolled by ``-shift_size``; tokens row-major inside.

    Returns:
        ``(num_windows * N,)`` long with ``N = window_size**2``: the token
        ``i * width + j``, or ``height * width`` for padding.
    """
    rows = _rolled_side(height, window_size, shift_size, device)
    cols = _rolled_side(width, window_size, shift_size, device)
    rows, cols = rows[:, None, :, None], cols[None, :, None, :]
    token = torch.where((rows < height) & (cols < width),
                        rows * width + cols, height * width)
    return token.flatten()  # (rows of windows, cols of windows, ws, ws)


def window_position_index(height: int, width: int, window_size: int,
                          shift_size: int = 0,
                          device: torch.device = None) -> torch.Tensor:
    """Inverse of :func:`window_token_index`: where each token of the map
    sits among the windows' ``num_windows * N`` positions.

    Returns:
        ``(height * width,)`` long, row-major over the map.
    """
    ws = window_size
    window_cols = num_windows(width, ws)
    padded_h = padded_size(height, ws)
    padded_w = window_cols * ws
    # The rolled coordinate of token (i, j) is (i - shift) mod padded side.
    i = _wrap(torch.arange(height, device=device) - shift_size, padded_h)
    j = _wrap(torch.arange(width, device=device) - shift_size, padded_w)
    # i, j >= 0, so truncation is floor division; `//` would export with
    # an Equal on bools, a type TensorRT's parser lacks.
    row = torch.div(i, ws, rounding_mode='trunc')
    col = torch.div(j, ws, rounding_mode='trunc')
    window = row[:, None] * window_cols + col[None, :]
    inside = (i % ws)[:, None] * ws + (j % ws)[None, :]
    return (window * (ws * ws) + inside).flatten()


def shift_window_mask(height: int, width: int, window_size: int,
                      shift_size: int, device: torch.device = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive mask of the official shifted-window attention for a
    ``height x width`` map (before padding).

    In the padded map rolled by ``-shift_size`` each side has three regions,
    the official slices ``[0, -ws)``, ``[-ws, -shift)`` and
    ``[-shift, end)``; window ``w`` (row-major) uses ``mask[w]``: 0 where
    two tokens share a region in both directions, ``SHIFT_MASK_VALUE``
    where they do not. Derived from the sizes alone, never saved in
    checkpoints.

    Returns:
        ``(num_windows, N, N)`` with ``N = window_size**2``.
    """
    def regions(size: int) -> torch.Tensor:  # (n, ws) labels 0, 1, 2
        padded = padded_size(size, window_size)
        position = torch.arange(padded, device=device)
        label = ((position >= padded - window_size).long() +
                 (position >= padded - shift_size).long())
        return label.view(-1, window_size)

    label = regions(height)[:, None, :, None] * 3 + \
        regions(width)[None, :, None, :]
    label = label.flatten(0, 1).flatten(1)  # (num_windows, N)
    different = label[:, None, :] != label[:, :, None]
    return different.to(dtype) * SHIFT_MASK_VALUE


def merge_token_index(height: int, width: int,
                      device: torch.device = None) -> torch.Tensor:
    """The 2x2 neighbourhoods of patch merging, in the official order
    (top-left, bottom-left, top-right, bottom-right).

    Returns:
        ``(ceil(H/2) * ceil(W/2) * 4,)`` long: the token ``i * width + j``,
        or ``height * width`` (zero) past an odd bottom or right side.
    """
    rows = 2 * torch.arange(num_windows(height, 2), device=device)
    cols = 2 * torch.arange(num_windows(width, 2), device=device)
    down = torch.tensor([0, 1, 0, 1], device=device)
    right = torch.tensor([0, 0, 1, 1], device=device)
    rows = rows[:, None, None] + down  # (H/2, 1, 4)
    cols = cols[None, :, None] + right  # (1, W/2, 4)
    token = torch.where((rows < height) & (cols < width),
                        rows * width + cols, height * width)
    return token.flatten()


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
