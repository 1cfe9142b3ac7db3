"""The low-precision accuracy bound of issue 20 (item 3): OpenVINO bf16 and
the int8 model of ``tools/deployment/quantize.py`` (NNCF's default) score
within 1.0 bbox mAP, 1.0 segm mAP and 1.0 mIoU (points) of OpenVINO f32,
each evaluated by ``tools/test.py CONFIG MODEL --backend openvino
[--precision bf16]`` on the toy data's real ground truth.

The random-weight toys of tests/deploy_fixtures.py cannot check this bound:
their scores, mask probabilities and class margins sit next to each other,
so any rounding reorders them (docs/en/user_guides/deploy.md, "Accuracy").
So here each toy (two Swin stages, 128-pixel inputs) is trained first with
``tools/train.py`` in a subprocess (seeded, one thread: the same weights on
every run), until it has real margins (bbox mAP > 30, mIoU > 40 on its val
set; the tests check that too), then exported as the other deployment tests
export. int8 is calibrated on training images, not on the images it is
scored on. Real ground truth, not the other tests' pseudo ground truth: the
bound is on the dataset's metrics, which a trained toy scores meaningfully
(measured: 56.1 bbox / 70.6 segm mAP, 84.47 mIoU), and every change in its
boxes, masks or pixels that matters to them shows.

The bound can fail: the control calibrates the int8 model on noise instead
of the dataset's images, and it loses more than a point.
"""
import os.path as osp
import sys
from typing import Dict, NamedTuple

import pytest
from deploy_fixtures import DET_MODEL, SEG_MODEL, _export, _write_config
from helpers import TOY_DET_CONFIG, TOY_SEG_CONFIG, load_tool, run_tool_ok

pytest.importorskip('onnxruntime')
pytest.importorskip('openvino')
pytest.importorskip('nncf')

BOUND = 1.0  # points (issue 20)
CALIB = 4  # int8 calibration images
# Per task: the metrics the bound covers, and the least fp32 score that
# shows a trained model (an untrained one scores ~0 on real ground truth,
# where any precision holds the bound).
METRICS = dict(detection=dict(bbox_mAP=('coco/bbox_mAP', 30),
                              segm_mAP=('coco/segm_mAP', 30)),
               segmentation=dict(mIoU=('mIoU', 40)))

# Both toys: loaders in the main process (no forked workers), batch 4,
# warm-up then lr 2e-3 (2x the toy configs': a short run), seeded.
COMMON = """
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False,
                        begin=0, end=10)]
optim_wrapper = dict(optimizer=dict(lr=2e-3))
randomness = dict(seed=0)
"""
LOADER = "num_workers=0, persistent_workers=False, batch_size=4"
DET_OVERRIDES = DET_MODEL + """
_sizes = dict(Resize=dict(scale=(128, 128)))
train_pipeline = [dict(t, **_sizes.get(t['type'], dict()))
                  for t in _base_.train_pipeline]
test_pipeline = [dict(t, **_sizes.get(t['type'], dict()))
                 for t in _base_.test_pipeline]
del _sizes
train_dataloader = dict(LOADER, dataset=dict(data_root='{root}/',
                                             pipeline=train_pipeline))
val_dataloader = dict(LOADER, dataset=dict(data_root='{root}/',
                                           pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file='{root}/annotations/val.json')
test_evaluator = val_evaluator
max_epochs = 8  # 64 images / 4 = 16 iterations an epoch
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs + 1)
default_hooks = dict(logger=dict(interval=16),
                     checkpoint=dict(interval=max_epochs))
""".replace('LOADER', LOADER) + COMMON
SEG_OVERRIDES = SEG_MODEL + """
train_dataloader = dict(LOADER, dataset=dict(data_root='{root}'))
val_dataloader = dict(LOADER, dataset=dict(data_root='{root}'))
test_dataloader = val_dataloader
max_iters = 96
train_cfg = dict(max_iters=max_iters, val_interval=max_iters + 1)
default_hooks = dict(logger=dict(interval=16),
                     checkpoint=dict(interval=max_iters))
""".replace('LOADER', LOADER) + COMMON
# quantize.py's --cfg-options that calibrate on the training images
CALIB_ON_TRAIN = dict(
    detection=['test_dataloader.dataset.ann_file=annotations/train.json',
               'test_dataloader.dataset.data_prefix.img=train/'],
    segmentation=['test_dataloader.dataset.data_prefix.img_path='
                  'images/training',
                  'test_dataloader.dataset.data_prefix.seg_map_path='
                  'annotations/training'])


class TrainedToy(NamedTuple):
    """A trained, exported toy: its config (pointing at the toy data), the
    fp32 ``.onnx``, the int8 ``.xml`` and the folder for work dirs."""
    config: str
    onnx: str
    int8: str
    folder: str


def tool_test(config: str, model_file: str, work_dir: str,
              *options: str) -> Dict[str, float]:
    """``tools/test.py CONFIG MODEL --backend openvino [options]`` in this
    process; its metrics."""
    return load_tool('tools/test.py').main([
        config, model_file, '--backend', 'openvino', '--work-dir', work_dir,
        *options, '--cfg-options', 'log_level=WARNING'])


def train_and_export(folder, task: str, root: str) -> TrainedToy:
    """tools/train.py (subprocess), the export, quantize.py's int8."""
    base, overrides = ((TOY_DET_CONFIG, DET_OVERRIDES) if task == 'detection'
                       else (TOY_SEG_CONFIG, SEG_OVERRIDES))
    config = _write_config(folder, base, overrides, root)
    work_dir = str(folder / 'train')
    run_tool_ok([sys.executable, 'tools/train.py', config, '--work-dir',
                 work_dir], timeout=900)
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    from mmengine.config import Config
    onnx = _export(folder, Config.fromfile(config), checkpoint)
    int8 = str(folder / 'int8.xml')
    assert load_tool('tools/deployment/quantize.py').main([
        config, onnx, '--calib', str(CALIB), '--out', int8,
        '--cfg-options', *CALIB_ON_TRAIN[task]]) == 0
    return TrainedToy(config, onnx, int8, str(folder))


@pytest.fixture(scope='module')
def trained_toy(tmp_path_factory, make_toy_coco, make_toy_ade):
    """``trained_toy(task)``: the trained, exported toy of ``task``, made
    once per module."""
    made = {}

    def get(task: str) -> TrainedToy:
        if task not in made:
            root = (make_toy_coco(seed=7, size=128, num_train=64, num_val=40)
                    if task == 'detection' else
                    make_toy_ade(seed=7, size=96, num_train=64, num_val=24))
            made[task] = train_and_export(
                tmp_path_factory.mktemp(f'trained_{task}'), task, root)
        return made[task]
    return get


@pytest.fixture(scope='module')
def scores(trained_toy):
    """``scores(task, precision)``: tools/test.py's metrics of the trained
    toy at ``'fp32'``, ``'bf16'`` or ``'int8'``, each computed once."""
    done = {}

    def get(task: str, precision: str) -> Dict[str, float]:
        if (task, precision) not in done:
            toy = trained_toy(task)
            work_dir = osp.join(toy.folder, precision)
            done[task, precision] = (
                tool_test(toy.config, toy.int8, work_dir)
                if precision == 'int8' else
                tool_test(toy.config, toy.onnx, work_dir, '--precision',
                          precision))
        return done[task, precision]
    return get


def points(task: str, metrics: Dict[str, float]) -> Dict[str, float]:
    """The bound's metrics in points (mmdet's mAPs are fractions)."""
    scale = 100 if task == 'detection' else 1
    return {name: round(float(metrics[key]) * scale, 2)
            for name, (key, _) in METRICS[task].items()}


def assert_within_bound(task: str, fp32: Dict[str, float],
                        low: Dict[str, float]) -> None:
    expected, got = points(task, fp32), points(task, low)
    print(f'{task}: fp32 {expected}, low precision {got}')  # for -rA
    for name, (_, least) in METRICS[task].items():
        assert expected[name] > least, (name, expected)  # a trained model
        assert abs(got[name] - expected[name]) <= BOUND, (name, expected,
                                                          got)


@pytest.mark.parametrize('task', ['detection', 'segmentation'])
def test_bf16_within_one_point_of_fp32(task, scores):
    from mmswin.deploy.runtime import bf16_support
    has_bf16, why = bf16_support()
    if not has_bf16:
        pytest.skip(f'this CPU has no bf16 ({why}): OpenVINO bf16 would run '
                    'fp32 (the documented fallback), so there is no bf16 '
                    'accuracy to check')
    assert_within_bound(task, scores(task, 'fp32'), scores(task, 'bf16'))


@pytest.mark.parametrize('task', ['detection', 'segmentation'])
def test_int8_within_one_point_of_fp32(task, scores):
    assert_within_bound(task, scores(task, 'fp32'), scores(task, 'int8'))


def test_control_int8_calibrated_on_noise_breaks_the_bound(trained_toy,
                                                           scores, tmp_path):
    """The bound can fail: the toy UperNet quantised by the same NNCF call,
    but calibrated on uniform noise in place of the dataset's images
    (wrong activation ranges), loses more than a point of mIoU."""
    import numpy as np
    from mmengine.config import Config

    from mmswin.deploy.metadata import read_model_file
    from mmswin.deploy.quantize import calibration_inputs, quantize_openvino
    toy = trained_toy('segmentation')
    feeds = calibration_inputs(Config.fromfile(toy.config),
                               read_model_file(toy.onnx).input_names, CALIB)
    rng = np.random.default_rng(0)
    noise = [dict(feed, images=rng.uniform(0, 255, feed['images'].shape)
                  .astype(np.float32)) for feed in feeds]
    broken = quantize_openvino(toy.onnx, noise, str(tmp_path / 'noise.xml'))
    got = points('segmentation', tool_test(toy.config, broken, str(tmp_path)))
    expected = points('segmentation', scores('segmentation', 'fp32'))
    print(f'control: fp32 {expected}, int8 calibrated on noise {got}')
    assert expected['mIoU'] - got['mIoU'] > BOUND, (expected, got)
