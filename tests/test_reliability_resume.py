"""Faults mid-training: a killed run resumes to the uninterrupted weights.

A tiny Swin classifier trains under mmengine's Runner with
``mmswin.ResumableCheckpointHook`` and ``mmswin.ResumableBatchSampler``.
Faults are injected at exact points in a child process (``python
tests/test_reliability_resume.py ...``), which then dies by SIGKILL: in the
middle of an iteration, half-way through writing a checkpoint file, and
half-way through mmengine's rewrite of ``last_checkpoint``. The resumed run
must end at the same iteration with the same weights as an uninterrupted
run (deterministic mode; the max abs diff is asserted). mmengine's own
CheckpointHook under the same faults is the control. (Kills at random
moments with data-loading workers: tests/test_resume_workers.py.)

The engine extends mmengine through public hook and wrapper methods only;
the last tests check that, so an mmengine upgrade cannot silently bypass
it.
"""
import argparse
import builtins
import os
import os.path as osp
import signal
import subprocess
import sys
import uuid
from typing import Dict, Optional

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.dataset import DefaultSampler
from mmengine.evaluator import BaseMetric, Evaluator
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

from mmswin.engine import (
    AutocastOptimWrapper,
    ResumableBatchSampler,
    ResumableCheckpointHook,
    atomic_write_bytes,
)
from mmswin.engine.atomic_io import partial_path, remove_partial_files
from mmswin.models import SwinTransformer

MAX_ITERS = 6
MAX_EPOCHS = 3
ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


class NoisyImages(Dataset):
    """16 random 3x16x16 images in 3 classes; random flips drawn from numpy,
    so the data side has randomness that a resume must replay."""

    def __init__(self) -> None:
        gen = torch.Generator().manual_seed(7)
        self.images = torch.randn(16, 3, 16, 16, generator=gen)
        self.labels = torch.randint(0, 3, (16, ), generator=gen)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Dict[str, torch.Tensor]:
        image = self.images[i]
        if np.random.rand() < 0.5:
            image = image.flip(-1)
        return dict(inputs=image, labels=self.labels[i])


class TinySwinClassifier(BaseModel):
    """Two-stage Swin with drop-path and dropout (torch randomness in every
    step), mean-pooled into a linear classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = SwinTransformer(
            arch=dict(embed_dims=8, depths=(2, 2), num_heads=(1, 2)),
            window_size=2, out_indices=(1, ), drop_rate=0.1,
            drop_path_rate=0.3)
        self.head = nn.Linear(16, 3)

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor,
                mode: str = 'tensor'):
        logits = self.head(self.backbone(inputs)[-1].mean((2, 3)))
        if mode == 'loss':
            return dict(loss=F.cross_entropy(logits, labels))
        return logits


class Accuracy(BaseMetric):
    """Top-1 accuracy, for the validation that runs during training."""

    def process(self, data_batch, data_samples) -> None:
        correct = torch.stack(data_samples).argmax(1) == data_batch['labels']
        self.results.extend(correct.tolist())

    def compute_metrics(self, results) -> dict:
        return dict(accuracy=sum(results) / len(results))


class Fault(Hook):
    """Before training iteration ``index``: SIGKILL the process, or raise
    :class:`Crash` (an in-process stand-in where no file is being
    written)."""

    def __init__(self, index: int, kill: bool) -> None:
        self.index = index
        self.kill = kill

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if runner.iter == self.index:
            if self.kill:
                os.kill(os.getpid(), signal.SIGKILL)
            raise Crash


class Crash(Exception):
    """A fault raised inside training."""


def die_half_way_through_writing(name: str, spare: int = 0) -> None:
    """Make a write to a file whose name contains ``name`` write half of its
    bytes, flush them to disk and SIGKILL the process; the first ``spare``
    such files are written normally."""
    real_open = builtins.open
    opened = []

    class HalfWriter:
        def __init__(self, f) -> None:
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.f.close()

        def write(self, data: bytes) -> int:
            self.f.write(data[:len(data) // 2])
            self.f.flush()
            os.fsync(self.f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)

    def open_that_dies(file, mode='r', *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if name in str(file) and 'w' in mode:
            opened.append(file)
            if len(opened) > spare:
                return HalfWriter(f)
        return f

    builtins.open = open_that_dies


def build_runner(work_dir: str, hook: str = 'mmswin.ResumableCheckpointHook',
                 by_epoch: bool = False, resume: bool = False,
                 fault: Optional[Hook] = None) -> Runner:
    """``MAX_ITERS`` iterations (by_epoch: 3 epochs of 4, validating after
    each), checkpointing every 2 iterations (every epoch) and keeping only
    the newest checkpoint."""
    torch.manual_seed(0)  # the model is built before the Runner seeds
    loader = dict(dataset=NoisyImages(), batch_size=4, num_workers=0,
                  collate_fn=dict(type='default_collate'))
    if by_epoch:
        loop = dict(by_epoch=True, max_epochs=MAX_EPOCHS, val_interval=1)
        sampler = 'DefaultSampler'
        val = dict(val_dataloader=dict(
            loader, sampler=dict(type='DefaultSampler', shuffle=False)),
            val_cfg=dict(), val_evaluator=Evaluator(Accuracy()))
    else:
        loop = dict(by_epoch=False, max_iters=MAX_ITERS)
        sampler = 'InfiniteSampler'
        val = {}
    return Runner(
        model=TinySwinClassifier(),
        work_dir=work_dir,
        experiment_name=f'resume_{uuid.uuid4().hex}',
        train_dataloader=dict(
            loader, sampler=dict(type=sampler, shuffle=True),
            batch_sampler=dict(type='mmswin.ResumableBatchSampler')),
        train_cfg=loop,
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-2)),
        param_scheduler=dict(type='LinearLR', start_factor=0.1,
                             by_epoch=False, begin=0, end=4),
        default_hooks=dict(
            checkpoint=dict(type=hook, interval=1 if by_epoch else 2,
                            by_epoch=by_epoch, max_keep_ckpts=1),
            logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[fault] if fault is not None else None,
        randomness=dict(seed=0, deterministic=True),
        resume=resume,
        log_level='WARNING',
        **val)


def final_weights(work_dir: str,
                  by_epoch: bool = False) -> Dict[str, torch.Tensor]:
    name = f'epoch_{MAX_EPOCHS}.pth' if by_epoch else f'iter_{MAX_ITERS}.pth'
    ckpt = torch.load(osp.join(work_dir, name), map_location='cpu')
    assert ckpt['meta']['iter'] == (
        MAX_EPOCHS * 4 if by_epoch else MAX_ITERS)
    return ckpt['state_dict']


def max_weight_diff(a: Dict[str, torch.Tensor],
                    b: Dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def run_child(work_dir: str, *args: str) -> subprocess.CompletedProcess:
    """Train in a child process (this file's ``__main__``)."""
    return subprocess.run(
        [sys.executable, osp.abspath(__file__), '--work-dir', work_dir,
         *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture(autouse=True)
def _restore_determinism():
    # Runner(deterministic=True) switches torch globally; other tests run
    # in the same process.
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory) -> Dict[str, torch.Tensor]:
    work_dir = str(tmp_path_factory.mktemp('uninterrupted'))
    build_runner(work_dir).train()
    return final_weights(work_dir)


@pytest.mark.parametrize('fault', [
    'iteration',  # killed between checkpoints, in iteration 5 of 6
    'checkpoint',  # killed half-way through writing iter_4.pth
    'pointer',  # killed half-way through mmengine rewriting last_checkpoint
])
def test_sigkill_then_resume_matches_uninterrupted(tmp_path, uninterrupted,
                                                    fault):
    work_dir = str(tmp_path)
    killed = run_child(work_dir, '--fault', fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    names = sorted(os.listdir(work_dir))
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        pointer = f.read()
    latest = osp.join(work_dir, 'iter_4.pth')
    if fault == 'iteration':
        assert pointer == latest and 'iter_2.pth' not in names, names
    elif fault == 'checkpoint':
        # The file being written never appears under its name, and the
        # previous checkpoint is kept until the new one is complete.
        assert pointer == osp.join(work_dir, 'iter_2.pth'), names
        assert 'iter_4.pth' not in names, names
        assert any(n.endswith('.part') for n in names), names
    else:
        # iter_4.pth is complete, iter_2.pth not yet deleted, and the
        # pointer names neither: the next start repairs it.
        assert {'iter_2.pth', 'iter_4.pth'} <= set(names), names
        assert pointer == latest[:len(latest) // 2], pointer

    build_runner(work_dir, resume=True).train()
    names = os.listdir(work_dir)
    assert not any(n.endswith('.part') for n in names), names
    assert 'iter_2.pth' not in names and 'iter_4.pth' not in names, names
    diff = max_weight_diff(final_weights(work_dir), uninterrupted)
    assert diff <= 1e-6, f'max abs weight diff {diff}'


def test_mmengine_hook_under_same_fault_leaves_nothing_to_resume(tmp_path):
    """Control: mmengine's CheckpointHook deletes the old checkpoint first
    and writes in place, so the same kill leaves a truncated iter_4.pth and
    a pointer to a deleted file."""
    work_dir = str(tmp_path)
    killed = run_child(work_dir, '--fault', 'checkpoint', '--hook',
                       'CheckpointHook')
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    names = sorted(os.listdir(work_dir))
    assert 'iter_2.pth' not in names and 'iter_4.pth' in names, names
    with pytest.raises(RuntimeError, match='zip archive'):
        torch.load(osp.join(work_dir, 'iter_4.pth'), map_location='cpu')


def test_derived_generator_state_makes_resume_exact(tmp_path,
                                                    uninterrupted):
    """Control: mmengine's hook leaves the generators where the resumed
    run's set-up left them, so it draws other drop-path masks and ends
    elsewhere."""
    work_dir = str(tmp_path)
    with pytest.raises(Crash):
        build_runner(work_dir, hook='CheckpointHook',
                     fault=Fault(4, kill=False)).train()
    build_runner(work_dir, hook='CheckpointHook', resume=True).train()
    assert max_weight_diff(final_weights(work_dir), uninterrupted) > 1e-4


def test_epoch_based_resume_with_validation_matches_uninterrupted(tmp_path):
    """Epoch loops do not replay the data pipeline (numpy flips here) and
    validation after each epoch draws from the generators: both must not
    make the resumed run differ."""
    straight = str(tmp_path / 'straight')
    build_runner(straight, by_epoch=True).train()
    work_dir = str(tmp_path / 'crashed')
    with pytest.raises(Crash):  # in epoch 2, after the epoch-1 checkpoint
        build_runner(work_dir, by_epoch=True,
                     fault=Fault(6, kill=False)).train()
    build_runner(work_dir, by_epoch=True, resume=True).train()
    diff = max_weight_diff(final_weights(work_dir, True),
                           final_weights(straight, True))
    assert diff <= 1e-6, f'max abs weight diff {diff}'


def test_atomic_write_failure_keeps_old_file(tmp_path):
    path = tmp_path / 'file.bin'
    atomic_write_bytes(b'old', path)

    class Unwritable:
        """Stands in for data whose serialisation fails mid-way."""

    with pytest.raises(TypeError):
        atomic_write_bytes(Unwritable(), path)
    assert path.read_bytes() == b'old'
    assert os.listdir(tmp_path) == ['file.bin']


def test_remove_partial_files_touches_only_partial_files(tmp_path):
    keep = ['iter_2.pth', '.hidden', 'x.part', 'last_checkpoint']
    for name in keep:
        (tmp_path / name).write_bytes(b'x')
    stale = partial_path(tmp_path / 'iter_4.pth')
    open(stale, 'wb').close()
    assert remove_partial_files(tmp_path) == [stale]
    assert sorted(os.listdir(tmp_path)) == sorted(keep)


# -- public extension points only ---------------------------------------------
def _engine_objects():
    """One instance builder per mmswin engine class that extends mmengine
    or torch."""
    dataset = NoisyImages()
    return {
        ResumableCheckpointHook: lambda: ResumableCheckpointHook(interval=1),
        ResumableBatchSampler: lambda: ResumableBatchSampler(
            DefaultSampler(dataset, seed=0), batch_size=2),
        AutocastOptimWrapper: lambda: AutocastOptimWrapper(
            optimizer=torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=1.),
            device='cpu'),
    }


@pytest.mark.parametrize('cls', list(_engine_objects()),
                         ids=lambda cls: cls.__name__)
def test_engine_overrides_no_private_method(cls):
    """mmengine may rename or re-sign a private method in any release; an
    override of one would then silently stop being called."""
    inherited = {name for base in cls.__mro__[1:] for name in vars(base)}
    private = [name for name, value in vars(cls).items()
               if name in inherited and name.startswith('_') and
               not name.endswith('__') and (callable(value) or isinstance(
                   value, (staticmethod, classmethod, property)))]
    assert private == [], f'{cls.__name__} overrides private {private}'


@pytest.mark.parametrize('cls', [ResumableCheckpointHook,
                                 AutocastOptimWrapper],
                         ids=lambda cls: cls.__name__)
def test_engine_runs_its_base_initializer(cls, monkeypatch):
    """Skipping the base class's __init__ leaves unset whatever state an
    mmengine upgrade adds there."""
    base = next(b for b in cls.__mro__[1:] if '__init__' in vars(b))
    calls = []
    original = base.__init__

    def recorded(self, *args, **kwargs):
        calls.append(base)
        original(self, *args, **kwargs)

    monkeypatch.setattr(base, '__init__', recorded)
    _engine_objects()[cls]()
    assert calls == [base], f'{cls.__name__} skips {base.__name__}.__init__'


def main() -> None:
    parser = argparse.ArgumentParser(description='Toy run for fault tests.')
    parser.add_argument('--work-dir', required=True)
    parser.add_argument('--fault', choices=('iteration', 'checkpoint',
                                            'pointer'))
    parser.add_argument('--hook', default='mmswin.ResumableCheckpointHook')
    args = parser.parse_args()
    # As tests/conftest.py sets it: the resumed half runs in the test
    # process, and float sums depend on the thread count.
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    fault = None
    if args.fault == 'iteration':
        fault = Fault(4, kill=True)
    elif args.fault == 'checkpoint':
        die_half_way_through_writing('iter_4.pth')
    elif args.fault == 'pointer':  # the second one, after iteration 4
        die_half_way_through_writing('last_checkpoint', spare=1)
    runner = build_runner(args.work_dir, hook=args.hook, fault=fault)
    runner.train()


if __name__ == '__main__':
    main()
