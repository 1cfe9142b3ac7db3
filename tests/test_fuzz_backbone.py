"""Fuzzing the backbones' arguments and inputs (hypothesis).

Valid arguments and input sizes give the documented output shapes
(``(B, C * 2**i, H_i, W_i)`` for i in out_indices, ``H_0 = ceil(H / patch)``,
``H_{i+1} = ceil(H_i / 2)``) with finite values. One invalid argument or a
malformed input raises the documented error type (TypeError for a wrong
type, ValueError for a wrong value) with a message that names the argument;
no other exception escapes. The examples are derandomized, so CI runs the
same ones every time.
"""
import math

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


def _invalid_values(setup: dict) -> dict:
    """For each argument: values that must be refused, and the name the
    error message must contain."""
    stages = len(setup['arch']['depths'])
    ones = (1, ) * stages
    flags = ['yes', 1, None, 0.0]
    rates = [-0.1, 1.0, 1.5, float('nan'), 'a', None]
    return {
        'window_size': [0, -1, 2.5, 'a', True, (2, ) * (stages + 1),
                        (0, ) * stages],
        'patch_size': [0, -2, 1.5, '4', None, True],
        'in_channels': [0, 3.0, None, -1],
        'mlp_ratio': [0, -1, 'x', None, float('nan'), float('inf'), 1e-3],
        'drop_rate': rates,
        'attn_drop_rate': rates,
        'drop_path_rate': rates,
        'qk_scale': [0, -1.0, 'a'],
        'out_indices': [(), (stages, ), (-1, ), 0, 'a', (0.5, ), (0, 0)],
        'frozen_stages': [-2, stages + 1, 1.5, None],
        'strides': [(setup['patch_size'] + 1, ) + (2, ) * (stages - 1), 5,
                    (setup['patch_size'], ) + (2, ) * stages],
        'norm_cfg': [dict(type='BN'), 'LN'],
        'act_cfg': [dict(type='ReLU'), 'GELU'],
        'attn_impl': ['flash', None],
        'qkv_bias': flags, 'patch_norm': flags, 'with_cp': flags,
        'use_abs_pos_embed': flags, 'norm_eval': flags,
        'check_finite': flags, 'cpu_fast_path': flags,
        'pretrain_img_size': [0, (1, 2, 3), (), 'a', -5, (4, 0), (0, )],
        'embed_dims': [0, 2.5, -1, '8'],
        'depths': [(), (0, ) * stages, 3, ('a', ) * stages],
        'num_heads': [(0, ) * stages, (5, ) * stages, ones[:-1] or (1, 1)],
        'arch': ['medium', 5, None],
        'init_cfg': ['x.pth', dict(type='Pretrained')],
        'pretrained': [3, b'x.pth'],
        'drop_path_rat': [0.1],  # a typo of drop_path_rate
    }


INVALID_ARGUMENTS = sorted(_invalid_values(dict(
    arch=dict(depths=(1, )), patch_size=1)))


@pytest.mark.parametrize('name', INVALID_ARGUMENTS)
@settings(FUZZ, max_examples=8)
@given(backbone=st.sampled_from(BACKBONES), setup=valid_setups())
def test_one_invalid_argument_raises_documented_error(name, backbone, setup):
    for value in _invalid_values(setup)[name]:
        try:
            backbone(**dict(setup, **{name: value}))
        except (TypeError, ValueError) as err:
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
    """Inputs that violate the (B, in_channels, H, W) float contract."""
    kind = draw(st.sampled_from(('rank', 'channels', 'empty', 'dtype',
                                 'type')))
    sizes = [draw(st.integers(1, 8)) for _ in range(4)]
    sizes[1] = in_channels
    if kind == 'rank':
        rank = draw(st.sampled_from((0, 1, 2, 3, 5)))
        return torch.randn(*(sizes + [2])[:rank]) if rank else torch.tensor(
            1.)
    if kind == 'channels':
        sizes[1] = draw(st.integers(1, 6).filter(lambda c: c != in_channels))
    if kind == 'empty':
        sizes[draw(st.sampled_from((0, 2, 3)))] = 0
    if kind == 'dtype':
        return torch.zeros(sizes, dtype=draw(st.sampled_from(
            (torch.int64, torch.uint8, torch.bool))))
    if kind == 'type':
        return torch.randn(sizes).numpy()
    return torch.randn(sizes)


@FUZZ
@given(backbone=st.sampled_from(BACKBONES), setup=valid_setups(),
       data=st.data())
def test_malformed_input_raises_documented_error(backbone, setup, data):
    model = backbone(**setup)
    x = data.draw(malformed_inputs(setup['in_channels']), label='input')
    try:
        model(x)
    except (TypeError, ValueError) as err:
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
