"""Swin-T and Swin-B under fp16 and bf16 autocast, stressed to overflow.

The stress: inputs scaled by 100 and every block's qkv projection scaled so
that |q| and |k| reach hundreds. Those values fit in fp16 (max 65504), but
their dot products do not: attention logits formed in fp16 become inf and
the softmax NaN (the fp16 NaN losses reported against the official code).
The test first checks that the stress really produces such logits, then
that the backbone's outputs, loss and every gradient stay finite. 64x64
inputs keep CPU time low (fp16 matmuls are slow on CPUs).
"""
from typing import List

import pytest
import torch

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


def naive_fp16_logits(model: SwinTransformer,
                      x: torch.Tensor) -> List[torch.Tensor]:
    """Per block, q @ k^T * scale formed in fp16 from the fp32 forward's q
    and k (what an implementation that multiplies fp16 tensors gets)."""
    logits = []

    def capture(attn, inputs, qkv) -> None:
        b, n, _ = qkv.shape
        q, k, _ = qkv.view(b, n, 3, attn.num_heads, -1).permute(
            2, 0, 3, 1, 4).half()
        logits.append((q * attn.scale) @ k.transpose(-2, -1))

    hooks = [block.attn.qkv.register_forward_hook(
        lambda mod, i, o, attn=block.attn: capture(attn, i, o))
        for stage in model.layers for block in stage.blocks]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return logits


@pytest.fixture(scope='module')
def stressed_input() -> torch.Tensor:
    return torch.randn(1, 3, 64, 64,
                       generator=torch.Generator().manual_seed(1)) * 100


def test_stress_overflows_naive_fp16_attention(stressed_input):
    """Control: the stress is real. q and k fit in fp16, their logits do
    not, in every stage."""
    model = stressed_swin('tiny')
    logits = naive_fp16_logits(model, stressed_input)
    assert len(logits) == sum(model.depths)
    overflowing = [not torch.isfinite(t).all().item() for t in logits]
    assert sum(overflowing) >= len(logits) // 2, overflowing


@pytest.mark.parametrize('arch', ['tiny', 'base'])
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_autocast_forward_backward_finite_under_stress(arch, dtype,
                                                       stressed_input):
    model = stressed_swin(arch)
    x = stressed_input.clone().requires_grad_()
    with torch.autocast('cpu', dtype=dtype):
        outs = model(x)
        loss = sum(o.float().pow(2).mean() for o in outs)
    loss.backward()
    assert [o.shape[1] for o in outs] == [model.embed_dims * 2**i
                                          for i in range(4)]
    assert all(o.dtype in (dtype, torch.float32) for o in outs)
    bad = [i for i, o in enumerate(outs) if not torch.isfinite(o).all()]
    assert not bad, f'non-finite outputs {bad}'
    assert torch.isfinite(loss), loss
    assert torch.isfinite(x.grad).all()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


@pytest.mark.xfail(strict=True, reason='attn_impl="math" forms its logits '
                   'in fp16 under autocast and overflows (reported to the '
                   'layers owner); remove this mark once it computes them '
                   'in fp32')
def test_math_attention_finite_under_fp16_stress(stressed_input):
    model = stressed_swin('tiny', attn_impl='math')
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.float16):
        outs = model(stressed_input)
    assert all(torch.isfinite(o).all() for o in outs)
