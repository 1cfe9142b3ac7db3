"""Argument and input checks with messages that name the fix."""
from typing import Dict, Optional, Sequence

import torch


def check_choice(name: str, value, allowed: Sequence) -> None:
    if value not in allowed:
        raise ValueError(f'{name} must be one of {tuple(allowed)}, '
                         f'got {value!r}')


def check_range(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not (
            low <= value <= high):
        raise ValueError(f'{name} must be an int in [{low}, {high}], '
                         f'got {value!r}')
    return value


def check_arch(arch, presets: Dict[str, Dict], embed_dims: Optional[int],
               depths: Optional[Sequence[int]],
               num_heads: Optional[Sequence[int]]) -> Dict:
    """Resolve ``arch`` (a preset name or a dict) plus explicit overrides."""
    if isinstance(arch, str):
        check_choice('arch', arch, tuple(presets))
        arch = dict(presets[arch])
    elif isinstance(arch, dict):
        missing = {'embed_dims', 'depths', 'num_heads'} - set(arch)
        if missing and not (embed_dims and depths and num_heads):
            raise ValueError(f'arch dict is missing {sorted(missing)}; give '
                             'embed_dims, depths and num_heads')
        arch = dict(arch)
    else:
        raise TypeError(f'arch must be a preset name {tuple(presets)} or a '
                        f'dict, got {type(arch).__name__}')
    for key, value in (('embed_dims', embed_dims), ('depths', depths),
                       ('num_heads', num_heads)):
        if value is not None:
            arch[key] = value
    dims, depths, heads = arch['embed_dims'], arch['depths'], arch['num_heads']
    if not isinstance(dims, int) or dims < 1:
        raise ValueError(f'embed_dims must be a positive int, got {dims!r}')
    depths, heads = tuple(depths), tuple(heads)
    if len(depths) != len(heads) or not depths:
        raise ValueError(f'depths {depths} and num_heads {heads} must have '
                         'the same, non-zero length (one entry per stage)')
    if any(not isinstance(d, int) or d < 1 for d in depths):
        raise ValueError(f'depths must be positive ints, got {depths}')
    for i, h in enumerate(heads):
        channels = dims * 2**i
        if not isinstance(h, int) or h < 1 or channels % h:
            raise ValueError(
                f'num_heads[{i}]={h!r} must divide the {channels} channels of '
                f'stage {i} (embed_dims={dims} * 2**{i})')
    return dict(embed_dims=dims, depths=depths, num_heads=heads)


def check_input(x, in_channels: int, check_finite: bool) -> None:
    """Validate a backbone input ``(B, in_channels, H, W)``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f'input must be a torch.Tensor, got {type(x).__name__}')
    if x.dim() != 4:
        raise ValueError('input must be 4-D (B, C, H, W), got shape '
                         f'{tuple(x.shape)}')
    if x.shape[1] != in_channels:
        raise ValueError(f'input has {x.shape[1]} channels but in_channels='
                         f'{in_channels}; set in_channels or fix the input')
    if x.shape[0] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError('input must have a non-empty batch and spatial size, '
                         f'got shape {tuple(x.shape)}')
    if not x.is_floating_point():
        raise TypeError(f'input must be a float tensor, got {x.dtype}')
    if check_finite and not torch.isfinite(x).all():
        raise ValueError('input contains NaN or Inf (check_finite=True)')
