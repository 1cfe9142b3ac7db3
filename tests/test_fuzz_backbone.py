"""Fuzzing the backbones' arguments and inputs (hypothesis).

Valid arguments and input sizes give the documented output shapes
(``(B, C * 2**i, H_i, W_i)`` for i in out_indices, ``H_0 = ceil(H / patch)``,
``H_{i+1} = ceil(H_i / 2)``) with finite values. One invalid argument or a
malformed input raises the documented error type, asserted per value
(TypeError for a wrong type, ValueError for a wrong value), with a message
that names the argument; no other exception escapes. The examples are
derandomized, so CI runs the same ones every time.
"""
import math
from typing import Dict, List, Tuple

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmswin.models import SwinTransformer, SwinTransformerV2

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                database=None, suppress_health_check=[HealthCheck.too_slow])
BACKBONES = (SwinTransformer, SwinTransformerV2)


@st.composite
def valid_setups(draw) -> dict:
    """A tiny valid backbone configuration."""
    num_stages = draw(st.integers(1, 5))  # mmdet's RTMDet-P6 Swin has 5
    embed_dims = draw(st.sampled_from((2, 4, 6, 8)))
    heads = [draw(st.sampled_from(
        [h for h in (1, 2, 3, 4) if (embed_dims * 2**i) % h == 0]))
        for i in range(num_stages)]
    out_indices = sorted(draw(st.sets(st.integers(0, num_stages - 1),
                                      min_size=1)))
    window = draw(st.one_of(
        st.integers(1, 4),
        st.lists(st.integers(1, 4), min_size=num_stages,
                 max_size=num_stages).map(tuple)))
    patch_size = draw(st.integers(1, 4))
    return dict(
        arch=dict(embed_dims=embed_dims, num_heads=tuple(heads),
                  depths=tuple(draw(st.lists(st.integers(1, 2),
                                             min_size=num_stages,
                                             max_size=num_stages)))),
        in_channels=draw(st.integers(1, 4)),
        patch_size=patch_size,
        strides=draw(st.sampled_from(
            (None, (patch_size, ) + (2, ) * (num_stages - 1)))),
        window_size=window,
        mlp_ratio=draw(st.sampled_from((0.5, 1.0, 2.0))),
        out_indices=tuple(out_indices),
        frozen_stages=draw(st.integers(-1, num_stages)),
        qkv_bias=draw(st.booleans()),
        patch_norm=draw(st.booleans()),
        use_abs_pos_embed=draw(st.booleans()),
        pretrain_img_size=draw(st.one_of(
            st.integers(1, 16), st.tuples(st.integers(1, 16)),
            st.tuples(st.integers(1, 16), st.integers(1, 16)))),
        cpu_fast_path=draw(st.booleans()),
        drop_path_rate=draw(st.sampled_from((0.0, 0.2))),
        attn_impl=draw(st.sampled_from(('sdpa', 'math'))),
    )


def expected_shapes(setup: dict, batch: int, height: int, width: int):
    """The documented output shapes."""
    h, w = (math.ceil(s / setup['patch_size']) for s in (height, width))
    shapes = []
    for i in range(max(setup['out_indices']) + 1):
        if i in setup['out_indices']:
            shapes.append((batch, setup['arch']['embed_dims'] * 2**i, h, w))
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return shapes


@FUZZ
@given(backbone=st.sampled_from(BACKBONES), setup=valid_setups(),
       batch=st.integers(1, 2), height=st.integers(1, 24),
       width=st.integers(1, 24), train=st.booleans())
def test_valid_arguments_give_documented_shapes(backbone, setup, batch,
                                                height, width, train):
    model = backbone(**setup).train(train)
    x = torch.randn(batch, setup['in_channels'], height, width)
    with torch.no_grad():
        outs = model(x)
    assert [tuple(o.shape) for o in outs] == expected_shapes(
        setup, batch, height, width)
    assert all(torch.isfinite(o).all() for o in outs)


T, V = TypeError, ValueError  # the documented type of each refusal


def _invalid_values(setup: dict) -> Dict[str, List[Tuple[object, type]]]:
    """For each argument: values that must be refused, each with its
    documented error type (TypeError: a wrong type; ValueError: a value of
    the right type out of range); the message must name the argument."""
    stages = len(setup['arch']['depths'])
    ones = (1, ) * stages
    flags = [('yes', T), (1, T), (None, T), (0.0, T)]
    rates = [(-0.1, V), (1.0, V), (1.5, V), (float('nan'), V), ('a', T),
             (None, T)]
    return {
        'window_size': [(0, V), (-1, V), (2.5, T), ('a', T), (True, T),
                        ((2, ) * (stages + 1), V), ((0, ) * stages, V)],
        'patch_size': [(0, V), (-2, V), (1.5, T), ('4', T), (None, T),
                       (True, T)],
        'in_channels': [(0, V), (3.0, T), (None, T), (-1, V)],
        'mlp_ratio': [(0, V), (-1, V), ('x', T), (None, T),
                      (float('nan'), V), (float('inf'), V), (1e-3, V)],
        'drop_rate': rates,
        'attn_drop_rate': rates,
        'drop_path_rate': rates,
        'qk_scale': [(0, V), (-1.0, V), ('a', T)],
        'out_indices': [((), V), ((stages, ), V), ((-1, ), V), (0, T),
                        ('a', T), ((0.5, ), T), ((0, 0), V)],
        'frozen_stages': [(-2, V), (stages + 1, V), (1.5, T), (None, T)],
        'strides': [((setup['patch_size'] + 1, ) + (2, ) * (stages - 1), V),
                    (5, T), ((setup['patch_size'], ) + (2, ) * stages, V)],
        'norm_cfg': [(dict(type='BN'), V), ('LN', T)],
        'act_cfg': [(dict(type='ReLU'), V), ('GELU', T)],
        # a choice between two strings: any other value is a wrong value
        'attn_impl': [('flash', V), (None, V)],
        'qkv_bias': flags, 'patch_norm': flags, 'with_cp': flags,
        'use_abs_pos_embed': flags, 'norm_eval': flags,
        'check_finite': flags, 'cpu_fast_path': flags,
        'pretrain_img_size': [(0, V), ((1, 2, 3), V), ((), V), ('a', T),
                              (-5, V), ((4, 0), V), ((0, ), V)],
        'embed_dims': [(0, V), (2.5, T), (-1, V), ('8', T)],
        'depths': [((), V), ((0, ) * stages, V), (3, T),
                   (('a', ) * stages, T)],
        'num_heads': [((0, ) * stages, V), ((5, ) * stages, V),
                      (ones[:-1] or (1, 1), V)],
        'arch': [('medium', V), (5, T), (None, T)],
        'init_cfg': [('x.pth', T), (dict(type='Pretrained'), V)],
        'pretrained': [(3, T), (b'x.pth', T)],
        'drop_path_rat': [(0.1, T)],  # a typo of drop_path_rate
    }


INVALID_ARGUMENTS = sorted(_invalid_values(dict(
    arch=dict(depths=(1, )), patch_size=1)))


@pytest.mark.parametrize('name', INVALID_ARGUMENTS)
@settings(FUZZ, max_examples=8)
@given(backbone=st.sampled_from(BACKBONES), setup=valid_setups())
def test_one_invalid_argument_raises_documented_error(name, backbone, setup):
    for value, error in _invalid_values(setup)[name]:
        if name == 'qk_scale' and backbone is SwinTransformerV2:
            error = TypeError  # V2 takes no qk_scale at all
        try:
            backbone(**dict(setup, **{name: value}))
        except (TypeError, ValueError) as err:
            assert isinstance(err, error), (
                f'{name}={value!r}: {type(err).__name__} instead of '
                f'{error.__name__}: {err}')
            assert name in str(err), (name, value, str(err))
        else:
            raise AssertionError(f'{name}={value!r} was accepted')


# Each version's own options, refused by the other: any value, valid or not.
OTHER_VERSIONS_OPTIONS = [
    (SwinTransformer, 'post_norm', st.booleans()),
    (SwinTransformer, 'pretrained_window_sizes', st.integers(0, 8)),
    (SwinTransformerV2, 'qk_scale', st.floats(0.01, 1.0)),
    (SwinTransformerV2, 'post_norm', st.booleans()),
]


@pytest.mark.parametrize('backbone, name, values', OTHER_VERSIONS_OPTIONS,
                         ids=[f'{b.__name__}-{n}'
                              for b, n, _ in OTHER_VERSIONS_OPTIONS])
@settings(FUZZ, max_examples=8)
@given(setup=valid_setups(), data=st.data())
def test_the_other_versions_options_are_refused(backbone, name, values,
                                                setup, data):
    value = data.draw(values, label=name)
    with pytest.raises(TypeError, match=f"unexpected keyword argument "
                       f"'{name}'"):
        backbone(**dict(setup, **{name: value}))


@st.composite
def malformed_inputs(draw, in_channels: int):
    """Inputs that violate the (B, in_channels, H, W) float contract, each
    with its documented error: ValueError for a wrong shape, TypeError for
    a non-float tensor or a non-tensor."""
    kind = draw(st.sampled_from(('rank', 'channels', 'empty', 'dtype',
                                 'type')))
    sizes = [draw(st.integers(1, 8)) for _ in range(4)]
    sizes[1] = in_channels
    if kind == 'rank':
        rank = draw(st.sampled_from((0, 1, 2, 3, 5)))
        return (torch.randn(*(sizes + [2])[:rank]) if rank else torch.tensor(
            1.)), ValueError
    if kind == 'channels':
        sizes[1] = draw(st.integers(1, 6).filter(lambda c: c != in_channels))
    if kind == 'empty':
        sizes[draw(st.sampled_from((0, 2, 3)))] = 0
    if kind == 'dtype':
        return torch.zeros(sizes, dtype=draw(st.sampled_from(
            (torch.int64, torch.uint8, torch.bool)))), TypeError
    if kind == 'type':
        return torch.randn(sizes).numpy(), TypeError
    return torch.randn(sizes), ValueError


@FUZZ
@given(backbone=st.sampled_from(BACKBONES), setup=valid_setups(),
       data=st.data())
def test_malformed_input_raises_documented_error(backbone, setup, data):
    model = backbone(**setup)
    x, error = data.draw(malformed_inputs(setup['in_channels']),
                         label='input')
    try:
        model(x)
    except (TypeError, ValueError) as err:
        assert isinstance(err, error), (
            f'{type(err).__name__} instead of {error.__name__}: {err}')
        assert str(err).startswith('input'), str(err)
    else:
        raise AssertionError(f'input {getattr(x, "shape", x)} was accepted')


@FUZZ
@given(setup=valid_setups(), bad=st.sampled_from(
    (float('nan'), float('inf'), -float('inf'))))
def test_non_finite_input_is_caught_only_when_asked(setup, bad):
    x = torch.randn(1, setup['in_channels'], 6, 6)
    x[0, 0, 0, 0] = bad
    with torch.no_grad():
        SwinTransformer(**setup)(x)  # off by default: no error, no sync
    try:
        SwinTransformer(**setup, check_finite=True)(x)
    except ValueError as err:
        assert 'input contains NaN or Inf (1 values' in str(err)
    else:
        raise AssertionError('non-finite input accepted with check_finite')
