"""The CPU linear layers under bf16 autocast (issue 20, item 3): oneDNN's
bf16 matmul with weights cast once (cached per parameter version) and GELU
fused, in the fast path and the plain path, without autograd.

Bound: a Swin's outputs under bf16 autocast stay within 16 unit roundoffs
(u = 2**-8) times max |fp32 output| of the fp32 forward, the bound of
tests/test_half_precision.py (autocast's F.linear measures ~5 u). Controls:
a bf16 path that drops the linear biases breaks it, and so does a weight
cache that ignores in-place updates once the weights change.
"""
import pytest
import torch
from helpers import randomize_
from torch.utils._python_dispatch import TorchDispatchMode

import mmswin.models.cpu_fast_path.linear as fast_linear
from mmswin.models import SwinTransformer

if not (torch.backends.mkldnn.is_available()
        and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
    pytest.skip('oneDNN has no bf16 on this CPU', allow_module_level=True)

ROUNDOFFS = 16
U_BF16 = 2.0**-8


class OneDnnDtypes(TorchDispatchMode):
    """Counts mmswin's oneDNN linear calls by input dtype."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._schema.name == 'mmswin::onednn_linear':
            key = str(args[0].dtype)
            self.calls[key] = self.calls.get(key, 0) + 1
        return func(*args, **(kwargs or {}))


def small_swin(fast: bool) -> SwinTransformer:
    torch.manual_seed(0)
    model = SwinTransformer(embed_dims=32, depths=(2, 2), num_heads=(2, 4),
                            window_size=7, strides=(4, 2),
                            out_indices=(0, 1), drop_path_rate=0.,
                            cpu_fast_path=fast)
    return randomize_(model).eval()


def excess(model, x) -> float:
    """Largest |bf16 - fp32| over the outputs, in units of the bound."""
    with torch.no_grad():
        expected = model(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            got = model(x)
    return max(((g.float() - e).abs().max() /
                 (ROUNDOFFS * U_BF16 * e.abs().max())).item()
               for g, e in zip(got, expected))


@pytest.fixture(scope='module')
def image():
    return torch.randn(1, 3, 75, 101, generator=torch.Generator(
    ).manual_seed(1))


@pytest.mark.parametrize('fast', [True, False])
def test_bf16_autocast_within_bound_on_onednn(fast, image):
    model = small_swin(fast)
    with OneDnnDtypes() as seen, torch.no_grad(), \
            torch.autocast('cpu', dtype=torch.bfloat16):
        model(image)
    # every block linear (qkv, proj, fc1, fc2) and the merging: bf16
    assert seen.calls.get('torch.bfloat16', 0) >= 4 * 4 + 1, seen.calls
    assert 'torch.float32' not in seen.calls, seen.calls
    assert excess(model, image) <= 1.0


def test_bf16_inference_takes_the_plain_path(image):
    """Under bf16 autocast without autograd the fast path steps aside (the
    plain path is faster there); in fp32 and in training it applies."""
    from mmswin.models import cpu_fast_path
    assert cpu_fast_path.applies(image)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert cpu_fast_path.applies(image)  # autograd on: training
        with torch.no_grad():
            assert not cpu_fast_path.applies(image)


def test_fp32_path_unchanged(image):
    """Without autocast nothing runs in bf16 and the weight cache stays
    unused."""
    model = small_swin(True)
    fast_linear._BF16_CACHE.clear()
    with OneDnnDtypes() as seen, torch.no_grad():
        model(image)
    assert set(seen.calls) == {'torch.float32'}, seen.calls
    assert not fast_linear._BF16_CACHE


def test_control_bf16_path_without_biases_breaks_bound(image, monkeypatch):
    """A bf16 path that loses the linear layers' biases (std 0.05 here)
    is caught by the bound."""
    model = small_swin(True)
    real = fast_linear.bf16_copy
    monkeypatch.setattr(fast_linear, 'bf16_copy', lambda t: (
        torch.zeros_like(real(t)) if t.dim() == 1 else real(t)))
    assert excess(model, image) > 1.0


def test_weight_cache_follows_in_place_updates(image, monkeypatch):
    """After an in-place weight change the bf16 run still matches the new
    fp32 weights; a cache that ignores versions (the control) does not."""
    model = small_swin(True)
    excess(model, image)  # fills the cache
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(-1.5)
    assert excess(model, image) <= 1.0
    stale = {}
    real = fast_linear.bf16_copy

    def ignoring_versions(tensor):
        if id(tensor) not in stale:
            stale[id(tensor)] = real(tensor)
        return stale[id(tensor)]
    monkeypatch.setattr(fast_linear, 'bf16_copy', ignoring_versions)
    excess(model, image)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(-1.5)
    assert excess(model, image) > 1.0


def test_training_under_autocast_keeps_gradients(image, monkeypatch):
    """With autograd the linear layers take autocast's F.linear (only the
    MLP's custom autograd function runs fc1 without autograd inside); the
    gradients equal those with the bf16 oneDNN path switched off."""
    def grads():
        model = small_swin(True).train()
        with torch.autocast('cpu', dtype=torch.bfloat16):
            loss = sum(o.float().sum() for o in model(image))
        loss.backward()
        return [p.grad for p in model.parameters() if p.requires_grad]
    got = grads()
    monkeypatch.setattr(fast_linear, 'uses_onednn_bf16', lambda *a: False)
    expected = grads()
    for g, e in zip(got, expected):
        assert torch.isfinite(g).all()
        assert (g - e).abs().max() <= ROUNDOFFS * U_BF16 * e.abs().max()
