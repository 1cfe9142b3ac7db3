"""Numerical parity of mmswin's SwinTransformer with independent
implementations given the same weights.

Measured (CPU, fp32, random weights, oneDNN linear layers): max abs diff
vs mmdet's and mmseg's backbones 6.0e-6 to 8.9e-6 at 224x224, 97x131 and
800x1333 on all four outputs (800x1333: 7.5e-6 sdpa, 8.9e-6 math), in
both attention paths, on the plain path and on the CPU fast path; 8.1e-6
in small row blocks. Parameter gradients within 4.1e-6 x their scale, the
input's gradient 6.3e-5. The asserted 1e-4 is about 10x the forward
maximum.
"""
import pytest
import torch
from helpers import max_abs_diff, randomize_

from mmswin.checkpoint.layouts import from_openmmlab
from mmswin.models import SwinTransformer
from mmswin.models.cpu_fast_path import row_ops

TOL = 1e-4
TINY = dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))


def _openmmlab_backbone(library: str):
    if library == 'mmdet':
        from mmdet.models.backbones import SwinTransformer as Theirs
    else:
        from mmseg.models.backbones import SwinTransformer as Theirs
    theirs = Theirs(**TINY, window_size=7, drop_path_rate=0.,
                    out_indices=(0, 1, 2, 3))
    theirs.eval()  # returns None in mmdet/mmseg, so not chained
    return randomize_(theirs)


@pytest.fixture(scope='module', params=['mmdet', 'mmseg'])
def openmmlab_pair(request, device):
    theirs = _openmmlab_backbone(request.param)
    ours = SwinTransformer(arch='tiny', drop_path_rate=0.).eval()
    missing, unexpected = ours.load_state_dict(
        from_openmmlab(theirs.state_dict()), strict=True)
    assert not missing and not unexpected
    return request.param, theirs.to(device), ours.to(device)


def set_cpu_fast_path(model: SwinTransformer, enabled: bool) -> None:
    """Switch the CPU fast path of every stage of a built backbone."""
    for stage in model.layers:
        stage.cpu_fast_path = enabled


@pytest.mark.parametrize('size', [(224, 224), (97, 131), (800, 1333)])
@pytest.mark.parametrize('attn_impl', ['sdpa', 'math'])
@pytest.mark.parametrize('fast', [True, False], ids=['fast', 'plain'])
def test_parity_with_openmmlab(openmmlab_pair, size, attn_impl, fast,
                               device):
    library, theirs, ours = openmmlab_pair
    set_cpu_fast_path(ours, fast)
    for block in ours.modules():
        if hasattr(block, 'attn_impl'):
            block.attn_impl = attn_impl
    x = torch.randn(1, 3, *size, device=device)
    with torch.no_grad():
        expected = theirs(x)
        got = ours(x)
    diffs = max_abs_diff(expected, got)
    assert max(diffs) <= TOL, f'{library} {size} {attn_impl}: {diffs}'


def test_output_shapes_follow_ceil_division():
    model = SwinTransformer(arch='tiny', drop_path_rate=0.).eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, 97, 131))
    h, w = 25, 33  # ceil(97 / 4), ceil(131 / 4)
    for i, out in enumerate(outs):
        assert out.shape == (2, 96 * 2**i, h, w)
        h, w = -(-h // 2), -(-w // 2)


@pytest.mark.parametrize('chunk_rows,fast', [(None, True), (37, True),
                                              (None, False)])
def test_gradients_match_mmdet(monkeypatch, chunk_rows, fast, device):
    """Training: every parameter's gradient and the input's equal those of
    mmdet's backbone (same weights), on the plain path and on the CPU fast
    path, also with its MLP run in many row blocks. Measured max abs diff
    ~1e-6 for gradients of order 1."""
    if chunk_rows:
        # blocks of 37 rows of the first stage (4C = 384 hidden channels)
        monkeypatch.setattr(row_ops, 'CHUNK_FLOATS_PER_THREAD',
                            chunk_rows * 384)
    theirs = _openmmlab_backbone('mmdet')
    ours = SwinTransformer(arch='tiny', drop_path_rate=0.)
    set_cpu_fast_path(ours, fast)
    ours.load_state_dict(from_openmmlab(theirs.state_dict()))
    theirs.to(device).train()
    ours.to(device).train()
    x = torch.randn(2, 3, 97, 131, device=device)
    grads = []
    for model in (theirs, ours):
        xi = x.clone().requires_grad_()
        outs = model(xi)
        loss = sum((o * torch.linspace(-1, 1, o.numel(), device=device)
                    .view_as(o)).sum() for o in outs)
        loss.backward()
        params = {n: p.grad for n, p in model.named_parameters()}
        grads.append((xi.grad, params))
    (x_theirs, p_theirs), (x_ours, p_ours) = grads
    assert (x_ours - x_theirs).abs().max() <= TOL
    converted = from_openmmlab(p_theirs)
    assert converted.keys() == p_ours.keys()
    for name, grad in p_ours.items():
        assert grad is not None, name
        diff = (grad - converted[name]).abs().max().item()
        scale = max(converted[name].abs().max().item(), 1.0)
        assert diff <= TOL * scale, f'{name}: {diff} (scale {scale})'


def test_inference_in_small_row_blocks_matches(openmmlab_pair, monkeypatch):
    """Without autograd on CPU the blocks run in row blocks, overwriting the
    stage's own buffers: with blocks of a few windows (many per stage,
    padded and shift-masked windows split among them) the outputs still
    equal the reference's and the caller's input is untouched."""
    library, theirs, ours = openmmlab_pair
    set_cpu_fast_path(ours, True)
    monkeypatch.setattr(row_ops, 'CHUNK_FLOATS_PER_THREAD', 50 * 384)
    x = torch.randn(2, 3, 97, 131)
    before = x.clone()
    with torch.no_grad():
        expected = theirs(x)
        got = ours(x)
    assert torch.equal(x, before)
    diffs = max_abs_diff(expected, got)
    assert max(diffs) <= TOL, f'{library}: {diffs}'
