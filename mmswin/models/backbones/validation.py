"""Argument and input checks with messages that name the fix.

Contract (relied on by the backbones' docs and the fuzz tests): a wrong
*type* raises :class:`TypeError`, a wrong *value* raises
:class:`ValueError`, and every message starts with the argument's name and
states what is allowed.
"""
import math
import numbers
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch


def check_choice(name: str, value, allowed: Sequence) -> None:
    """``value`` must be one of ``allowed``."""
    try:
        ok = value in allowed
    except TypeError:  # unhashable values against a set or dict
        ok = False
    if not ok:
        raise ValueError(f'{name} must be one of {tuple(allowed)}, '
                         f'got {value!r}')


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(name: str, value, low: int, high: Optional[int] = None) -> int:
    """``value`` must be an int in ``[low, high]`` (no upper bound if None);
    bools are rejected. Returns it as a Python int."""
    if not _is_int(value):
        raise TypeError(f'{name} must be an int, got '
                        f'{type(value).__name__} {value!r}')
    if value < low or (high is not None and value > high):
        if high is not None:
            kind = f'an int in [{low}, {high}]'
        else:
            kind = 'a positive int' if low == 1 else f'an int >= {low}'
        raise ValueError(f'{name} must be {kind}, got {value!r}')
    return int(value)


def check_float(name: str, value, low: float, high: float = math.inf,
                high_inclusive: bool = False,
                low_inclusive: bool = True) -> float:
    """``value`` must be a real number between ``low`` and ``high``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f'{name} must be a number, got '
                        f'{type(value).__name__} {value!r}')
    above = value >= low if low_inclusive else value > low
    below = value <= high if high_inclusive else value < high
    if not (above and below):  # also catches NaN
        interval = ('[' if low_inclusive else '(') + f'{low}, {high}' + (
            ']' if high_inclusive else ')')
        raise ValueError(f'{name} must be in {interval}, got {value!r}')
    return float(value)


def check_bool(name: str, value) -> bool:
    """``value`` must be True or False (not a truthy string or number)."""
    if not isinstance(value, bool):
        raise TypeError(f'{name} must be True or False, got '
                        f'{type(value).__name__} {value!r}')
    return value


def check_int_sequence(name: str, value, low: int = 1,
                       length: Optional[int] = None) -> Tuple[int, ...]:
    """``value`` must be a list or tuple of ints ``>= low`` (of ``length``
    entries when given). Returns a tuple."""
    if not isinstance(value, (list, tuple)):
        raise TypeError(f'{name} must be a list or tuple of ints, got '
                        f'{type(value).__name__} {value!r}')
    if length is not None and len(value) != length:
        raise ValueError(f'{name} must have {length} entries, got '
                         f'{len(value)}: {value!r}')
    for i, item in enumerate(value):
        check_int(f'{name}[{i}]', item, low)
    return tuple(int(v) for v in value)


def check_size(name: str, value) -> Tuple[int, int]:
    """An image size: a positive int, or a ``(size,)`` or ``(height, width)``
    list or tuple of them (mmdet and mmseg accept all three). Returns
    ``(height, width)``."""
    if _is_int(value):
        check_int(name, value, 1)
        return (int(value), int(value))
    if not isinstance(value, (list, tuple)):
        raise TypeError(f'{name} must be an int or a (size,) or (height, '
                        f'width) tuple of ints, got {type(value).__name__} '
                        f'{value!r}')
    if len(value) not in (1, 2):
        raise ValueError(f'{name} must be a size, (size,) or (height, '
                         f'width), got {len(value)} entries: {value!r}')
    size = check_int_sequence(name, value, low=1)
    return (size[0], size[-1])


def check_per_stage(name: str, value, num_stages: int,
                    low: int = 1) -> Tuple[int, ...]:
    """One int for all stages or one per stage (``num_stages`` of them)."""
    if _is_int(value):
        check_int(name, value, low)
        return (int(value), ) * num_stages
    if not isinstance(value, (list, tuple)):
        raise TypeError(f'{name} must be an int or one int per stage '
                        f'({num_stages}), got {type(value).__name__} '
                        f'{value!r}')
    return check_int_sequence(name, value, low=low, length=num_stages)


def check_indices(name: str, value, num_stages: int) -> Tuple[int, ...]:
    """Stage indices: distinct, increasing, in ``[0, num_stages - 1]``."""
    indices = check_int_sequence(name, value, low=0)
    if not indices:
        raise ValueError(f'{name} must name at least one stage in '
                         f'[0, {num_stages - 1}], got {value!r}')
    for index in indices:
        check_int(name, index, 0, num_stages - 1)
    if list(indices) != sorted(set(indices)):
        raise ValueError(f'{name} must be distinct stage indices in '
                         f'increasing order (outputs come in stage order), '
                         f'got {value!r}')
    return indices


def check_cfg(name: str, cfg, expected: Dict, **optional) -> None:
    """``cfg`` must be None or ``expected``, optionally with the ``optional``
    key/value pairs (mmdet/mmseg configs spell the layers Swin has this way;
    any other layer or option would be silently ignored, so it is refused).
    """
    if cfg is None:
        return
    if not isinstance(cfg, dict):
        raise TypeError(f'{name} must be a dict like {expected!r} or None, '
                        f'got {type(cfg).__name__} {cfg!r}')
    if cfg.get('type') != expected['type']:
        raise ValueError(f"{name}['type'] must be {expected['type']!r} (Swin "
                         f"has no other), got {cfg.get('type')!r}")
    allowed = dict(optional, **expected)
    wrong = sorted(k for k in cfg if k not in allowed or cfg[k] != allowed[k])
    if wrong:
        extras = ', '.join(f'{k}={v!r}' for k, v in optional.items())
        raise ValueError(f'{name} option(s) {wrong} are not supported: '
                         f'{name} may be {expected!r}'
                         + (f' (optionally with {extras})' if extras else '')
                         + f' or None, got {cfg!r}')


def check_strides(strides, patch_size: int, num_stages: int) -> None:
    """mmdet's ``strides``: None or ``(patch_size, 2, ..., 2)``, one entry
    per stage (Swin downsamples by 2x2 patch merging only)."""
    if strides is None:
        return
    expected = (patch_size, ) + (2, ) * (num_stages - 1)
    if not isinstance(strides, (list, tuple)):
        raise TypeError(f'strides must be None or a tuple, here {expected} '
                        f'(patch_size, then 2 per further stage), got '
                        f'{type(strides).__name__} {strides!r}')
    if tuple(strides) != expected:
        raise ValueError(f'strides must be (patch_size, 2, ..., 2) with one '
                         f'entry per stage, here {expected}, or None; got '
                         f'{strides!r}: Swin downsamples by 2x2 patch merging '
                         'only')


def check_init_cfg(pretrained: Optional[str],
                     init_cfg: Optional[Union[dict, List[dict]]]
                     ) -> Optional[Union[dict, List[dict]]]:
    """Fold ``pretrained`` into ``init_cfg`` and check a Pretrained
    init_cfg names a checkpoint."""
    if pretrained is not None:
        if not isinstance(pretrained, str):
            raise TypeError('pretrained must be a checkpoint path or URL '
                            f'(str) or None, got {pretrained!r}')
        if init_cfg is not None:
            raise ValueError('pass either pretrained or init_cfg, not both')
        return dict(type='Pretrained', checkpoint=pretrained)
    if init_cfg is not None and not isinstance(init_cfg, (dict, list)):
        raise TypeError('init_cfg must be a dict, a list of dicts or None, '
                        f'got {type(init_cfg).__name__} {init_cfg!r}')
    if isinstance(init_cfg, dict) and init_cfg.get(
            'type') == 'Pretrained' and not isinstance(
                init_cfg.get('checkpoint'), str):
        raise ValueError("init_cfg of type 'Pretrained' needs "
                         "checkpoint=<path or URL>, got "
                         f"{init_cfg.get('checkpoint')!r}")
    return init_cfg


def check_arch(arch, presets: Dict[str, Dict], embed_dims: Optional[int],
               depths: Optional[Sequence[int]],
               num_heads: Optional[Sequence[int]]) -> Dict:
    """Resolve ``arch`` (a preset name or a dict) plus explicit overrides.

    A dict may hold the keys of the presets (V2's have
    ``extra_norm_every``) and nothing else.

    Returns ``dict(embed_dims=int, depths=tuple, num_heads=tuple,
    extra_norm_every=int)`` (0: no extra norms).
    """
    required = ('embed_dims', 'depths', 'num_heads')
    if isinstance(arch, str):
        check_choice('arch', arch, tuple(presets))
        arch = dict(presets[arch])
    elif isinstance(arch, dict):
        known = set(required).union(*(p.keys() for p in presets.values()))
        unknown = sorted(set(arch) - known)
        if unknown:
            raise ValueError(f'arch dict has unknown key(s) {unknown}; '
                             f'allowed: {sorted(known)}')
        overrides = dict(embed_dims=embed_dims, depths=depths,
                         num_heads=num_heads)
        missing = [k for k in required
                   if k not in arch and overrides[k] is None]
        if missing:
            raise ValueError(f'arch dict is missing {missing}; give all of '
                             f'{list(required)} (or a preset name '
                             f'{tuple(presets)})')
        arch = dict(arch)
    else:
        raise TypeError(f'arch must be a preset name {tuple(presets)} or a '
                        f'dict with {list(required)}, got '
                        f'{type(arch).__name__} {arch!r}')
    for key, value in (('embed_dims', embed_dims), ('depths', depths),
                       ('num_heads', num_heads)):
        if value is not None:
            arch[key] = value
    dims = check_int('embed_dims', arch['embed_dims'], 1)
    depths = check_int_sequence('depths', arch['depths'])
    heads = check_int_sequence('num_heads', arch['num_heads'])
    if len(depths) != len(heads) or not depths:
        raise ValueError(f'depths {depths} and num_heads {heads} must have '
                         'the same, non-zero length (one entry per stage)')
    for i, h in enumerate(heads):
        channels = dims * 2**i
        if channels % h:
            raise ValueError(
                f'num_heads[{i}]={h!r} must divide the {channels} channels of '
                f'stage {i} (embed_dims={dims} * 2**{i})')
    extra_norm_every = check_int('extra_norm_every',
                                 arch.get('extra_norm_every', 0), 0)
    return dict(embed_dims=dims, depths=depths, num_heads=heads,
                extra_norm_every=extra_norm_every)


def check_input(x, in_channels: int, check_finite: bool,
                dtype: Optional[torch.dtype] = None) -> None:
    """Validate a backbone input ``(B, in_channels, H, W)``.

    ``dtype`` is the backbone's parameter dtype: outside autocast the input
    must match it (a half input into a float model fails deep in a conv).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError('input must be a torch.Tensor, got '
                        f'{type(x).__name__}')
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
        raise TypeError(f'input must be a float tensor, got {x.dtype}; '
                        'convert it with x.float()')
    if dtype is not None and x.dtype != dtype and not _autocast_on(
            x.device.type):
        raise TypeError(f'input dtype {x.dtype} does not match the '
                        f'backbone\'s {dtype}; cast one to the other or run '
                        'under torch.autocast')
    if check_finite and not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).sum().item()
        raise ValueError(f'input contains NaN or Inf ({bad} values; '
                         'check_finite=True); clean the input data')


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 has no per-device query
        return (torch.is_autocast_enabled() if device_type == 'cuda' else
                torch.is_autocast_cpu_enabled())
