"""SwinV2-H/G: the presets build on the meta device (no memory, no values)
with the parameter counts of an independent formula, and their structure
(window 16, an extra LayerNorm every 6 blocks) trains a step on CPU at a
shrunken width and depth."""
import pytest
import torch
from helpers import max_abs_diff

from mmswin.models import SwinTransformerV2


def v2_param_count(embed_dims: int, depths, num_heads, extra_norm_every=0,
                   in_channels=3, patch_size=4, out_indices=(0, 1, 2, 3),
                   cpb_hidden=512) -> int:
    """Parameters of a SwinV2 backbone counted from its layers' shapes
    (official layout: q/v biases, cosine attention, cpb MLP, res-post-norm,
    reduce-then-norm merging), independently of the module tree."""
    c = embed_dims
    total = in_channels * c * patch_size ** 2 + c + 2 * c  # conv + norm
    for i, (depth, heads) in enumerate(zip(depths, num_heads)):
        d = c * 2 ** i
        attn = (3 * d * d + 2 * d  # qkv weight, q_bias, v_bias
                + heads  # logit_scale
                + 2 * cpb_hidden + cpb_hidden + cpb_hidden * heads  # cpb MLP
                + d * d + d)  # proj
        mlp = d * 4 * d + 4 * d + 4 * d * d + d
        total += depth * (attn + mlp + 2 * 2 * d)  # + norm1, norm2
        if extra_norm_every and depth >= extra_norm_every:
            total += depth // extra_norm_every * 2 * d
        if i < len(depths) - 1:
            total += 4 * d * 2 * d + 2 * 2 * d  # reduction + norm over 2C
        if i in out_indices:
            total += 2 * d
    return total


@pytest.mark.parametrize('arch, billions', [('huge', 0.655), ('giant', 2.998)])
def test_presets_build_on_meta(arch, billions):
    with torch.device('meta'):
        model = SwinTransformerV2(arch=arch)
    params = list(model.parameters())
    assert all(p.is_meta for p in params)
    count = sum(p.numel() for p in params)
    spec = SwinTransformerV2.arch_settings[arch]
    assert count == v2_param_count(**spec)
    assert round(count / 1e9, 3) == billions  # the paper's 3.0B for giant
    extra = [n for n, _ in model.named_parameters() if '.extra_norms.' in n]
    # one extra norm per 6 blocks of each stage deep enough
    assert len(extra) == 2 * sum(d // 6 for d in spec['depths'])


def test_meta_build_matches_cpu_build():
    """The same parameter names and shapes on meta as on the CPU, and the
    drop-path rates are real numbers in both."""
    kwargs = dict(arch='small', drop_path_rate=0.3)
    with torch.device('meta'):
        meta = SwinTransformerV2(**kwargs)
    cpu = SwinTransformerV2(**kwargs)
    assert [(n, p.shape) for n, p in meta.named_parameters()] == [
        (n, p.shape) for n, p in cpu.named_parameters()]
    rates = [b.drop_path.drop_prob for s in meta.layers for b in s.blocks]
    assert rates == [b.drop_path.drop_prob for s in cpu.layers
                     for b in s.blocks]
    assert rates[0] == 0 and rates[-1] == pytest.approx(0.3)
    assert v2_param_count(**SwinTransformerV2.arch_settings['small']) == sum(
        p.numel() for p in cpu.parameters())


# The giant preset's shape rules (window 16, extra norm every 6 blocks, a
# deep third stage) at a width and depth that step in a second on CPU.
SHRUNK_GIANT = dict(embed_dims=16, depths=(2, 2, 12, 2),
                    num_heads=(1, 2, 4, 8), extra_norm_every=6)


def _step(with_cp: bool):
    torch.manual_seed(0)
    model = SwinTransformerV2(arch=SHRUNK_GIANT, window_size=16,
                              drop_path_rate=0.0, with_cp=with_cp)
    model.init_weights()
    model.train()
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(1, 3, 96, 80, generator=torch.Generator().manual_seed(1))
    outs = model(x)
    loss = sum(o.pow(2).mean() for o in outs)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    optim.step()
    return outs, grads, model


def test_shrunk_giant_trains_a_step_with_and_without_cp():
    outs, grads, model = _step(with_cp=False)
    assert [o.shape for o in outs] == [(1, 16 * 2**i, s, t) for i, (s, t) in
                                       enumerate([(24, 20), (12, 10), (6, 5),
                                                  (3, 3)])]
    assert len(model.layers[2].extra_norms) == 2
    for name, grad in grads.items():
        assert torch.isfinite(grad).all(), name
    # the extra norms sit on the gradient path
    assert grads['layers.2.extra_norms.1.weight'].abs().sum() > 0
    cp_outs, cp_grads, _ = _step(with_cp=True)
    assert max(max_abs_diff(outs, cp_outs)) == 0
    diff = max(max_abs_diff(list(grads.values()), list(cp_grads.values())))
    assert diff < 1e-6, diff


# The large-model configs: their backbones build on meta with the preset's
# parameter count, and they carry the memory settings their names state.
LARGE_CONFIGS = {
    'cascade-mask-rcnn_swinv2-g-w16_fpn_giou-4conv1f_amp-cp-zero1-ms-crop-'
    '3x_coco': ('giant', 'zero1'),
    'cascade-mask-rcnn_swinv2-g-w16_fpn_giou-4conv1f_amp-cp-fsdp-ms-crop-'
    '3x_coco': ('giant', 'fsdp'),
    'cascade-mask-rcnn_swinv2-h-w16_fpn_giou-4conv1f_amp-cp-ms-crop-3x_coco':
    ('huge', 'ddp'),
    'upernet_swinv2-g-w16_amp-cp-zero1_8xb2-160k_ade20k-512x512':
    ('giant', 'zero1'),
    'upernet_swinv2-g-w16_amp-cp-fsdp_8xb2-160k_ade20k-512x512':
    ('giant', 'fsdp'),
    'upernet_swinv2-h-w16_amp-cp_8xb2-160k_ade20k-512x512': ('huge', 'ddp'),
}


@pytest.mark.parametrize('name', sorted(LARGE_CONFIGS))
def test_large_v2_configs_build_on_meta(name):
    from helpers import load_config

    arch, sharding = LARGE_CONFIGS[name]
    cfg = load_config(name)
    kwargs = dict(cfg.model.backbone)
    assert kwargs.pop('type') == 'mmswin.SwinTransformerV2'
    with torch.device('meta'):
        backbone = SwinTransformerV2(**kwargs)
    count = sum(p.numel() for p in backbone.parameters())
    print(f'{name}: backbone {count / 1e9:.3f}B parameters')
    assert count == v2_param_count(**SwinTransformerV2.arch_settings[arch])
    assert tuple(backbone.window_sizes) == (16, ) * 4
    assert all(s.with_cp for s in backbone.layers)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    neck = cfg.model.get('neck', cfg.model.get('decode_head'))
    assert list(neck.in_channels) == backbone.num_features
    zero = cfg.optim_wrapper.optimizer.type == 'mmswin.ZeroRedundancyOptimizer'
    assert zero == (sharding == 'zero1')
    assert (dict(type='mmswin.ZeroConsolidateHook') in cfg.get(
        'custom_hooks', [])) == zero
    fsdp = cfg.get('strategy', {}).get('type') == 'mmswin.FSDP2Strategy'
    assert fsdp == (sharding == 'fsdp') == (
        cfg.get('runner_type') == 'FlexibleRunner')
    # the paper's no-decay keys survive the optimizer swap
    keys = cfg.optim_wrapper.paramwise_cfg.custom_keys
    assert {'norm', 'relative_position_bias_table', 'logit_scale'} <= set(keys)


def test_swin_l_cascade_config_builds_on_meta():
    from helpers import load_config

    from mmswin.models import SwinTransformer
    cfg = load_config('cascade-mask-rcnn_swin-l-p4-w12_fpn_giou-4conv1f_'
                      'amp-ms-crop-3x_coco')
    kwargs = dict(cfg.model.backbone)
    assert kwargs.pop('type') == 'mmswin.SwinTransformer'
    with torch.device('meta'):
        backbone = SwinTransformer(**kwargs)
    count = sum(p.numel() for p in backbone.parameters())
    # Swin paper: Swin-L 197M with its 1.5M classifier head
    assert 195e6 < count < 197e6, count
    assert backbone.num_features == list(cfg.model.neck.in_channels)
    assert tuple(backbone.window_sizes) == (12, ) * 4
