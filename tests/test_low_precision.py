"""int8 post-training quantisation (issue 20, item 3):
tools/deployment/quantize.py on the toy segmentor of tests/deploy_fixtures.py,
with NNCF (OpenVINO) and ONNX Runtime. The int8 file keeps the graph's input
and output names and mmswin's metadata, is evaluated by the config's own test
loop like any export, and really runs in int8: its logits differ from fp32's,
by less than 10 % of their range (measured ~1-4 %).

Not here: the 1.0-point mAP/mIoU bound of the issue. On the random-weight toys
(even with their prediction layers scaled up) OpenVINO bf16 lost 13.6 bbox /
44.5 segm mAP and 2.0 mIoU: untrained models put scores, mask probabilities
and class margins next to each other, so bf16's ~1e-2 relative error reorders
them; the bound needs a trained toy (see docs/en/user_guides/deploy.md).
"""
import numpy as np
import pytest
from helpers import load_tool

pytest.importorskip('onnxruntime')
pytest.importorskip('openvino')
pytest.importorskip('nncf')

from mmswin.deploy import evaluate_exported  # noqa: E402
from mmswin.deploy.metadata import read_model_file  # noqa: E402
from mmswin.deploy.runtime import make_runner  # noqa: E402

CALIB = 2


def quantize_tool(argv):
    return load_tool('tools/deployment/quantize.py').main(
        [str(a) for a in argv])


@pytest.mark.parametrize('backend', ['openvino', 'onnxruntime'])
def test_int8_file_keeps_interface_and_runs_int8(backend,
                                                 exported_toy_segmentor,
                                                 tmp_path):
    from mmengine.config import Config

    from mmswin.deploy.quantize import calibration_inputs
    toy = exported_toy_segmentor
    out = str(tmp_path / ('int8.xml' if backend == 'openvino' else
                          'int8.onnx'))
    assert quantize_tool([toy.config, toy.onnx, '--calib', CALIB, '--out',
                          out, '--backend', backend]) == 0
    fp32, int8 = read_model_file(toy.onnx), read_model_file(out)
    assert (int8.input_names, int8.output_names) == (fp32.input_names,
                                                     fp32.output_names)
    assert int8.metadata == fp32.metadata and fp32.metadata
    feed = calibration_inputs(Config.fromfile(toy.config), ['images'], 1)[0]
    expected = make_runner(toy.onnx, backend)(**feed)['logits']
    got = make_runner(out, backend)(**feed)['logits']
    relative = np.abs(got - expected).max() / np.ptp(expected)
    assert 1e-4 < relative < 0.1, relative
    assert 'mIoU' in evaluate_exported(toy.config, out, backend)


def test_quantize_tool_errors(exported_toy_segmentor, tmp_path, capsys):
    toy = exported_toy_segmentor
    cases = [
        ([toy.config, toy.onnx, '--out', tmp_path / 'x.onnx'],
         '--backend openvino writes a .xml file'),
        ([toy.config, toy.onnx, '--out', tmp_path / 'x.xml', '--calib', 0],
         '--calib must be at least 1'),
        ([toy.config, toy.onnx, '--out', tmp_path / 'x.xml', '--calib', 99],
         '--calib 99: the test dataset has only 6 images'),
        ([toy.config, tmp_path / 'none.onnx', '--out', tmp_path / 'x.xml'],
         'model file not found'),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_:
            quantize_tool(argv)
        assert exit_.value.code == 2
        assert message in capsys.readouterr().err, argv
