"""make_runner (issue 20): ONNX Runtime and OpenVINO on a small hand-built
ONNX graph with two named inputs and outputs, OpenVINO's bf16 hint, the
CPU-bf16 detector and its fp32 fallback, and the errors for bad input."""
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from mmswin.deploy import runtime  # noqa: E402
from mmswin.deploy.runtime import (  # noqa: E402
    OpenVinoRunner,
    OrtRunner,
    bf16_support,
    make_runner,
)

K = 256  # reduction length of the graph's MatMul
# bf16 keeps 8 significant bits: each product's operands are rounded by at
# most 2**-9 relative, so |bf16 - fp32| of a length-K dot product is at most
# about 2 * 2**-9 * sum |a_i w_i|; 2**-7 * max|out| is far above what a
# random sum of K such errors reaches and far below an fp32 bug's size.
BF16_BOUND = 2.0**-7


@pytest.fixture(scope='module')
def weight() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(K, 8)).astype(np.float32)


@pytest.fixture(scope='module')
def model_file(tmp_path_factory, weight) -> str:
    """``features = images.reshape(B, -1)[:, :K] @ W`` and
    ``sizes = image_sizes + 1``: outputs listed in the other order than the
    inputs they come from, so names are checked, not positions."""
    nodes = [
        helper.make_node('Flatten', ['images'], ['flat'], axis=1),
        helper.make_node('Slice', ['flat', 'zero', 'k', 'one'], ['head']),
        helper.make_node('MatMul', ['head', 'W'], ['features']),
        helper.make_node('Add', ['image_sizes', 'one64'], ['sizes']),
    ]
    inits = [numpy_helper.from_array(weight, 'W'),
             numpy_helper.from_array(np.array([0], np.int64), 'zero'),
             numpy_helper.from_array(np.array([K], np.int64), 'k'),
             numpy_helper.from_array(np.array([1], np.int64), 'one'),
             numpy_helper.from_array(np.array(1, np.int64), 'one64')]
    graph = helper.make_graph(
        nodes, 'toy',
        [helper.make_tensor_value_info('images', TensorProto.FLOAT,
                                       ['B', 3, 'H', 'W']),
         helper.make_tensor_value_info('image_sizes', TensorProto.INT64,
                                       ['B', 2])],
        [helper.make_tensor_value_info('sizes', TensorProto.INT64, ['B', 2]),
         helper.make_tensor_value_info('features', TensorProto.FLOAT,
                                       ['B', 8])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('',
                                                                        17)])
    path = str(tmp_path_factory.mktemp('runtime') / 'toy.onnx')
    onnx.save(model, path)
    return path


@pytest.fixture(scope='module')
def inputs():
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (2, 3, 16, 12)).astype(np.float32)
    return dict(images=images,
                image_sizes=np.array([[16, 12], [9, 7]], np.int64))


def expected(inputs, weight):
    head = inputs['images'].reshape(2, -1)[:, :K].astype(np.float64)
    return head @ weight, inputs['image_sizes'] + 1


def check_fp32(out, inputs, weight):
    features, sizes = expected(inputs, weight)
    assert list(out) == ['sizes', 'features']
    np.testing.assert_array_equal(out['sizes'], sizes)
    assert out['sizes'].dtype == np.int64
    rel = np.abs(out['features'] - features).max() / np.abs(features).max()
    assert rel < 1e-6, rel


def test_onnxruntime_by_name(model_file, inputs, weight):
    runner = make_runner(model_file, 'onnxruntime', threads=1)
    assert runner.input_names == ['images', 'image_sizes']
    assert runner.output_names == ['sizes', 'features']
    check_fp32(runner(**inputs), inputs, weight)
    check_fp32(runner(inputs), inputs, weight)  # a dict works the same
    # The positional form of the export tool: outputs in graph order.
    legacy = OrtRunner(model_file).session.run(None, inputs)
    np.testing.assert_array_equal(legacy[1], runner(inputs)['features'])


def test_openvino_onnx_and_xml(model_file, inputs, weight, tmp_path):
    ov = pytest.importorskip('openvino')
    runner = make_runner(model_file, 'openvino', 'fp32', threads=1)
    assert runner.precision == 'fp32'
    assert runner.input_names == ['images', 'image_sizes']
    check_fp32(runner(**inputs), inputs, weight)
    xml = str(tmp_path / 'toy.xml')
    # save_model's default would store the weights in fp16.
    ov.save_model(ov.convert_model(model_file), xml, compress_to_fp16=False)
    check_fp32(make_runner(xml, 'openvino')(**inputs), inputs, weight)


def test_openvino_bf16(model_file, inputs, weight):
    pytest.importorskip('openvino')
    if not runtime.cpu_has_bf16():
        pytest.skip(f'this CPU has no bf16: {bf16_support()[1]}')
    runner = make_runner(model_file, 'openvino', 'bf16')
    assert runner.precision == 'bf16'
    out = runner(**inputs)
    features, sizes = expected(inputs, weight)
    np.testing.assert_array_equal(out['sizes'], sizes)
    rel = np.abs(out['features'] - features).max() / np.abs(features).max()
    # Really bf16 (an fp32 run is within 1e-6), and within bf16 rounding.
    assert 1e-4 < rel < BF16_BOUND, rel


def test_bf16_fallback_without_bf16(model_file, inputs, weight, monkeypatch):
    pytest.importorskip('openvino')
    monkeypatch.setattr(runtime, '_openvino_capabilities',
                        lambda: ['FP32', 'INT8'])
    monkeypatch.setattr(runtime, '_cpuinfo_flags', lambda: {'avx2', 'fma'})
    assert not runtime.cpu_has_bf16()
    with pytest.warns(UserWarning, match=r'no bf16 arithmetic \(OpenVINO.*'
                      r'FP32, INT8 \(no BF16\).*avx512_bf16.*running fp32'):
        runner = make_runner(model_file, 'openvino', 'bf16')
    assert runner.precision == 'fp32'
    check_fp32(runner(**inputs), inputs, weight)


def test_cpu_bf16_detection(monkeypatch, tmp_path):
    monkeypatch.setattr(runtime, '_openvino_capabilities', lambda: None)
    info = tmp_path / 'cpuinfo'
    info.write_text('processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n')
    assert runtime._cpuinfo_flags(str(info)) == {'fpu', 'avx512f',
                                                 'avx512_bf16'}
    read_flags = runtime._cpuinfo_flags
    monkeypatch.setattr(runtime, '_cpuinfo_flags',
                        lambda: read_flags(str(info)))
    assert bf16_support() == (True, '/proc/cpuinfo has avx512_bf16')
    monkeypatch.setattr(runtime, '_cpuinfo_flags', lambda: None)
    assert bf16_support() == (False, '/proc/cpuinfo is unreadable')
    monkeypatch.setattr(runtime, '_openvino_capabilities',
                        lambda: ['FP32', 'BF16'])
    assert bf16_support()[0]


@pytest.mark.parametrize('call, error, message', [
    (lambda f: make_runner(f, 'onnxruntime', 'bf16'), ValueError,
     r"bf16 needs backend='openvino'"),
    (lambda f: make_runner(f, 'tensorrt'), ValueError,
     r"unknown backend 'tensorrt'; use one of onnxruntime, openvino"),
    (lambda f: make_runner(f, precision='int8'), ValueError,
     r"unknown precision 'int8'.*quantize.py"),
    (lambda f: make_runner(f + '.missing.onnx'), FileNotFoundError,
     r'model file not found: .*missing.onnx'),
    (lambda f: make_runner(f[:-5] + '.pth'), ValueError,
     r'onnxruntime runs .onnx files'),
    (lambda f: make_runner(f[:-5] + '.xml'), ValueError,
     r'an OpenVINO .xml needs --backend openvino'),
    (lambda f: make_runner(f[:-5] + '.pth', 'openvino'), ValueError,
     r'openvino runs .onnx or .xml files'),
])
def test_bad_arguments(model_file, call, error, message):
    with pytest.raises(error, match=message):
        call(model_file)


def test_xml_without_bin(tmp_path):
    xml = tmp_path / 'model.xml'
    xml.write_text('<net/>')
    with pytest.raises(FileNotFoundError, match=r'model.bin are missing'):
        make_runner(str(xml), 'openvino')


def test_wrong_input_names(model_file, inputs):
    runner = make_runner(model_file)
    with pytest.raises(ValueError, match=r"takes inputs \['images', "
                       r"'image_sizes'\]; missing \['image_sizes'\], "
                       r"unknown \['sizes'\]"):
        runner(images=inputs['images'], sizes=inputs['image_sizes'])


def test_legacy_runners_positional(tmp_path):
    """OrtRunner / OpenVinoRunner(images) -> outputs in graph order."""
    path = str(tmp_path / 'scale.onnx')
    graph = helper.make_graph(
        [helper.make_node('Mul', ['images', 'two'], ['doubled']),
         helper.make_node('ReduceMax', ['images'], ['peak'], keepdims=0)],
        'scale',
        [helper.make_tensor_value_info('images', TensorProto.FLOAT,
                                       ['B', 3, 'H', 'W'])],
        [helper.make_tensor_value_info('doubled', TensorProto.FLOAT,
                                       ['B', 3, 'H', 'W']),
         helper.make_tensor_value_info('peak', TensorProto.FLOAT, [])],
        [numpy_helper.from_array(np.array(2, np.float32), 'two')])
    onnx.save(helper.make_model(
        graph, opset_imports=[helper.make_opsetid('', 17)]), path)
    images = np.arange(24, dtype=np.float32).reshape(1, 3, 2, 4)
    runners = [OrtRunner(path)]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        try:
            runners.append(OpenVinoRunner(path))
        except ImportError:
            pass
    for runner in runners:
        doubled, peak = runner(images)
        np.testing.assert_array_equal(doubled, images * 2)
        assert float(peak) == 23.0
