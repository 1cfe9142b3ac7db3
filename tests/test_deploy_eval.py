"""Exported models evaluated by the config's own test loop and evaluator
(issue 20, item 1): ``tools/test.py CONFIG MODEL_FILE --backend ...`` and
``mmswin.deploy.evaluate_exported`` give the PyTorch checkpoint's bbox mAP,
segm mAP and mIoU within 0.1 point, at batch sizes 1 and 4, with ONNX
Runtime and OpenVINO.

The val sets are annotated with the PyTorch model's own predictions (see
tests/deploy_fixtures.py for why): PyTorch scores near 100 and the exported
model is measured against it. The controls break one post-processing step
(boxes left in the resized image's pixels; logits shifted by two pixels) and
check that the metric then moves by far more than the tolerance, so the
parity tests can fail.
"""
import glob
import os.path as osp

import numpy as np
import pytest
from helpers import load_tool

pytest.importorskip('onnxruntime')

from mmswin.deploy import evaluate_exported  # noqa: E402

TOLERANCE = 0.1  # points (issue 20)
METRICS = dict(detection=('coco/bbox_mAP', 'coco/segm_mAP'),
               segmentation=('mIoU', 'aAcc'))
TOYS = dict(detection='detector', segmentation='segmentor')


def tool_test(argv):
    """tools/test.py in this process; returns its metrics."""
    return load_tool('tools/test.py').main([str(a) for a in argv])


def batch_option(batch: int):
    return {'test_dataloader.batch_size': batch}


@pytest.fixture(scope='module')
def pytorch_scores(tmp_path_factory, request):
    """``scores(task)``: tools/test.py CONFIG CHECKPOINT's metrics (batch
    size 1), computed once per task."""
    scores = {}

    def get(task: str):
        if task not in scores:
            toy = request.getfixturevalue(f'exported_toy_{TOYS[task]}')
            work_dir = tmp_path_factory.mktemp(f'pytorch_{task}')
            scores[task] = tool_test([toy.config, toy.checkpoint,
                                      '--work-dir', work_dir])
        return scores[task]
    return get


def assert_same_scores(expected, got, names):
    for name in names:
        # mmdet's mAPs are fractions, mmseg's percentages: compare points
        scale = 100 if name.startswith('coco/') else 1
        assert expected[name] * scale > 50, (name, expected)  # meaningful
        diff = abs(expected[name] - got[name]) * scale
        assert diff <= TOLERANCE, (name, expected[name], got[name])


@pytest.mark.parametrize('batch', [1, 4])
@pytest.mark.parametrize('task', ['detection', 'segmentation'])
def test_onnxruntime_scores_pytorch_metrics(task, batch, request,
                                            pytorch_scores):
    """bbox and segm mAP (detector), mIoU and aAcc (segmentor)."""
    toy = request.getfixturevalue(f'exported_toy_{TOYS[task]}')
    got = evaluate_exported(toy.config, toy.onnx, 'onnxruntime',
                            cfg_options=batch_option(batch))
    assert_same_scores(pytorch_scores(task), got, METRICS[task])


@pytest.mark.parametrize('task', ['detection', 'segmentation'])
def test_tool_with_openvino_scores_pytorch_and_draws(task, request,
                                                    pytorch_scores,
                                                    tmp_path):
    """The command line, batch size 3 from --cfg-options, --show-dir: one
    picture per val image, as with a checkpoint."""
    pytest.importorskip('openvino')
    toy = request.getfixturevalue(f'exported_toy_{TOYS[task]}')
    show = tmp_path / 'show'
    got = tool_test([toy.config, toy.onnx, '--backend', 'openvino',
                     '--work-dir', tmp_path, '--show-dir', show,
                     '--cfg-options', 'test_dataloader.batch_size=3'])
    assert_same_scores(pytorch_scores(task), got, METRICS[task])
    pictures = glob.glob(str(show / '**' / '*.[jp][pn]g'),
                         recursive=True)
    assert len(pictures) == 6, pictures


class Perturbed:
    """A runner whose outputs ``change(outputs)`` alters (the controls)."""

    def __init__(self, runner, change) -> None:
        self.runner, self.change = runner, change

    def __getattr__(self, name):
        return getattr(self.runner, name)

    def __call__(self, *args, **kwargs):
        return self.change(self.runner(*args, **kwargs))


def test_controls_wrong_post_processing_costs_points(
        exported_toy_detector, exported_toy_segmentor, pytorch_scores,
        monkeypatch):
    """Boxes not rescaled to the original image, and logits shifted by two
    pixels, each lose far more than the tolerance."""
    import mmswin.deploy.postprocess as postprocess
    import mmswin.deploy.runtime as runtime
    toy = exported_toy_detector
    with monkeypatch.context() as patch:
        patch.setattr(postprocess, 'rescale_boxes', lambda boxes, _: boxes)
        got = evaluate_exported(toy.config, toy.onnx, 'onnxruntime')
    expected = pytorch_scores('detection')
    assert expected['coco/bbox_mAP'] - got['coco/bbox_mAP'] > 0.1, got

    def shifted(outputs):
        return dict(outputs, logits=np.roll(outputs['logits'], 2, axis=3))
    make_runner = runtime.make_runner
    monkeypatch.setattr(runtime, 'make_runner', lambda *a, **k: Perturbed(
        make_runner(*a, **k), shifted))
    toy = exported_toy_segmentor
    got = evaluate_exported(toy.config, toy.onnx, 'onnxruntime')
    assert pytorch_scores('segmentation')['mIoU'] - got['mIoU'] > 1, got


def test_tool_refuses_what_it_cannot_evaluate(exported_toy_segmentor,
                                              exported_toy_detector,
                                              tmp_path, capsys):
    """A model file of another task, a checkpoint given as model file, a
    missing file, bf16 with ONNX Runtime or without a backend: one line
    each, exit status 2."""
    seg, det = exported_toy_segmentor, exported_toy_detector
    cases = [
        ([det.config, seg.onnx, '--backend', 'onnxruntime'],
         "outputs ['logits'], but a detection model"),
        ([seg.config, seg.checkpoint, '--backend', 'onnxruntime'],
         'runs .onnx files'),
        ([seg.config, osp.join(tmp_path, 'none.onnx'), '--backend',
          'onnxruntime'], 'model file not found'),
        ([seg.config, seg.onnx, '--backend', 'onnxruntime', '--precision',
          'bf16'], "bf16 needs backend='openvino'"),
        ([seg.config, seg.checkpoint, '--precision', 'bf16'],
         '--precision bf16 needs --backend openvino'),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_:
            tool_test([*argv, '--work-dir', tmp_path])
        assert exit_.value.code == 2
        assert message in capsys.readouterr().err, argv
