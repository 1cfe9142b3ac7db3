"""Behaviour of the V1 backbone: checkpointing, freezing, norm_eval,
train()/eval() chaining, what each argument does (or that it is refused),
mmdet's five-stage layout, and tracing/compile limits."""
import re

import pytest
import torch
from helpers import max_abs_diff, randomize_

from mmswin.models import SwinTransformer

SMALL = dict(embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8),
             window_size=4, drop_path_rate=0.)


def _loss(outs):
    return sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum()
               for o in outs)


def test_with_cp_gives_identical_gradients():
    plain = randomize_(SwinTransformer(**SMALL)).train()
    ckpt = SwinTransformer(**SMALL, with_cp=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 70, 90)
    _loss(plain(x)).backward()
    _loss(ckpt(x)).backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-5,
                                   msg=name)


@pytest.mark.parametrize('frozen_stages', [0, 1, 2, 3])
def test_frozen_stages_get_no_gradient_and_stay_unchanged(frozen_stages):
    model = randomize_(SwinTransformer(**SMALL, frozen_stages=frozen_stages))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.5)
    _loss(model(torch.randn(1, 3, 64, 64))).backward()
    opt.step()

    def frozen(name: str) -> bool:
        if name.startswith('patch_embed'):
            return True
        match = re.match(r'(layers\.|norm)(\d+)', name)
        return bool(match) and int(match.group(2)) < frozen_stages

    changed = {k for k, v in model.state_dict().items()
               if not torch.equal(v, before[k])}
    for name, p in model.named_parameters():
        assert p.requires_grad is not frozen(name), name
        assert (name in changed) is not frozen(name), name
        if frozen(name):
            assert p.grad is None, name
    for name, module in model.named_modules():
        if name and frozen(name + '.'):
            assert not module.training, name


def test_all_stages_frozen_leaves_nothing_trainable():
    model = SwinTransformer(**SMALL, frozen_stages=4)
    assert not any(p.requires_grad for p in model.parameters())


def test_frozen_modules_stay_in_eval_through_train():
    model = SwinTransformer(**SMALL, frozen_stages=2)
    assert model.train() is model  # chains, unlike mmdet's train()
    assert model.eval() is model
    model.train()
    assert not model.patch_embed.training
    assert not model.layers[1].blocks[0].training
    assert model.layers[2].training


def test_unused_tail_is_frozen_for_ddp():
    model = SwinTransformer(**SMALL, out_indices=(0, 1))
    model.train()
    _loss(model(torch.randn(1, 3, 64, 64))).backward()
    for name, p in model.named_parameters():
        # every trainable parameter receives a gradient (DDP-safe)
        assert (p.grad is not None) is p.requires_grad, name
    assert not any(p.requires_grad for p in model.layers[2].parameters())
    assert not any(
        p.requires_grad for p in model.layers[1].downsample.parameters())


def test_norm_eval_keeps_norms_in_eval_mode():
    model = SwinTransformer(**SMALL, norm_eval=True).train()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and all(not m.training for m in norms)
    assert model.layers[0].blocks[0].attn.training


def test_drop_path_rises_linearly():
    model = SwinTransformer(**SMALL | dict(drop_path_rate=0.35))
    rates = [b.drop_path.drop_prob for s in model.layers for b in s.blocks]
    expected = torch.linspace(0, 0.35, 8).tolist()
    assert rates == pytest.approx(expected)


def _added_position_embedding(model: SwinTransformer,
                              x: torch.Tensor) -> torch.Tensor:
    """What the forward pass adds to the patch tokens, ``(1, H, W, C)``."""
    seen = {}
    hooks = [model.patch_embed.register_forward_hook(
        lambda module, args, out: seen.update(tokens=out)),
        model.pos_drop.register_forward_hook(
        lambda module, args, out: seen.update(embedded=args[0]))]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return seen['embedded'] - seen['tokens']


def test_abs_pos_embed_is_resized_bicubically_to_other_grids():
    """At a 25x13 grid (a 16x16 table) the forward adds torch's bicubic
    resize of the table (align_corners=False) within 1e-6; controls: the
    resize with align_corners=True, and with height and width swapped,
    differ."""
    model = randomize_(SwinTransformer(**SMALL, use_abs_pos_embed=True,
                                       pretrain_img_size=64), std=1).eval()
    assert model.absolute_pos_embed.shape == (1, 32, 16, 16)
    added = _added_position_embedding(model, torch.randn(1, 3, 100, 52))
    assert added.shape == (1, 25, 13, 32)

    def resized(size, align_corners=False):
        return torch.nn.functional.interpolate(
            model.absolute_pos_embed.detach(), size=size, mode='bicubic',
            align_corners=align_corners).permute(0, 2, 3, 1)

    assert (added - resized((25, 13))).abs().max() <= 1e-6
    assert (added - resized((25, 13), True)).abs().max() > 1e-2
    swapped = resized((13, 25)).transpose(1, 2)
    assert (added - swapped).abs().max() > 1e-2


def test_abs_pos_embed_matches_mmdet_where_mmdet_works():
    """mmdet's Swin adds its embedding unresized, so it runs only at inputs
    whose grid is the pretraining one (16x16 here: 64x64 and, padded,
    61x63) and fails elsewhere (the README's "fails (mmdet 8187)"); there
    the two agree, mmdet's (1, H*W, C) table loaded through the layout
    hook."""
    from mmdet.models.backbones import SwinTransformer as MMDetSwin
    args = dict(embed_dims=32, depths=(2, 2), num_heads=(1, 2),
                window_size=4, drop_path_rate=0., out_indices=(0, 1),
                strides=(4, 2), use_abs_pos_embed=True,
                pretrain_img_size=(64, 64))
    theirs = randomize_(MMDetSwin(**args))
    theirs.eval()
    with torch.no_grad():
        theirs.absolute_pos_embed.normal_(0, 1)  # large enough to matter
    ours = SwinTransformer(**args).eval()
    ours.load_state_dict(theirs.state_dict())
    for size in [(64, 64), (61, 63)]:
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            diffs = max_abs_diff(theirs(x), ours(x))
        assert max(diffs) <= 1e-5, (size, diffs)
    with torch.no_grad(), pytest.raises(RuntimeError, match='must match'):
        theirs(torch.randn(1, 3, 100, 52))


@pytest.mark.parametrize('kwargs, message', [
    (dict(embed_dims=30, num_heads=(4, 8, 16, 32)),
     r'num_heads\[0\]=4 must divide the 30 channels of stage 0'),
    (dict(depths=(2, 2, 6), num_heads=(3, 6, 12, 24)),
     'must have the same, non-zero length'),
    (dict(window_size=0), 'window_size must be a positive int'),
    (dict(out_indices=(0, 4)), r'out_indices must be an int in \[0, 3\]'),
    (dict(frozen_stages=5), r'frozen_stages must be an int in \[-1, 4\]'),
    (dict(frozen_stages=-2), r'frozen_stages must be an int in \[-1, 4\]'),
    (dict(arch='medium'), r"arch must be one of \('tiny', 'small', 'base', "
     r"'large'\), got 'medium'"),
    (dict(attn_impl='flash'), r"attn_impl must be one of \('sdpa', 'math'\)"),
    (dict(drop_path_rate=1.0), r'drop_path_rate must be in \[0, 1\)'),
    (dict(strides=(4, 2, 2, 1)),
     r'strides must be \(patch_size, 2, \.\.\., 2\) with one entry per '
     r'stage, here \(4, 2, 2, 2\)'),
    (dict(act_cfg=dict(type='ReLU')),
     r"act_cfg\['type'\] must be 'GELU' \(Swin has no other\), got 'ReLU'"),
])
def test_bad_arguments_raise_naming_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SwinTransformer(**kwargs)


@pytest.mark.parametrize('x, error, message', [
    (torch.randn(3, 64, 64), ValueError, r'input must be 4-D \(B, C, H, W\)'),
    (torch.randn(1, 4, 64, 64), ValueError,
     'input has 4 channels but in_channels=3'),
    (torch.randn(1, 3, 0, 64), ValueError, 'non-empty batch and spatial'),
    (torch.zeros(1, 3, 8, 8, dtype=torch.long), TypeError,
     'input must be a float tensor'),
])
def test_bad_inputs_raise(x, error, message):
    model = SwinTransformer(**SMALL)
    with pytest.raises(error, match=message):
        model(x)


def test_check_finite_is_opt_in():
    x = torch.randn(1, 3, 32, 32)
    x[0, 0, 0, 0] = float('nan')
    with pytest.raises(ValueError, match='NaN or Inf'):
        SwinTransformer(**SMALL, check_finite=True)(x)
    SwinTransformer(**SMALL)(x)  # no check, no sync by default


# -- every argument does what it says or is refused (issue 14) ---------------
@pytest.mark.parametrize('name, value', [
    ('post_norm', True), ('pretrained_window_sizes', 8),
    ('extra_norm_every', 1), ('variant', None)])
def test_v1_refuses_what_it_does_not_do(name, value):
    # post_norm=True used to build cosine attention reporting version 1
    with pytest.raises(TypeError, match=name):
        SwinTransformer(**SMALL, **{name: value})


def test_v1_arch_dict_refuses_extra_norm_every():
    arch = dict(embed_dims=32, depths=(2, 2), num_heads=(1, 2),
                extra_norm_every=1)
    with pytest.raises(ValueError, match=re.escape(
            "arch dict has unknown key(s) ['extra_norm_every']")):
        SwinTransformer(arch=arch, out_indices=(0, 1))


def test_qk_scale_is_the_attention_scale():
    default = randomize_(SwinTransformer(**SMALL)).eval()
    x = torch.randn(1, 3, 45, 61)
    outputs = {}
    for scale in (32 ** -0.5, 0.05):  # the default (head_dim 32), another
        model = SwinTransformer(**SMALL, qk_scale=scale).eval()
        model.load_state_dict(default.state_dict())
        assert {b.attn.scale for s in model.layers for b in s.blocks} == {
            scale}
        with torch.no_grad():
            outputs[scale] = model(x)
    with torch.no_grad():
        expected = default(x)
    assert max(max_abs_diff(expected, outputs[32 ** -0.5])) == 0
    assert max(max_abs_diff(expected, outputs[0.05])) > 1e-3


def test_cpu_fast_path_switch_reaches_every_stage_and_keeps_outputs():
    fast = randomize_(SwinTransformer(**SMALL)).eval()
    plain = SwinTransformer(**SMALL, cpu_fast_path=False).eval()
    plain.load_state_dict(fast.state_dict())
    assert all(stage.cpu_fast_path for stage in fast.layers)
    assert not any(stage.cpu_fast_path for stage in plain.layers)
    x = torch.randn(2, 3, 61, 83)
    with torch.no_grad():
        assert max(max_abs_diff(fast(x), plain(x))) <= 1e-5


@pytest.mark.parametrize('size', [64, (64, ), [64], (64, 64)])
def test_pretrain_img_size_takes_the_forms_mmdet_takes(size):
    model = SwinTransformer(**SMALL, use_abs_pos_embed=True,
                            pretrain_img_size=size)
    assert model.absolute_pos_embed.shape == (1, 32, 16, 16)


def test_abs_pos_embed_at_the_pretraining_grid_is_added_unchanged():
    """The embedding is always resampled (no branch on the size, which
    would specialise a compiled graph); at its own grid that is exact."""
    model = randomize_(SwinTransformer(**SMALL, use_abs_pos_embed=True,
                                       pretrain_img_size=64)).eval()
    seen = {}
    model.patch_embed.register_forward_hook(
        lambda module, args, out: seen.update(tokens=out))
    model.pos_drop.register_forward_hook(
        lambda module, args, out: seen.update(embedded=args[0]))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    table = model.absolute_pos_embed.permute(0, 2, 3, 1)
    assert torch.equal(seen['embedded'], seen['tokens'] + table)


def test_five_stages_match_mmdet():
    """mmdet's RTMDet-P6 Swin layout (depths [2, 2, 18, 2, 1], strides
    (4, 2, 2, 2, 2), out_indices (1, 2, 3, 4)), shrunk; mmdet's weights load
    through the layout hook."""
    from mmdet.models.backbones import SwinTransformer as MMDetSwin
    args = dict(embed_dims=16, depths=[1, 1, 2, 1, 1],
                num_heads=[1, 2, 2, 4, 4], strides=(4, 2, 2, 2, 2),
                out_indices=(1, 2, 3, 4), window_size=7, drop_path_rate=0.,
                pretrain_img_size=(224, ))
    theirs = randomize_(MMDetSwin(**args))
    theirs.eval()
    ours = SwinTransformer(**args).eval()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(1, 3, 97, 131)
    with torch.no_grad():
        expected, got = theirs(x), ours(x)
    assert [tuple(o.shape) for o in got] == [
        (1, 32, 13, 17), (1, 64, 7, 9), (1, 128, 4, 5), (1, 256, 2, 3)]
    assert max(max_abs_diff(expected, got)) <= 1e-4


# -- tracing (export and compile: tests/test_export_backbone.py) -------------
def test_legacy_tracing_is_refused_with_the_fix():
    model = SwinTransformer(**SMALL).eval()
    with pytest.raises(RuntimeError, match=re.escape(
            'would freeze the padding and the shift mask at the traced input '
            'size')) as err:
        torch.jit.trace(model, torch.randn(1, 3, 64, 64))
    assert 'torch.onnx.export(..., dynamo=True)' in str(err.value)
