"""The tools under faults and hostile files, on the toy Mask R-CNN.

- ``tools/train.py`` killed by SIGKILL mid-training and restarted with
  ``--resume`` ends at the same iteration with the same weights as an
  uninterrupted run (deterministic mode; max abs diff asserted).
- ``--amp`` trains the toy segmentor 10 iterations with finite losses
  (bfloat16 autocast on CPU).
- A checkpoint whose pickle would run code is refused by ``tools/test.py``
  (``load_from``) and by a backbone ``init_cfg`` Pretrained, and the code
  never runs; mmswin neither switches torch's weights-only default off nor
  patches ``torch.load``.
- A config naming an unknown mmswin type fails with the registered names.
"""
import ast
import inspect
import math
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import (
    ROOT,
    TOOL_ENV,
    TOY_DET_CONFIG,
    TOY_SEG_CONFIG,
    ade_data_options,
    load_tool,
    run_tool_ok,
)
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmswin  # noqa: F401  (its safe globals let torch.load read the runs)

TOY = osp.join(ROOT, TOY_DET_CONFIG)
# A shorter, deterministic, iteration-based toy run at 64x64 pixels.
CONFIG = '''
_base_ = [{toy!r}]
data_root = {root!r}
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
test_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root))
test_evaluator = dict(ann_file=data_root + 'annotations/val.json')
val_cfg = None
val_dataloader = None
val_evaluator = None
model = dict(train_cfg=dict(
    rpn_proposal=dict(nms_pre=200, max_per_img=64),
    rcnn=dict(sampler=dict(num=32))))
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters={iters})
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False,
                        begin=0, end=3)]
default_hooks = dict(
    checkpoint=dict(type='mmswin.ResumableCheckpointHook', interval=2,
                    by_epoch=False, max_keep_ckpts=1),
    logger=dict(interval=1))
log_processor = dict(window_size=1)
randomness = dict(seed=0, deterministic=True)
'''


@pytest.fixture(scope='module')
def toy_root(make_toy_coco) -> str:
    """8 training and 2 val images of 64 x 64 pixels; ends in '/'."""
    return make_toy_coco(seed=5, size=64, num_train=8, num_val=2) + '/'


def write_config(folder, root: str, iters: int) -> str:
    path = osp.join(str(folder), f'toy_{iters}.py')
    with open(path, 'w') as f:
        f.write(CONFIG.format(toy=TOY, root=root, iters=iters))
    return path


def train_cmd(config: str, work_dir: str, *extra: str):
    return [sys.executable, 'tools/train.py', config, '--work-dir', work_dir,
            *extra]


def weights(path: str):
    return torch.load(path, map_location='cpu')['state_dict']


# -- SIGKILL mid-training, then --resume --------------------------------------
def test_sigkill_then_resume_gives_uninterrupted_weights(toy_root, tmp_path):
    iters = 4
    config = write_config(tmp_path, toy_root, iters)
    straight = str(tmp_path / 'straight')
    run_tool_ok(train_cmd(config, straight))

    work_dir = str(tmp_path / 'killed')
    pointer = osp.join(work_dir, 'last_checkpoint')
    with open(tmp_path / 'killed.log', 'w') as log:
        run = subprocess.Popen(train_cmd(config, work_dir), cwd=ROOT,
                               env=TOOL_ENV, stdout=log,
                               stderr=subprocess.STDOUT)
        # Kill as soon as the first checkpoint is announced: the process is
        # then in iteration 3, or still writing files.
        deadline = time.time() + 600
        while not osp.exists(pointer) and run.poll() is None:
            assert time.time() < deadline
            time.sleep(0.02)
        run.send_signal(signal.SIGKILL)
        assert run.wait() == -signal.SIGKILL
    with open(pointer) as f:
        resumed_from = f.read()
    assert resumed_from == osp.join(work_dir, 'iter_2.pth')
    assert not osp.exists(osp.join(work_dir, f'iter_{iters}.pth'))

    log = run_tool_ok(train_cmd(config, work_dir, '--resume'))
    assert f'Auto resumed from the latest checkpoint {resumed_from}' in log
    assert 'Restored the random generator state of iteration 2' in log
    final = osp.join(work_dir, f'iter_{iters}.pth')
    assert torch.load(final, map_location='cpu')['meta']['iter'] == iters
    expected = weights(osp.join(straight, f'iter_{iters}.pth'))
    got = weights(final)
    assert got.keys() == expected.keys()
    diff = max((got[k].float() - expected[k].float()).abs().max().item()
               for k in got)
    assert diff <= 1e-6, f'max abs weight diff {diff}'


# -- mixed precision ----------------------------------------------------------
def test_amp_ten_iterations_have_finite_losses(make_toy_ade, tmp_path):
    """The toy UperNet: mmcv's CPU detection ops (nms, roi_align) take
    float32 only, so detectors need CUDA for AMP; the segmentor runs
    bfloat16 autocast on CPU through mmswin's AutocastOptimWrapper."""
    root = make_toy_ade(seed=0, num_train=8, num_val=2)
    options = ade_data_options(root) + [
        'train_cfg.max_iters=10', 'train_cfg.val_begin=11',
        'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False',
        'default_hooks.logger.interval=1', 'log_processor.window_size=1']
    log = run_tool_ok(train_cmd(TOY_SEG_CONFIG, str(tmp_path / 'amp'),
                                '--amp', '--cfg-options', *options))
    wrapper = 'AmpOptimWrapper' if torch.cuda.is_available() else \
        'mmswin.AutocastOptimWrapper'
    assert f"type='{wrapper}'" in log
    losses = re.findall(r'Iter\(train\) +\[ *(\d+)/10\].*?  loss: (\S+)', log)
    assert [int(i) for i, _ in losses] == list(range(1, 11)), log[-3000:]
    values = [float(v) for _, v in losses]
    assert all(math.isfinite(v) and 0 < v < 100 for v in values), values


# -- hostile checkpoints ------------------------------------------------------
class RunsCode:
    """Unpickling this (unsafely) creates the file ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return open, (self.path, 'w')


@pytest.fixture
def hostile(tmp_path):
    marker = tmp_path / 'code_ran'
    path = str(tmp_path / 'hostile.pth')
    torch.save(dict(state_dict={}, meta=RunsCode(str(marker))), path)
    return path, marker


def test_test_tool_refuses_hostile_load_from(toy_root, tmp_path, hostile):
    path, marker = hostile
    test_tool = load_tool('tools/test.py')
    with pytest.raises(Exception, match='Weights only load failed'):
        test_tool.main([write_config(tmp_path, toy_root, 2), path,
                        '--work-dir', str(tmp_path / 'work')])
    assert not marker.exists()


@pytest.mark.parametrize('how', ['init_cfg', 'pretrained'])
def test_backbone_refuses_hostile_pretrained(hostile, how):
    from mmdet.registry import MODELS

    from mmswin.checkpoint import UnsafeCheckpointError
    path, marker = hostile
    cfg = Config.fromfile(TOY)
    backbone = cfg.model.backbone
    if how == 'init_cfg':
        backbone.init_cfg = dict(type='Pretrained', checkpoint=path)
    else:
        backbone.init_cfg = None
        backbone.pretrained = path
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    with pytest.raises(UnsafeCheckpointError, match='Refusing to load'):
        model.init_weights()
    assert not marker.exists()


def _python_files():
    for folder in ('mmswin', 'tools', 'configs', 'demo', 'benchmarks'):
        for base, _, names in os.walk(osp.join(ROOT, folder)):
            yield from (osp.join(base, n) for n in names if n.endswith('.py'))


def test_weights_only_is_never_switched_off():
    """No code sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD, passes
    weights_only=False or assigns torch.load; at run time torch.load is
    torch's own, with its weights-only default."""
    offences = []
    for path in _python_files():
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and (
                    node.value == 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'):
                offences.append(f'{path}:{node.lineno} env switch')
            if isinstance(node, ast.keyword) and node.arg == 'weights_only' \
                    and isinstance(node.value, ast.Constant) \
                    and node.value.value is False:
                offences.append(f'{path}:{node.lineno} weights_only=False')
            if isinstance(node, (ast.Assign, ast.AugAssign)):
                targets = getattr(node, 'targets', [getattr(node, 'target',
                                                            None)])
                for target in targets:
                    if isinstance(target, ast.Attribute) and target.attr in (
                            'load', '_default_to_weights_only'):
                        offences.append(f'{path}:{node.lineno} assigns '
                                        f'.{target.attr}')
    assert not offences, offences

    load_tool('tools/tool_utils.py')
    assert 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD' not in os.environ
    assert torch.load is torch.serialization.load
    assert inspect.getsourcefile(torch.load).endswith(
        osp.join('torch', 'serialization.py'))


# -- unknown types ------------------------------------------------------------
def test_unknown_mmswin_type_names_the_registered_ones(toy_root, tmp_path):
    train = load_tool('tools/train.py')
    # The list holds every registered name, in order (the backbones and
    # whatever else mmswin registers, e.g. export-safe layers).
    with pytest.raises(KeyError, match=re.escape(
            "'SwinTransformr' is not registered in mmswin's model registry; "
            "registered: [") + r"('\w+', )*'SwinTransformer', "
            r"'SwinTransformerV2'(, '\w+')*\]"):
        train.main([write_config(tmp_path, toy_root, 2), '--work-dir',
                    str(tmp_path / 'work'), '--cfg-options',
                    'model.backbone.type=mmswin.SwinTransformr'])
