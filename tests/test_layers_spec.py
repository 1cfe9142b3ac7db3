"""mmswin's stages against the reference stage of tests/reference_swin.py.

Both execution paths of :class:`mmswin.models.layers.SwinStage` (the plain
path that compile and export trace, and the CPU fast path) must equal the
reference in forward and in every gradient, for V1 and V2, at sizes that
need padding, with shifted windows that wrap around the edges, in
training (autograd) and at inference (in-place row blocks).
Measured: forward max abs diff <= 1.9e-6 in training, 2.4e-6 at
inference, input gradient 4.2e-7, asserted within OUT_TOL = 2.5e-5 (about
10x); parameter gradients <= 1.2e-4 absolute, within the asserted 1e-4 x
max(1, |largest gradient of the parameter|).
The comparisons with the reference take the ``device`` fixture (``make
gpu-check``: on CUDA both 'fast' and 'plain' run the plain path, the fast
path being CPU-only).
"""
import pytest
import torch
import torch.nn.functional as F
from helpers import randomize_
from reference_swin import ReferenceStage

from mmswin.models import cpu_fast_path
from mmswin.models.cpu_fast_path import linear as onednn
from mmswin.models.cpu_fast_path import row_ops
from mmswin.models.layers import SwinStage

TOL = 1e-4
OUT_TOL = 2.5e-5  # outputs and the input's gradient vs the reference
DIM, HEADS = 32, 2


def make_pair(v2: bool, window: int, device: str = 'cpu'):
    ours = SwinStage(DIM, 2, HEADS, window_size=window, post_norm=v2,
                     pretrained_window_size=window // 2 if v2 else 0)
    randomize_(ours, seed=3)
    ref = ReferenceStage(DIM, 2, HEADS, window, v2,
                         pretrained_ws=window // 2 if v2 else 0)
    ref.load_state_dict(ours.state_dict())
    return ours.to(device), ref.to(device)


def run(stage: torch.nn.Module, x: torch.Tensor):
    """Output and the gradients of a fixed weighted sum of it."""
    x = x.clone().requires_grad_()
    out = stage(x)
    weights = torch.linspace(-1, 1, out.numel(),
                             device=out.device).view_as(out)
    (out * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in stage.named_parameters()}
    stage.zero_grad()
    return out.detach(), x.grad, grads


@pytest.mark.parametrize('v2', [False, True], ids=['v1', 'v2'])
@pytest.mark.parametrize('fast', [True, False], ids=['fast', 'plain'])
@pytest.mark.parametrize('shape,window', [((2, 13, 17), 7), ((1, 9, 6), 4),
                                          ((3, 7, 7), 7)])
def test_stage_matches_reference_in_training(v2, fast, shape, window,
                                             device):
    ours, ref = make_pair(v2, window, device)
    ours.cpu_fast_path = fast
    x = torch.randn(*shape, DIM).to(device)
    out, gx, grads = run(ours.train(), x)
    ref_out, ref_gx, ref_grads = run(ref.train(), x)
    assert (out - ref_out).abs().max() <= OUT_TOL
    assert (gx - ref_gx).abs().max() <= OUT_TOL
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        scale = max(ref_grads[name].abs().max().item(), 1.0)
        diff = (grad - ref_grads[name]).abs().max().item()
        assert diff <= TOL * scale, f'{name}: {diff}'


@pytest.mark.parametrize('v2', [False, True], ids=['v1', 'v2'])
def test_fast_inference_in_row_blocks_matches_reference(v2, monkeypatch):
    """In-place inference in pieces of one or two windows (padded and
    masked windows split across pieces); the input stays untouched."""
    monkeypatch.setattr(row_ops, 'CHUNK_FLOATS_PER_THREAD', 60 * 128)
    ours, ref = make_pair(v2, 7)
    x = torch.randn(2, 19, 23, DIM)
    before = x.clone()
    with torch.no_grad():
        got = ours.eval()(x)
        expected = ref.eval()(x)
    assert torch.equal(x, before)
    assert (got - expected).abs().max() <= OUT_TOL


@pytest.mark.parametrize('v2', [False, True], ids=['v1', 'v2'])
def test_fast_path_without_onednn_matches_reference(v2, monkeypatch):
    """Where torch has no oneDNN linear the fast path falls back to
    F.linear and still equals the reference, in training and inference."""
    monkeypatch.setattr(onednn, '_ONEDNN_LINEAR', None)
    ours, ref = make_pair(v2, 7)
    x = torch.randn(2, 19, 23, DIM)
    out, gx, _ = run(ours.train(), x)
    ref_out, ref_gx, _ = run(ref.train(), x)
    assert (out - ref_out).abs().max() <= TOL
    assert (gx - ref_gx).abs().max() <= TOL
    with torch.no_grad():
        assert (ours.eval()(x) - ref.eval()(x)).abs().max() <= TOL


@pytest.mark.parametrize('gelu', [False, True], ids=['linear', 'gelu'])
@pytest.mark.parametrize('bias', [True, False], ids=['bias', 'no-bias'])
def test_onednn_linear_is_f_linear_in_value_and_gradients(gelu, bias,
                                                          monkeypatch):
    """cpu_fast_path.linear against F.linear (+ exact GELU), on 3-D
    tokens: same values and gradients for x, weight and bias; oneDNN is
    called for fp32 (so the comparison tests it), not for float64, under
    bf16 autocast or under export."""
    if onednn._ONEDNN_LINEAR is None:
        pytest.skip('this torch has no oneDNN linear')
    calls = []
    op = onednn._ONEDNN_LINEAR

    def counted(*args):
        calls.append(args[3])
        return op(*args)

    monkeypatch.setattr(onednn, '_ONEDNN_LINEAR', counted)
    x = torch.randn(3, 13, 24, requires_grad=True)
    w = torch.randn(40, 24, requires_grad=True)
    b = torch.randn(40, requires_grad=True) if bias else None
    got = onednn.linear(x, w, b, gelu=gelu)
    assert got.shape == (3, 13, 40)
    expected = F.linear(x, w, b)
    expected = F.gelu(expected) if gelu else expected
    assert (got - expected).abs().max() <= 1e-5
    weights = torch.randn_like(got)
    leaves = [t for t in (x, w, b) if t is not None]
    grads = torch.autograd.grad((got * weights).sum(), leaves)
    ref_grads = torch.autograd.grad((expected * weights).sum(), leaves)
    for grad, ref_grad in zip(grads, ref_grads):
        assert (grad - ref_grad).abs().max() <= 1e-4
    with torch.no_grad():  # fused GELU without autograd
        got = onednn.linear(x, w, b, gelu=gelu)
    assert (got - expected).abs().max() <= 1e-5
    assert calls == ['none', 'none', 'gelu' if gelu else 'none']
    calls.clear()
    onednn.linear(x.double(), w.double(), None if b is None else b.double())
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert onednn.linear(x, w, b).dtype == torch.bfloat16
    monkeypatch.setattr(torch.compiler, 'is_exporting', lambda: True)
    onednn.linear(x, w, b)
    assert calls == []


def test_onednn_linear_flops_are_counted():
    """FlopCounterMode (the benchmarks' FLOP count) counts the custom op
    as it counts F.linear's matmul: 2 * rows * in * out."""
    from torch.utils.flop_counter import FlopCounterMode
    x, w = torch.randn(3, 13, 24), torch.randn(40, 24)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        onednn.linear(x, w)
    assert counter.get_total_flops() == 2 * 39 * 24 * 40


def test_reference_catches_a_wrong_shift_mask(monkeypatch, device):
    """Control: with the mask's regions off by one row the plain path no
    longer matches the reference, so the comparison can fail."""
    from mmswin.models.layers import block, windows
    ours, ref = make_pair(False, 4, device)
    ours.cpu_fast_path = False

    def shifted_regions(*args, **kwargs):
        mask = windows.shift_window_mask(*args, **kwargs)
        return mask.roll(1, dims=1)

    monkeypatch.setattr(block, 'shift_window_mask', shifted_regions)
    x = torch.randn(1, 9, 9, DIM).to(device)
    with torch.no_grad():
        assert (ours.eval()(x) - ref.eval()(x)).abs().max() > 1e-2


def test_fast_path_applies_only_to_eager_cpu():
    x = torch.zeros(1)
    assert cpu_fast_path.applies(x)
    assert not cpu_fast_path.applies(torch.zeros(1, device='meta'))
    seen = []

    def probe(t):
        seen.append(cpu_fast_path.applies(t))
        return t + 1

    torch.compile(probe, backend='eager', fullgraph=True)(x)
    assert seen == [False]


def test_plain_path_runs_on_meta_device():
    """The non-CPU dispatch (the path GPUs take) builds every shape from the
    input alone: a meta-device stage gives the right output shape."""
    stage = SwinStage(DIM, 2, HEADS, window_size=7).to('meta')
    out = stage(torch.empty(2, 13, 17, DIM, device='meta'))
    assert out.shape == (2, 13, 17, DIM) and out.device.type == 'meta'


@pytest.mark.parametrize('height,width', [(1, 1), (7, 7), (9, 13), (15, 8)])
@pytest.mark.parametrize('window,shift', [(7, 0), (7, 3), (4, 2)])
def test_window_indices_are_pad_roll_partition_and_back(height, width,
                                                        window, shift):
    """The gather indices against the official steps applied to a map of
    token numbers: zero-pad (here: the zero token's number), roll, cut."""
    from mmswin.models.layers import windows
    token = torch.arange(height * width).view(height, width)
    padded_h = -(-height // window) * window
    padded_w = -(-width // window) * window
    padded = torch.full((padded_h, padded_w), height * width)
    padded[:height, :width] = token
    rolled = padded.roll((-shift, -shift), (0, 1))
    expected = rolled.view(padded_h // window, window, padded_w // window,
                           window).transpose(1, 2).flatten()
    index = windows.window_token_index(height, width, window, shift)
    assert torch.equal(index, expected)
    position = windows.window_position_index(height, width, window, shift)
    assert torch.equal(index[position], token.flatten())


@pytest.mark.parametrize('height,width', [(1, 1), (2, 2), (5, 4), (6, 9)])
def test_merge_index_is_the_official_neighbour_order(height, width):
    """Patch merging's neighbours: the official pad to even sides, then
    x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]."""
    from mmswin.models.layers import windows
    padded = torch.full((height + height % 2, width + width % 2),
                        height * width)
    padded[:height, :width] = torch.arange(height * width).view(height,
                                                                width)
    expected = torch.stack([padded[0::2, 0::2], padded[1::2, 0::2],
                            padded[0::2, 1::2], padded[1::2, 1::2]], -1)
    index = windows.merge_token_index(height, width)
    assert torch.equal(index, expected.flatten())
