"""The backbones export and compile with dynamic shapes, exact at every size.

One ONNX file per backbone, exported at one size through
``torch.onnx.export(dynamo=True)`` with dynamic batch, height and width, runs
in ONNX Runtime at 8 other shapes (sides that are not multiples of 4, 7 or
32, batches 1 to 3) and matches eager PyTorch within 2.5e-5 (measured max
abs diff 2.2e-6): the padding, the cyclic shift, the window partition and
the shift mask are computed in the graph from the input's shape.
``torch.compile(dynamic=True)`` traces the backbone without graph breaks
and compiles at most twice across 4 sizes (dynamo specialises batch 1);
inductor's dynamic forward (one compile for 3 sizes of batch >= 2) and
training step match eager within 1e-4.
``check_finite=True`` is refused under export and under
``torch.compile(fullgraph=True)``. Every test takes the ``device``
fixture (``make gpu-check`` runs them on CUDA; ONNX Runtime stays on the
CPU).
"""
import re

import numpy as np
import pytest
import torch
from helpers import randomize_

from mmswin.models import SwinTransformer, SwinTransformerV2
from mmswin.models.backbones.base import COMPILE_FINITE_MESSAGE

ort = pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')

TOL = 1e-4  # compiled vs eager
ONNX_TOL = 2.5e-5  # ONNX Runtime vs eager: about 10x the measured max
SMALL = dict(embed_dims=16, depths=(2, 2), num_heads=(1, 2))
EXPORT_SHAPE = (2, 3, 128, 160)
SHAPES = [(1, 3, 97, 131), (2, 3, 161, 225), (3, 3, 64, 64),
          (1, 3, 511, 511), (1, 3, 33, 47), (2, 3, 224, 224),
          (3, 3, 75, 113), (1, 3, 800, 1333)]


def small_backbone(version: int) -> torch.nn.Module:
    if version == 1:
        model = SwinTransformer(arch=SMALL, out_indices=(0, 1),
                                drop_path_rate=0.)
    else:
        model = SwinTransformerV2(arch=SMALL, window_size=(8, 4),
                                  pretrained_window_sizes=(4, 4),
                                  out_indices=(0, 1), drop_path_rate=0.)
    return randomize_(model).eval()


def export_dynamic(model: torch.nn.Module, path: str,
                   device: torch.device) -> None:
    batch = torch.export.Dim('batch', max=64)
    height = torch.export.Dim('height', min=16, max=4096)
    width = torch.export.Dim('width', min=16, max=4096)
    # Under no_grad, as users export: the traced attention output then has
    # strides of its own, which the graph must not rely on.
    with torch.no_grad():
        torch.onnx.export(
            model, (torch.randn(*EXPORT_SHAPE, device=device), ), path,
            dynamo=True,
            input_names=['image'],
            dynamic_shapes={'x': {0: batch, 2: height, 3: width}})


@pytest.mark.parametrize('version', [1, 2], ids=['v1', 'v2'])
def test_onnx_export_is_exact_at_every_shape(version, tmp_path, device):
    model = small_backbone(version).to(device)
    path = str(tmp_path / 'backbone.onnx')
    export_dynamic(model, path, device)
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    for shape in SHAPES:
        x = torch.randn(*shape)
        with torch.no_grad():
            expected = [e.cpu() for e in model(x.to(device))]
        got = session.run(None, {'image': x.numpy()})
        assert [g.shape for g in got] == [tuple(e.shape) for e in expected]
        diff = max(np.abs(g - e.numpy()).max()
                   for g, e in zip(got, expected))
        assert diff <= ONNX_TOL, f'{shape}: {diff}'


def test_legacy_exporter_is_refused_with_the_fix(tmp_path, device):
    model = small_backbone(1).to(device)
    with pytest.raises(Exception, match='dynamo=True'):
        torch.onnx.export(model, (torch.randn(*EXPORT_SHAPE, device=device), ),
                          str(tmp_path / 'legacy.onnx'), dynamo=False,
                          dynamic_axes={'x': {0: 'b', 2: 'h', 3: 'w'}})


def test_check_finite_is_refused_under_export(device):
    model = SwinTransformer(arch=SMALL, out_indices=(0, 1),
                            check_finite=True).eval().to(device)
    with pytest.raises(Exception, match='check_finite'):
        torch.export.export(model, (torch.randn(*EXPORT_SHAPE,
                                                device=device), ))


def test_check_finite_is_refused_under_fullgraph_compile(device):
    """The NaN/Inf check depends on values, so a full graph cannot hold it:
    the compile fails with the backbone's message. Control: the same
    backbone without check_finite compiles as one graph."""
    arch = dict(embed_dims=8, depths=(1, ), num_heads=(1, ))
    x = torch.randn(1, 3, 32, 32, device=device)
    for check_finite in (True, False):
        torch._dynamo.reset()
        model = SwinTransformer(arch=arch, out_indices=(0, ),
                                check_finite=check_finite).eval().to(device)
        compiled = torch.compile(model, backend='eager', fullgraph=True)
        with torch.no_grad():
            if not check_finite:
                assert compiled(x)[0].shape == (1, 8, 8, 8)
                continue
            with pytest.raises(Exception, match=re.escape(
                    COMPILE_FINITE_MESSAGE[:60])):
                compiled(x)


class CountingBackend:
    """A torch.compile backend counting the graphs it compiles.

    Counted once compiled: with dynamic=True dynamo first hands inductor a
    graph whose float module attributes (LayerNorm eps, dropout p) are
    symbolic; inductor asks it to specialise them and trace again, a
    restart of the same compilation (torch's behaviour for every module).
    """

    def __init__(self, backend: str) -> None:
        self.backend = torch._dynamo.lookup_backend(backend)
        self.graphs = 0

    def __call__(self, graph, example_inputs):
        compiled = self.backend(graph, example_inputs)
        self.graphs += 1
        return compiled


def assert_compiled_matches_eager(compiled, model, shapes,
                                  device: torch.device) -> None:
    """Every output of ``compiled`` within TOL of ``model``'s, per shape."""
    with torch.no_grad():
        for shape in shapes:
            x = torch.randn(*shape, device=device)
            diffs = [(a - b).abs().max().item()
                     for a, b in zip(compiled(x), model(x))]
            assert max(diffs) <= TOL, f'{shape}: {diffs}'


def test_compile_dynamic_has_no_graph_breaks_and_few_recompiles(device):
    """dynamo, dynamic=True: one graph, compiled at most twice over 4 sizes
    (dynamo specialises the first, batch-1 call). fullgraph=True makes any
    graph break an error naming it. The count is dynamo's; every backend
    compiles the graphs dynamo hands it."""
    model = small_backbone(1).to(device)
    torch._dynamo.reset()
    backend = CountingBackend('eager')
    compiled = torch.compile(model, backend=backend, dynamic=True,
                             fullgraph=True)
    assert_compiled_matches_eager(
        compiled, model, [(1, 3, 97, 131), (2, 3, 161, 225), (2, 3, 64, 96),
                          (3, 3, 200, 120)], device)
    assert backend.graphs <= 2, backend.graphs


def loss_of(outputs) -> torch.Tensor:
    """A loss that weighs every output element differently."""
    return sum((o * torch.linspace(-1, 1, o.numel(),
                                   device=o.device).view_as(o)).sum()
               for o in outputs)


def test_inductor_dynamic_forward_compiles_once_over_three_sizes(device):
    """inductor, dynamic=True: one compile serves every size with batch
    >= 2; outputs equal eager's. (Dynamo's batch-1 specialisation, a second
    compile of minutes with inductor, is counted with the eager backend
    above.)"""
    torch._dynamo.reset()
    model = small_backbone(1).to(device)
    backend = CountingBackend('inductor')
    compiled = torch.compile(model, backend=backend, dynamic=True)
    assert_compiled_matches_eager(
        compiled, model, [(2, 3, 97, 131), (3, 3, 161, 225),
                          (2, 3, 200, 120)], device)
    assert backend.graphs == 1, backend.graphs


def test_inductor_dynamic_training_step_matches_eager(device):
    """inductor, dynamic=True: the compiled training step's outputs
    and gradients equal eager's (one size: the forward test above covers
    the sizes; a compile takes ~1.5 min here). SwinV2, whose blocks run
    every op V1's do plus the cosine attention and the continuous position
    bias."""
    torch._dynamo.reset()
    model = small_backbone(2).to(device).train()
    backend = CountingBackend('inductor')
    compiled = torch.compile(model, backend=backend, dynamic=True)
    x = torch.randn(2, 3, 61, 83, device=device)
    grads, outs = [], []
    for fn in (model, compiled):
        out = fn(x)
        loss_of(out).backward()
        outs.append([o.detach() for o in out])
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
        model.zero_grad()
    for eager, comp in zip(*outs):
        assert (eager - comp).abs().max() <= TOL
    for name, grad in grads[0].items():
        scale = max(grad.abs().max().item(), 1.0)
        assert (grads[1][name] - grad).abs().max() <= TOL * scale, name
    assert backend.graphs == 1, backend.graphs
