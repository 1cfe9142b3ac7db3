"""SwinTransformerV2: official structure, half precision, window transfer."""
import math

import pytest
import torch
from helpers import (
    MatmulDtypes,
    autocast_vs_fp32,
    max_abs_diff,
    ran_only_in,
    randomize_,
)

from mmswin.models import SwinTransformerV2
from mmswin.models.backbones import OFFICIAL_V2_CHECKPOINTS
from mmswin.models.layers.attention import log_spaced_coords_table

SMALL = dict(arch=dict(embed_dims=32, depths=(2, 2, 2, 2),
                       num_heads=(1, 2, 4, 8)), drop_path_rate=0.)


def test_official_parameter_names_and_shapes():
    model = SwinTransformerV2(arch='tiny', window_size=8)
    state = model.state_dict()
    attn = 'layers.0.blocks.0.attn.'
    assert state[attn + 'logit_scale'].shape == (3, 1, 1)
    assert state[attn + 'cpb_mlp.0.weight'].shape == (512, 2)
    assert state[attn + 'cpb_mlp.2.weight'].shape == (3, 512)
    assert attn + 'cpb_mlp.2.bias' not in state
    assert state[attn + 'q_bias'].shape == (96, )
    assert state[attn + 'v_bias'].shape == (96, )
    assert attn + 'qkv.bias' not in state  # no k bias in V2
    # V2 merging: reduction 4C -> 2C, then LayerNorm over 2C
    assert state['layers.0.downsample.reduction.weight'].shape == (192, 384)
    assert state['layers.0.downsample.norm.weight'].shape == (192,)
    # derived tables are never saved
    assert not any('relative_coords_table' in k or 'relative_position_index'
                   in k for k in state)


def test_official_checkpoint_presets():
    preset = OFFICIAL_V2_CHECKPOINTS[
        'swinv2_base_patch4_window12to16_192to256_22kto1k_ft']
    assert preset['url'].endswith(
        'v2.0.0/swinv2_base_patch4_window12to16_192to256_22kto1k_ft.pth')
    model = SwinTransformerV2(
        arch='swinv2_base_patch4_window12to16_192to256_22kto1k_ft')
    assert model.embed_dims == 128 and model.depths == (2, 2, 18, 2)
    assert model.window_sizes == (16, 16, 16, 8)
    attn = model.layers[3].blocks[0].attn
    # stage 3 was pretrained at window 6: coordinates scaled by 6 - 1
    expected = log_spaced_coords_table(8, 6)
    torch.testing.assert_close(attn.relative_coords_table, expected)
    # a window-16 dense model from a window-8 checkpoint keeps the range
    table = log_spaced_coords_table(16, 8)
    assert table.abs().max().item() == pytest.approx(
        math.log2(15 / 7 * 8 + 1) / 3)


def test_huge_has_extra_norm_every_six_blocks():
    with torch.device('meta'):  # the structure only: no 600M weights
        model = SwinTransformerV2(arch='huge', window_size=8)
    assert len(model.layers[2].extra_norms) == 3
    assert not hasattr(model.layers[0], 'extra_norms')


def test_arch_dict_extra_norm_every_is_honoured():
    """It used to pass validation and be dropped."""
    arch = dict(SMALL['arch'], extra_norm_every=1)
    model = randomize_(SwinTransformerV2(arch=arch, window_size=4)).eval()
    assert [len(stage.extra_norms) for stage in model.layers] == [2] * 4
    # the norm after the last block of stage 0 now shapes its output: one
    # that outputs zeros leaves norm0 nothing but its bias
    with torch.no_grad():
        model.layers[0].extra_norms[1].weight.zero_()
        model.layers[0].extra_norms[1].bias.zero_()
        out = model(torch.randn(1, 3, 40, 40))[0]
    expected = model.norm0.bias.view(1, -1, 1, 1).expand_as(out)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_bad_extra_norm_every_is_named():
    arch = dict(SMALL['arch'], extra_norm_every=-1)
    with pytest.raises(ValueError, match='extra_norm_every must be an int '
                       '>= 0, got -1'):
        SwinTransformerV2(arch=arch)


def test_qk_scale_is_refused():
    """Cosine attention learns its scale; qk_scale used to be accepted and
    ignored."""
    with pytest.raises(TypeError, match="unexpected keyword argument "
                       "'qk_scale'"):
        SwinTransformerV2(**SMALL, qk_scale=0.5)


def test_preset_defaults_give_way_to_explicit_arguments():
    name = 'swinv2_tiny_patch4_window16_256'
    preset = SwinTransformerV2(arch=name, use_abs_pos_embed=True)
    assert preset.window_sizes == (16, 16, 16, 8)
    assert preset.absolute_pos_embed.shape[2:] == (64, 64)  # 256 pixels
    explicit = SwinTransformerV2(arch=name, window_size=8,
                                 pretrained_window_sizes=(16, 16, 16, 8),
                                 pretrain_img_size=(128, ),
                                 use_abs_pos_embed=True)
    assert explicit.window_sizes == (8, ) * 4
    assert explicit.absolute_pos_embed.shape[2:] == (32, 32)
    torch.testing.assert_close(
        explicit.layers[0].blocks[0].attn.relative_coords_table,
        log_spaced_coords_table(8, 16), rtol=0, atol=0)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_autocast_forward_backward_stay_finite(dtype):
    model = randomize_(SwinTransformerV2(**SMALL, window_size=4), std=0.2)
    model.train()
    x = (torch.randn(2, 3, 72, 60) * 100).requires_grad_()
    with torch.autocast('cpu', dtype=dtype), MatmulDtypes() as seen:
        outs = model(x)
        loss = sum(o.float().pow(2).mean() for o in outs)
    loss.backward()
    # the projections and MLPs of every block ran in dtype
    assert ran_only_in(seen.ops, dtype) >= 4 * 8, seen.ops
    assert all(torch.isfinite(o).all() for o in outs)
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def _drop_position_bias_(model: SwinTransformerV2) -> None:
    """Zero the CPB MLP's last layer: every bias becomes 16 * sigmoid(0),
    one constant, which softmax ignores."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('cpb_mlp.2.weight'):
                p.zero_()


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_autocast_outputs_match_fp32_within_the_dtypes_precision(dtype,
                                                                 device):
    """Bound: 16 unit roundoffs of dtype times max |fp32 output| (see
    tests/helpers.py; measured ~5). Control: without the position bias the
    autocast outputs miss fp32's by more."""
    model = randomize_(SwinTransformerV2(**SMALL, window_size=4),
                       std=0.1).eval().to(device)
    x = torch.randn(2, 3, 72, 60).to(device)
    diffs, bounds, ops = autocast_vs_fp32(model, x, dtype)
    assert all(d <= b for d, b in zip(diffs, bounds)), (diffs, bounds)
    assert ran_only_in(ops, dtype) == sum(ops.values()), ops
    assert ran_only_in(ops, dtype) >= 4 * 8 + 1, ops
    with torch.no_grad():
        expected = model(x)
        _drop_position_bias_(model)
        with torch.autocast(device.type, dtype=dtype):
            no_bias = model(x)
    wrong = [(a.float() - b.float()).abs().max().item()
             for a, b in zip(expected, no_bias)]
    assert all(w > b for w, b in zip(wrong, bounds)), (wrong, bounds)


def test_logit_scale_clamp_at_log_100(device):
    """At and above log(100) the same outputs; just below it (log(90))
    different ones, so a clamp set too low fails too."""
    model = randomize_(SwinTransformerV2(**SMALL, window_size=4)).eval()
    model.to(device)
    x = torch.randn(1, 3, 32, 32).to(device)

    def outputs_at(logit_scale: float):
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith('logit_scale'):
                    p.fill_(logit_scale)
            return model(x)

    at_clamp = outputs_at(math.log(100.))
    for a, b in zip(at_clamp, outputs_at(10.)):  # far above: same result
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    below = outputs_at(math.log(90.))
    assert min(max_abs_diff(at_clamp, below)) > 1e-3


def test_sdpa_and_math_paths_agree():
    model = randomize_(SwinTransformerV2(**SMALL, window_size=4)).eval()
    x = torch.randn(1, 3, 70, 45)
    with torch.no_grad():
        sdpa = model(x)
        for m in model.modules():
            if hasattr(m, 'attn_impl'):
                m.attn_impl = 'math'
        math_out = model(x)
    for a, b in zip(sdpa, math_out):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_window8_checkpoint_runs_at_window16(tmp_path):
    """The official V2 recipe for a larger window: CPB weights are reused
    unchanged; only the (derived) coordinate table is rescaled."""
    source = randomize_(SwinTransformerV2(**SMALL, window_size=8))
    path = tmp_path / 'swinv2_window8.pth'
    torch.save({'model': source.state_dict()}, path)  # official layout

    target = SwinTransformerV2(
        **SMALL, window_size=16, pretrained_window_sizes=8,
        init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    target.init_weights()
    loaded, original = target.state_dict(), source.state_dict()
    assert loaded.keys() == original.keys()
    for key, value in original.items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0,
                                   msg=key)
    attn16 = target.layers[0].blocks[0].attn
    attn8 = source.layers[0].blocks[0].attn
    # offsets the window-8 model knew (-7..7) keep their coordinates; the
    # window-16 model extrapolates beyond them
    assert attn16.relative_coords_table.shape == (31, 31, 2)
    torch.testing.assert_close(attn16.relative_coords_table[8:23, 8:23],
                               attn8.relative_coords_table, rtol=0, atol=0)
    with torch.no_grad():
        outs = target.eval()(torch.randn(1, 3, 130, 200))
    assert all(torch.isfinite(o).all() for o in outs)
    assert [o.shape[1] for o in outs] == [32, 64, 128, 256]
