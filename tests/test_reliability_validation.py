"""Bad arguments, bad inputs and bad config types get errors that name the
argument and what is allowed (tests/test_backbone_behaviour.py has the
first few cases; these are the rest)."""
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope, init_default_scope

from mmswin.models import SwinTransformer, SwinTransformerV2
from mmswin.registry import HOOKS, MODELS

TINY = dict(arch=dict(embed_dims=8, depths=(1, 1), num_heads=(1, 2)),
            window_size=2, out_indices=(0, 1))


@pytest.mark.parametrize('kwargs, error, message', [
    # wrong types: TypeError naming the argument and the expected type
    (dict(window_size=7.0), TypeError,
     r'window_size must be an int or one int per stage \(2\), got float'),
    (dict(window_size=(2, 2, 2)), ValueError,
     r'window_size must have 2 entries, got 3'),
    (dict(window_size=(2, True)), TypeError,
     r'window_size\[1\] must be an int, got bool True'),
    (dict(patch_size='4'), TypeError, "patch_size must be an int, got str"),
    (dict(in_channels=0), ValueError, 'in_channels must be a positive int'),
    (dict(mlp_ratio='4'), TypeError, "mlp_ratio must be a number, got str"),
    (dict(mlp_ratio=0), ValueError, r'mlp_ratio must be in \(0, inf\)'),
    (dict(mlp_ratio=0.05), ValueError,
     r'mlp_ratio=0.05 leaves no hidden units at embed_dims=8; it must be '
     r'>= 1 / 8'),
    (dict(drop_rate=float('nan')), ValueError,
     r'drop_rate must be in \[0, 1\), got nan'),
    (dict(attn_drop_rate=None), TypeError,
     'attn_drop_rate must be a number, got NoneType'),
    (dict(qk_scale=0), ValueError, r'qk_scale must be in \(0, inf\)'),
    (dict(qkv_bias='yes'), TypeError,
     "qkv_bias must be True or False, got str 'yes'"),
    (dict(with_cp=1), TypeError, 'with_cp must be True or False, got int'),
    (dict(use_abs_pos_embed=None), TypeError,
     'use_abs_pos_embed must be True or False'),
    (dict(pretrain_img_size=0), ValueError,
     'pretrain_img_size must be a positive int, got 0'),
    (dict(pretrain_img_size=(224, 224, 3)), ValueError,
     r'pretrain_img_size must be a size, \(size,\) or \(height, width\), got '
     r'3 entries'),
    (dict(pretrain_img_size='224'), TypeError,
     r'pretrain_img_size must be an int or a \(size,\) or \(height, width\) '
     'tuple of ints, got str'),
    (dict(out_indices=(1, 0)), ValueError,
     r'out_indices must be distinct stage indices in increasing order'),
    (dict(out_indices=(0, 0)), ValueError,
     r'out_indices must be distinct stage indices in increasing order'),
    (dict(out_indices=()), ValueError,
     r'out_indices must name at least one stage in \[0, 1\]'),
    (dict(out_indices=1), TypeError,
     'out_indices must be a list or tuple of ints, got int'),
    (dict(frozen_stages=1.0), TypeError, 'frozen_stages must be an int'),
    (dict(strides=4), TypeError,
     r'strides must be None or a tuple, here \(4, 2\) \(patch_size, then 2 '
     r'per further stage\), got int'),
    (dict(strides=(4, 2, 2)), ValueError,
     r'strides must be \(patch_size, 2, \.\.\., 2\) with one entry per stage, '
     r'here \(4, 2\), or None'),
    (dict(norm_cfg='LN'), TypeError,
     r"norm_cfg must be a dict like \{'type': 'LN'\} or None, got str"),
    (dict(norm_cfg=dict(type='BN')), ValueError,
     r"norm_cfg\['type'\] must be 'LN' \(Swin has no other\), got 'BN'"),
    # options Swin's LayerNorm/GELU would silently ignore are refused
    (dict(norm_cfg=dict(type='LN', requires_grad=False)), ValueError,
     r"norm_cfg option\(s\) \['requires_grad'\] are not supported: norm_cfg "
     r"may be \{'type': 'LN'\} \(optionally with requires_grad=True\)"),
    (dict(norm_cfg=dict(type='LN', eps=1e-6)), ValueError,
     r"norm_cfg option\(s\) \['eps'\] are not supported"),
    (dict(act_cfg=dict(type='GELU', approximate='tanh')), ValueError,
     r"act_cfg option\(s\) \['approximate'\] are not supported: act_cfg "
     r"may be \{'type': 'GELU'\} or None"),
    (dict(cpu_fast_path='no'), TypeError,
     "cpu_fast_path must be True or False, got str 'no'"),
    (dict(attn_impl=['sdpa']), ValueError,
     r"attn_impl must be one of \('sdpa', 'math'\), got \['sdpa'\]"),
    (dict(pretrained=3), TypeError,
     'pretrained must be a checkpoint path or URL'),
    (dict(pretrained='a.pth', init_cfg=dict(type='Pretrained',
                                            checkpoint='b.pth')),
     ValueError, 'pass either pretrained or init_cfg, not both'),
    (dict(init_cfg=dict(type='Pretrained')), ValueError,
     r"init_cfg of type 'Pretrained' needs checkpoint=<path or URL>"),
    (dict(init_cfg='x.pth'), TypeError,
     'init_cfg must be a dict, a list of dicts or None, got str'),
    # a typo in an argument name, or an option of V2, is named
    (dict(drop_path_rat=0.1), TypeError,
     "unexpected keyword argument 'drop_path_rat'"),
    (dict(post_norm=True), TypeError,
     "unexpected keyword argument 'post_norm'"),
])
def test_bad_arguments_name_the_argument_and_the_fix(kwargs, error,
                                                     message):
    with pytest.raises(error, match=message):
        SwinTransformer(**{**TINY, **kwargs})


@pytest.mark.parametrize('arch, error, message', [
    (dict(embed_dim=8, depths=(1, ), num_heads=(1, )), ValueError,
     r"arch dict has unknown key\(s\) \['embed_dim'\]; allowed: "
     r"\['depths', 'embed_dims', 'num_heads'\]"),
    (dict(embed_dims=8, depths=(1, )), ValueError,
     r"arch dict is missing \['num_heads'\]"),
    (dict(embed_dims=8.0, depths=(1, ), num_heads=(1, )), TypeError,
     'embed_dims must be an int, got float'),
    (dict(embed_dims=8, depths=2, num_heads=(1, )), TypeError,
     'depths must be a list or tuple of ints, got int'),
    (dict(embed_dims=8, depths=(1, 0), num_heads=(1, 2)), ValueError,
     r'depths\[1\] must be a positive int, got 0'),
    (['tiny'], TypeError,
     r"arch must be a preset name \('tiny', 'small', 'base', 'large'\) or "
     r"a dict"),
])
def test_bad_arch_names_the_key(arch, error, message):
    with pytest.raises(error, match=message):
        SwinTransformer(arch=arch, out_indices=(0, ))


def test_v2_arguments():
    for name, value in (('post_norm', False),  # V2 sets it itself
                        ('qk_scale', 0.5)):  # cosine attention learns it
        with pytest.raises(TypeError, match=re.escape(
                f"unexpected keyword argument '{name}'")):
            SwinTransformerV2(**TINY, **{name: value})
    with pytest.raises(ValueError, match=re.escape(
            'pretrained_window_sizes[1] must be an int >= 0, got -1')):
        SwinTransformerV2(**TINY, pretrained_window_sizes=(8, -1))
    with pytest.raises(ValueError, match=r"arch must be one of \('tiny', "
                       r"'small', 'base', 'large', 'huge', 'giant'\)"):
        SwinTransformerV2(arch='swinv2_tiny_patch4_window7_224')


@pytest.mark.parametrize('x, error, message', [
    (torch.full((1, 3, 8, 8), float('inf')), ValueError,
     r'input contains NaN or Inf \(192 values; check_finite=True\)'),
    (torch.randn(1, 3, 8, 8).half(), TypeError,
     r"input dtype torch.float16 does not match the backbone's "
     r'torch.float32; cast one to the other or run under torch.autocast'),
    ([[0.0]], TypeError, 'input must be a torch.Tensor, got list'),
    (torch.randn(1, 3, 8, 0), ValueError,
     r'non-empty batch and spatial size, got shape \(1, 3, 8, 0\)'),
    (torch.randn(0, 3, 8, 8), ValueError,
     r'non-empty batch and spatial size, got shape \(0, 3, 8, 8\)'),
    (torch.randn(1, 1, 3, 8, 8), ValueError, 'input must be 4-D'),
])
def test_bad_inputs_name_the_problem(x, error, message):
    model = SwinTransformer(**TINY, check_finite=True)
    with pytest.raises(error, match=message):
        model(x)


def test_half_input_is_fine_under_autocast():
    model = SwinTransformer(**TINY).eval()
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        outs = model(torch.randn(1, 3, 8, 8).bfloat16())
    assert [o.shape for o in outs] == [(1, 8, 2, 2), (1, 16, 1, 1)]


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_unknown_mmswin_type_in_config_lists_registered(scope):
    cfg = Config(dict(default_scope=scope, backbone=dict(
        type='mmswin.SwinTransformr', arch='tiny')))
    init_default_scope(scope)
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    with DefaultScope.overwrite_default_scope(scope), pytest.raises(
            KeyError, match=re.escape(
                "'SwinTransformr' is not registered in mmswin's model "
                "registry; registered: [")) as err:
        registry.build(cfg.backbone)
    assert "'SwinTransformer', 'SwinTransformerV2'" in str(err.value)


def test_unknown_mmswin_hook_lists_registered():
    from mmengine.registry import HOOKS as ROOT_HOOKS
    with pytest.raises(KeyError, match=re.escape(
            "'AtomicCheckpointHook' is not registered in mmswin's hook "
            "registry; registered: ['CheckpointFitHook', "
            "'ResumableCheckpointHook', 'ZeroConsolidateHook']")):
        ROOT_HOOKS.build(dict(type='mmswin.AtomicCheckpointHook'))


def test_registry_lookups_that_must_not_raise():
    assert 'SwinTransformer' in MODELS
    assert 'SwinTransformr' not in MODELS
    assert 'Nope' not in HOOKS
    # full import paths still resolve the mmengine way
    assert MODELS.get('mmswin.models.SwinTransformer') is SwinTransformer
