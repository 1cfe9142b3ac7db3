"""Swin-T and Swin-B under fp16 and bf16 autocast, stressed to overflow.

The stress: inputs scaled by 100 and every block's qkv projection scaled so
that |q| and |k| reach hundreds. Those values fit in fp16 (max 65504), but
their dot products do not: attention logits formed in fp16 become inf and
the softmax NaN (the fp16 NaN losses reported against the official code).
The test first checks that the stress really produces such logits, then
that the backbone's outputs, loss and every gradient stay finite. Small
inputs (Swin-T 64x64, Swin-B 32x32) keep CPU time low: fp16 and bf16
matmuls are slow on CPUs without native support.

Values: without the stress, a small Swin's outputs under fp16 and bf16
autocast are within 16 unit roundoffs (u = 2^-11 fp16, 2^-8 bf16) times
max |fp32 output| of fp32's (measured ~5 u for both dtypes), every matmul
ran in the autocast dtype, and the same run without the position bias
breaks that bound (the control).
"""
from typing import Dict, List

import pytest
import torch
from helpers import (
    MatmulDtypes,
    autocast_vs_fp32,
    ran_only_in,
    randomize_,
)

from mmswin.models import SwinTransformer

QKV_GAIN = 1000.
FP16_MAX = torch.finfo(torch.float16).max


def stressed_swin(arch: str, attn_impl: str = 'sdpa') -> SwinTransformer:
    """A Swin with its default init, then every qkv projection scaled up."""
    torch.manual_seed(0)
    model = SwinTransformer(arch=arch, drop_path_rate=0.,
                            attn_impl=attn_impl)
    model.init_weights()
    with torch.no_grad():
        for stage in model.layers:
            for block in stage.blocks:
                block.attn.qkv.weight.mul_(QKV_GAIN)
    return model.train()


def naive_fp16_self_logits(model: SwinTransformer,
                           x: torch.Tensor) -> List[torch.Tensor]:
    """Per block, every token's attention logit to itself, q . k * scale,
    formed in fp16 from the fp32 forward's q and k: what an implementation
    multiplying fp16 tensors puts in its logits (each token is in its own
    window, so these logits always occur)."""
    logits = []

    def capture(attn, qkv: torch.Tensor) -> None:
        q, k, _ = qkv.reshape(-1, 3, attn.num_heads,
                              attn.head_dim).half().unbind(1)
        logits.append((q * attn.scale * k).sum(-1))

    # The CPU fast path calls the layers' weights, not the modules.
    fast = [stage.cpu_fast_path for stage in model.layers]
    for stage in model.layers:
        stage.cpu_fast_path = False
    hooks = [block.attn.qkv.register_forward_hook(
        lambda mod, inputs, qkv, attn=block.attn: capture(attn, qkv))
        for stage in model.layers for block in stage.blocks]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    for stage, was_fast in zip(model.layers, fast):
        stage.cpu_fast_path = was_fast
    return logits


def stressed_input(size: int) -> torch.Tensor:
    """A (1, 3, size, size) image scaled by 100."""
    return torch.randn(1, 3, size, size,
                       generator=torch.Generator().manual_seed(1)) * 100


def test_stress_overflows_naive_fp16_attention():
    """Control: the stress is real. q and k fit in fp16, their logits do
    not, in at least half of the blocks."""
    model = stressed_swin('tiny')
    logits = naive_fp16_self_logits(model, stressed_input(64))
    assert len(logits) == sum(model.depths)
    overflowing = [not torch.isfinite(t).all().item() for t in logits]
    assert sum(overflowing) >= len(logits) // 2, overflowing


@pytest.fixture(scope='module')
def stressed_models() -> Dict[str, SwinTransformer]:
    """Built once per arch (Swin-B takes seconds to initialise)."""
    return {}


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('arch, size', [('tiny', 64), ('base', 32)])
def test_autocast_forward_backward_finite_under_stress(arch, size, dtype,
                                                       stressed_models,
                                                       device):
    if arch not in stressed_models:
        stressed_models[arch] = stressed_swin(arch).to(device)
    model = stressed_models[arch]
    model.zero_grad(set_to_none=True)
    x = stressed_input(size).to(device).requires_grad_()
    with torch.autocast(device.type, dtype=dtype), MatmulDtypes() as seen:
        outs = model(x)
        loss = sum(o.float().pow(2).mean() for o in outs)
    loss.backward()
    assert [o.shape[1] for o in outs] == [model.embed_dims * 2**i
                                          for i in range(4)]
    # qkv, proj, fc1 and fc2 of every block ran in the autocast dtype (the
    # attention logits are fp32 by design: see the module docstring)
    assert ran_only_in(seen.ops, dtype) >= 4 * sum(model.depths), seen.ops
    bad = [i for i, o in enumerate(outs) if not torch.isfinite(o).all()]
    assert not bad, f'non-finite outputs {bad}'
    assert torch.isfinite(loss), loss
    assert torch.isfinite(x.grad).all()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


def test_math_attention_finite_under_fp16_stress(device):
    model = stressed_swin('tiny', attn_impl='math').to(device)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16):
        outs = model(stressed_input(64).to(device))
    assert all(torch.isfinite(o).all() for o in outs)


def small_swin(device: torch.device) -> SwinTransformer:
    """8 blocks, random weights; position-bias tables of std 1 (a trained
    Swin's are of that order), so that they shape the outputs."""
    model = randomize_(SwinTransformer(
        arch=dict(embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8)),
        window_size=4, drop_path_rate=0.), std=0.1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('relative_position_bias_table'):
                p.normal_(0, 1, generator=torch.Generator().manual_seed(2))
    return model.eval().to(device)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_autocast_outputs_match_fp32_within_the_dtypes_precision(dtype,
                                                                 device):
    model = small_swin(device)
    x = torch.randn(2, 3, 72, 60).to(device)
    diffs, bounds, ops = autocast_vs_fp32(model, x, dtype)
    assert all(d <= b for d, b in zip(diffs, bounds)), (diffs, bounds)
    # every matmul (patch embedding, linear layers, attention) in dtype
    assert ran_only_in(ops, dtype) == sum(ops.values()), ops
    assert ran_only_in(ops, dtype) >= 4 * sum(model.depths) + 1, ops

    # Control: the same autocast run without the position bias misses
    # fp32's outputs by more than the bound.
    with torch.no_grad():
        expected = model(x)
        for name, p in model.named_parameters():
            if name.endswith('relative_position_bias_table'):
                p.zero_()
        with torch.autocast(device.type, dtype=dtype):
            no_bias = model(x)
    wrong = [(a.float() - b.float()).abs().max().item()
             for a, b in zip(expected, no_bias)]
    assert all(w > b for w, b in zip(wrong, bounds)), (wrong, bounds)


# -- AutocastOptimWrapper: --amp on CPU ---------------------------------------
def _wrapper(**kwargs):
    from mmswin.engine import AutocastOptimWrapper
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optim = torch.optim.SGD(model.parameters(), lr=0.1)
    return model, AutocastOptimWrapper(optimizer=optim, device='cpu',
                                       **kwargs)


def test_autocast_wrapper_defaults_to_bfloat16_on_cpu_without_scaling():
    model, wrapper = _wrapper()
    before = model.weight.detach().clone()
    with wrapper.optim_context(model):
        out = model(torch.randn(3, 4))
    assert out.dtype == torch.bfloat16
    assert not wrapper.loss_scaler.is_enabled()
    wrapper.update_params(out.float().pow(2).mean())
    assert not torch.equal(model.weight, before)  # stepped


def test_autocast_wrapper_float16_skips_overflowing_steps():
    """float16 uses dynamic loss scaling: a step whose gradients overflow
    is skipped and the scale halves, as with mmengine's CUDA wrapper."""
    model, wrapper = _wrapper(dtype='float16',
                              loss_scale=dict(init_scale=2.**16))
    before = model.weight.detach().clone()
    with wrapper.optim_context(model):
        out = model(torch.randn(3, 4))
    assert out.dtype == torch.float16
    wrapper.update_params(out.float().sum() * 1e35)  # scaled grads -> inf
    assert torch.equal(model.weight, before)
    assert wrapper.loss_scaler.get_scale() == 2.**15
    state = wrapper.state_dict()
    assert state['loss_scaler']['scale'] == 2.**15
    _, restored = _wrapper(dtype='float16')
    restored.load_state_dict(state)
    assert restored.loss_scaler.get_scale() == 2.**15


@pytest.mark.parametrize('kwargs, error, message', [
    (dict(dtype='float64'), ValueError,
     r"dtype must be one of \('float16', 'bfloat16'\) or None"),
    (dict(loss_scale='static'), TypeError,
     "loss_scale must be 'dynamic', a float or a dict"),
])
def test_autocast_wrapper_rejects_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        _wrapper(**kwargs)
