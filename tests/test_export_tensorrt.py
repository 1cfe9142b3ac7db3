"""TensorRT readiness without a GPU (issue 20 item 5): every graph the export
tests make (session fixtures of tests/export_graphs.py, not exported again)
is read and checked against TensorRT's ONNX-parser support matrix
(mmswin/deploy/tensorrt_ops.py names its source and version): each op type
and data type supported, every TopK's K a constant below 3840, each
LayerNorm one LayerNormalization op. A hand-made graph with each problem is
the control that the check can fail."""
import numpy as np
import pytest
import torch
import torch.nn as nn
from export_graphs import TOY_FASTER, TWO_STAGE_DET, toy_model

onnx = pytest.importorskip('onnx')
pytest.importorskip('onnxscript')

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from mmswin.deploy.tensorrt_ops import (  # noqa: E402
    SOURCE,
    TOPK_LIMIT,
    tensorrt_problems,
)

GRAPHS = ['upernet_graph', 'det_features_graph',
          'mask_rcnn_graph', 'cascade_graph', 'faster_rcnn_tool_export']


def layer_norms_run(module: nn.Module, *inputs) -> int:
    """How many ``nn.LayerNorm`` modules run in one forward (each once in
    the graph; eagerly the CPU fast path may call one twice)."""
    ran = set()
    hooks = [m.register_forward_hook(lambda m, *_: ran.add(id(m)))
             for m in module.modules() if isinstance(m, nn.LayerNorm)]
    with torch.no_grad():
        module(*inputs)
    for hook in hooks:
        hook.remove()
    return len(ran)


def assert_ready_for_tensorrt(path: str, backbone: nn.Module) -> list:
    """The checks on one file; returns its op types."""
    model = onnx.load(path)
    problems = tensorrt_problems(model)
    assert not problems, f'{SOURCE}:\n' + '\n'.join(problems)
    ops = [node.op_type for node in model.graph.node]
    # every LayerNorm the backbone runs is one op, none decomposed
    expected = layer_norms_run(backbone, torch.rand(1, 3, 96, 96))
    assert expected > 0
    assert ops.count('LayerNormalization') == expected
    return ops


def test_exported_backbones_are_ready_for_tensorrt(backbone_graph):
    assert_ready_for_tensorrt(backbone_graph.path, backbone_graph.model)


@pytest.mark.parametrize('graph', GRAPHS)
def test_exported_models_are_ready_for_tensorrt(graph, request):
    exported = request.getfixturevalue(graph)
    if graph == 'faster_rcnn_tool_export':  # the tool's file, in a process
        path, backbone = exported[1], toy_model(
            TOY_FASTER, TWO_STAGE_DET).backbone
    else:
        path, backbone = exported.path, exported.model.backbone
    ops = assert_ready_for_tensorrt(path, backbone)
    if graph not in ('upernet_graph', 'det_features_graph'):
        assert 'NonMaxSuppression' in ops and 'RoiAlign' in ops
        assert 'TopK' in ops  # the RPN's nms_pre, K checked above


def bad_graph():
    """A graph with one of each problem the check looks for."""
    x = helper.make_tensor_value_info('x', TensorProto.FLOAT, ['N'])
    nodes = [
        helper.make_node('Unique', ['x'], ['u']),
        helper.make_node('TopK', ['x', 'big'], ['v1', 'i1']),
        helper.make_node('Shape', ['x'], ['n']),
        helper.make_node('TopK', ['x', 'n'], ['v2', 'i2']),
        helper.make_node('TopK', ['x', 'small'], ['v3', 'i3'], sorted=0),
        helper.make_node('Cast', ['x'], ['mask'], to=TensorProto.BOOL),
        helper.make_node('NonZero', ['mask'], ['nz']),
        helper.make_node('ScatterND', ['x', 'idx', 'x'], ['s'],
                         reduction='add'),
        helper.make_node('Unsqueeze', ['x', 'n'], ['x2']),
        helper.make_node('LayerNormalization', ['x2', 'w'],
                         ['ln', 'mean', 'inv'], axis=-1),
        helper.make_node('Add', ['mean', 'mean'], ['y']),
    ]
    inits = [numpy_helper.from_array(np.array([TOPK_LIMIT], np.int64), 'big'),
             numpy_helper.from_array(np.array([3], np.int64), 'small'),
             numpy_helper.from_array(np.zeros((1, 1), np.int64), 'idx'),
             numpy_helper.from_array(np.ones(1, np.float32), 'w')]
    out = helper.make_tensor_value_info('y', TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, 'bad', [x], [out], inits)
    model = helper.make_model(graph, opset_imports=[
        helper.make_opsetid('', 21)])
    return onnx.shape_inference.infer_shapes(model)


def test_the_check_finds_each_problem():
    problems = '\n'.join(tensorrt_problems(bad_graph()))
    for expected in ('opset 21 > 20', "Unique '': not in the supported ops",
            f'K bound {float(TOPK_LIMIT)} is not a constant < 3840',
            'K bound None', 'sorted=0', "NonZero '': type BOOL",
            'reduction is not supported', 'input 1 (axes) is not constant',
            'mean/variance outputs are used'):
        assert expected in problems, (expected, problems)
