"""mmswin.ResumableBatchSampler on its own: what each sample draws depends
only on (seed, rank, epoch, batch, position), not on the workers, so a
restarted loader repeats the uninterrupted one's draws.

A toy dataset returns python, numpy and torch random draws as its
"augmentations"; loaders are built by mmengine's ``Runner.build_dataloader``
from config dicts, as in training.
"""
import ast
import glob
import os.path as osp
import random
import re
from typing import List, Optional

import numpy as np
import pytest
import torch
from helpers import ROOT, load_config
from mmengine.logging import MessageHub
from mmengine.runner import Runner
from torch.utils.data import Dataset

from mmswin.engine import ResumableBatchSampler, SeededIndex

EPOCHS = 3


class RandomDraws(Dataset):
    """10 samples; each returns its index and one draw from python's,
    numpy's and torch's global generators, as random transforms do."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int) -> tuple:
        return index, random.random(), float(np.random.rand()), float(
            torch.rand(()))


def build_loader(workers: int, persistent: bool = True,
                 resumable: bool = True, sampler: str = 'DefaultSampler'):
    cfg = dict(dataset=RandomDraws(), batch_size=3, num_workers=workers,
               persistent_workers=persistent and workers > 0,
               sampler=dict(type=sampler, shuffle=True),
               collate_fn=dict(type=list))  # keep the samples as they are
    if resumable:
        cfg['batch_sampler'] = dict(type='mmswin.ResumableBatchSampler')
    return Runner.build_dataloader(cfg, seed=0)


def epochs(loader, first: int, stop: int) -> List[list]:
    """The samples of epochs first..stop-1, setting each epoch as
    mmengine's DistSamplerSeedHook does."""
    batch_sampler = loader.batch_sampler
    sampler = getattr(batch_sampler, 'sampler', loader.sampler)
    out = []
    for epoch in range(first, stop):
        sampler.set_epoch(epoch)
        out.append([sample for batch in loader for sample in batch])
    return out


@pytest.fixture(autouse=True)
def _fresh_message_hub(request):
    # The sampler reads the current MessageHub; other tests' runners may
    # have left one in the training stage.
    MessageHub.get_instance(f'loader-test-{request.node.name}')


@pytest.fixture(scope='module')
def in_process_samples() -> List[list]:
    return epochs(build_loader(workers=0), 0, EPOCHS)


@pytest.mark.parametrize('workers, persistent', [(1, True), (2, True),
                                                 (2, False)])
def test_samples_do_not_depend_on_workers_or_restarts(in_process_samples,
                                                      workers, persistent):
    assert epochs(build_loader(workers, persistent), 0,
                  EPOCHS) == in_process_samples
    # A resumed run builds a new loader (new workers) at the last epoch.
    restarted = epochs(build_loader(workers, persistent), EPOCHS - 1, EPOCHS)
    assert restarted[0] == in_process_samples[-1]


def test_without_the_sampler_persistent_workers_draw_otherwise():
    """Control: mmengine seeds a worker once; a persistent worker's last
    epoch differs from the same epoch in a restarted loader."""
    straight = epochs(build_loader(2, resumable=False), 0, EPOCHS)
    restarted = epochs(build_loader(2, resumable=False), EPOCHS - 1, EPOCHS)
    assert [s[0] for s in restarted[0]] == [s[0] for s in straight[-1]]
    assert restarted[0] != straight[-1]  # same indices, other draws


def test_seeds_differ_per_sample_epoch_and_rank():
    batch_sampler = build_loader(0).batch_sampler

    def seeds(epoch: int) -> List[int]:
        batch_sampler.sampler.set_epoch(epoch)
        return [item.seed for batch in batch_sampler for item in batch]

    rank0 = seeds(0) + seeds(1)
    batch_sampler.rank = 1
    assert len(set(rank0)) == len(rank0) == 20
    assert not set(seeds(0)) & set(rank0)


def generator_states() -> tuple:
    return (torch.get_rng_state(), np.random.get_state()[1],
            random.getstate())


def test_loading_in_process_leaves_the_training_generators_alone():
    """num_workers=0 loads in the training process: loading must not move
    the training step's random streams (a loader's creation draws its
    base seed from torch, as torch's DataLoader does)."""
    batches = iter(build_loader(0))
    before = generator_states()
    assert len(list(batches)) == 4
    after = generator_states()
    assert torch.equal(before[0], after[0])
    assert np.array_equal(before[1], after[1]) and before[2] == after[2]


def enter_training(epoch: int, iteration: int) -> None:
    """What mmengine's RuntimeInfoHook publishes when an epoch starts."""
    hub = MessageHub.get_current_instance()
    hub.update_info('loop_stage', 'train')
    hub.update_info('epoch', epoch)
    hub.update_info('iter', iteration)


def test_mid_epoch_resume_skips_only_the_trained_batches(in_process_samples):
    loader = build_loader(0)
    per_epoch = len(loader)  # 4 batches: 3 + 3 + 3 + 1 samples
    enter_training(epoch=1, iteration=per_epoch + 2)  # 2 trained
    resumed = epochs(loader, 1, 2)[0]
    assert resumed == in_process_samples[1][2 * 3:]
    # At an epoch's start the hub still holds the previous iteration.
    enter_training(epoch=2, iteration=2 * per_epoch - 1)
    assert epochs(loader, 2, 3)[0] == in_process_samples[2]


def test_infinite_sampler_never_skips():
    """Iteration-based loops replay their stream themselves."""
    first = next(iter(build_loader(0, sampler='InfiniteSampler')))
    enter_training(epoch=0, iteration=2)
    assert next(iter(build_loader(0, sampler='InfiniteSampler'))) == first


class NoSeed(torch.utils.data.Sampler):
    def __init__(self, dataset: Optional[Dataset] = None) -> None:
        self.dataset = dataset

    def __iter__(self):
        return iter(range(10))

    def __len__(self) -> int:
        return 10


@pytest.mark.parametrize('sampler, kwargs, error, message', [
    (NoSeed(), {}, TypeError, 'needs a sampler with a `dataset` attribute'),
    (NoSeed(RandomDraws()), {}, ValueError,
     'needs a non-negative int seed: set randomness.seed'),
    (NoSeed(RandomDraws()), dict(seed=0, batch_sampler='Aspect'), TypeError,
     "batch_sampler must be None or a config dict with a 'type'"),
])
def test_bad_arguments_are_refused(sampler, kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        ResumableBatchSampler(sampler, batch_size=2, **kwargs)


def test_plain_indices_still_load():
    """Another loader over the same dataset object passes plain ints."""
    dataset = RandomDraws()
    ResumableBatchSampler(NoSeed(dataset), batch_size=2, seed=0)
    assert [s[0] for s in dataset.__getitems__([3, SeededIndex(4, 9)])] == [
        3, 4]


# -- the configs --------------------------------------------------------------
def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _bases(path: str) -> List[str]:
    """The local files a config inherits (``mmdet::`` ones are skipped)."""
    tree = ast.parse(_read(path))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                getattr(t, 'id', None) == '_base_' for t in node.targets):
            value = ast.literal_eval(node.value)
            names = [value] if isinstance(value, str) else value
            return [osp.normpath(osp.join(osp.dirname(path), n))
                    for n in names if '::' not in n]
    return []


def _switches_on(path: str) -> bool:
    if "type='mmswin.ResumableBatchSampler'" in _read(path):
        return True
    return any(_switches_on(base) for base in _bases(path))


def test_every_config_switches_exact_resume_on():
    configs = sorted(glob.glob(osp.join(ROOT, 'configs', '*.py')) +
                     glob.glob(osp.join(ROOT, 'configs', 'toy', '*.py')))
    assert len(configs) >= 27
    assert [c for c in configs if not _switches_on(c)] == []
    # The merged value, for one config of each family: mmdet's
    # aspect-ratio batches inside, mmseg's plain batches.
    det = load_config('mask-rcnn_swin-t-p4-w7_fpn_ms-crop-1x_coco')
    assert det.train_dataloader.batch_sampler == dict(
        type='mmswin.ResumableBatchSampler', _scope_='mmdet',
        batch_sampler=dict(type='AspectRatioBatchSampler'))
    seg = load_config('upernet_swinv2-b-w16_8xb2-160k_ade20k-512x512')
    assert seg.train_dataloader.batch_sampler == dict(
        type='mmswin.ResumableBatchSampler')
    assert seg.train_dataloader.sampler.type == 'InfiniteSampler'
