"""SIGKILL at a random moment, then ``tools/train.py --resume``: with
data-loading workers, the resumed run ends with the uninterrupted run's
weights.

- The toy Mask R-CNN, epoch-based, with mmdet's aspect-ratio batches and
  2 persistent workers (the paper configs' loader settings), checkpointing
  every 2 iterations in epochs of 3, so every resume starts in the middle
  of an epoch; in 1 process, and in 2 (DDP, gloo; batches of 1 each).
- The toy UperNet, iteration-based (InfiniteSampler), 1 persistent worker.

Every process of the run (launcher, trainers, workers) is killed at once,
a random delay after a random iteration. The draw comes from the kill seed:
``MMSWIN_KILL_SEED=<int>`` in the environment sets it (``.ci/run`` pins
one), otherwise it is drawn at random. Every test prints it (pytest shows
it under "Captured stdout setup" of a failure) and the assertions name it,
so ``MMSWIN_KILL_SEED=<seed> pytest tests/test_resume_workers.py`` replays
the same iteration and delay. Control: without
``mmswin.ResumableBatchSampler`` the detector's resumed run ends elsewhere.
"""
import os
import os.path as osp
import random
import re
import signal
import subprocess
import sys
import time
from typing import Callable, Dict, List, Sequence, Tuple

import pytest
import torch
from helpers import (
    ROOT,
    TOOL_ENV,
    TOY_DET_CONFIG,
    TOY_SEG_CONFIG,
    ade_data_options,
    coco_data_options,
    free_port,
    run_tool_ok,
)

import mmswin  # noqa: F401  (mmengine checkpoints load weights-only)


def kill_seed(environ: Dict[str, str]) -> int:
    """``MMSWIN_KILL_SEED`` if set, else a fresh random seed."""
    value = environ.get('MMSWIN_KILL_SEED', '')
    if not value:
        return random.SystemRandom().randrange(10**6)
    try:
        return int(value)
    except ValueError:
        raise ValueError(f'MMSWIN_KILL_SEED must be an int, got '
                         f'{value!r}') from None


KILL_SEED = kill_seed(os.environ)
ITERS = 6  # both models; checkpoints after iterations 2, 4 and 6
COMMON = ['default_hooks.logger.interval=1', 'randomness.deterministic=True']


@pytest.fixture(scope='module')
def det_options(make_toy_coco) -> List[str]:
    """6 images in batches of 2: 2 epochs of 3 iterations."""
    root = make_toy_coco(seed=3, size=64, num_train=6, num_val=2)
    return coco_data_options(root) + COMMON + [
        'train_dataloader.batch_size=2', 'train_dataloader.num_workers=2',
        'train_cfg.max_epochs=2', 'train_cfg.val_begin=3',
        'default_hooks.checkpoint.by_epoch=False',
        'default_hooks.checkpoint.interval=2']


@pytest.fixture(scope='module')
def seg_options(make_toy_ade) -> List[str]:
    root = make_toy_ade(seed=0, size=64, num_train=4, num_val=2)
    return ade_data_options(root) + COMMON + [
        'train_dataloader.batch_size=2', 'train_dataloader.num_workers=1',
        f'train_cfg.max_iters={ITERS}', f'train_cfg.val_begin={ITERS + 1}',
        'default_hooks.checkpoint.interval=2']


def train_cmd(config: str, work_dir: str, options: Sequence[str],
              processes: int = 1) -> List[str]:
    launcher = [sys.executable, 'tools/train.py', config] if (
        processes == 1) else ['bash', 'tools/dist_train.sh', config,
                              str(processes)]
    return launcher + ['--work-dir', work_dir, '--cfg-options', *options]


def tool_env() -> Dict[str, str]:
    return dict(TOOL_ENV, PORT=str(free_port()))  # for dist_train.sh


def descendants(pid: int) -> List[int]:
    """The processes below ``pid`` (children, their children, ...)."""
    parents = {}
    for entry in os.listdir('/proc'):
        try:
            with open(f'/proc/{entry}/stat') as f:
                # 'pid (comm) state ppid ...'; comm may hold spaces
                stat = f.read().rsplit(')', 1)[1].split()
            parents[int(entry)] = int(stat[1])
        except (ValueError, OSError, IndexError):
            continue
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, ppid in parents.items() if ppid in frontier]
        found += children
        frontier = children
    return found


def sigkill_tree(pid: int) -> None:
    """Stop ``pid`` and everything it started until nothing new appears,
    then SIGKILL them all: the whole run dies at one moment."""
    stopped = set()
    while True:
        new = {pid, *descendants(pid)} - stopped
        if not new:
            break
        for p in new:
            try:
                os.kill(p, signal.SIGSTOP)
            except ProcessLookupError:
                pass
        stopped |= new
    for p in stopped:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


_STARTED: List[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _print_kill_seed():
    """Shown with any failure of the test (captured stdout)."""
    print(f'MMSWIN_KILL_SEED={KILL_SEED}')


def test_kill_seed_comes_from_the_environment():
    assert kill_seed({'MMSWIN_KILL_SEED': '4321'}) == 4321
    assert 0 <= kill_seed({}) < 10**6
    with pytest.raises(ValueError, match="MMSWIN_KILL_SEED must be an int, "
                       "got 'x'"):
        kill_seed({'MMSWIN_KILL_SEED': 'x'})
    # the same seed, the same draw of iteration and delay
    draws = [draw_kill(random.Random(f'{seed}-detector-1'), 3, 4)
             for seed in (7, 7, 8)]
    assert draws[0] == draws[1] != draws[2]


@pytest.fixture(autouse=True)
def _no_run_outlives_its_test():
    yield
    while _STARTED:
        run = _STARTED.pop()
        if run.poll() is None:
            sigkill_tree(run.pid)
            run.wait()


def start(cmd: List[str], log_path: str) -> subprocess.Popen:
    """Start a tool in the background (the reference run trains on the
    second core while the killed one trains on the first)."""
    with open(log_path, 'w') as log:
        run = subprocess.Popen(cmd, cwd=ROOT, env=tool_env(), stdout=log,
                               stderr=subprocess.STDOUT)
    _STARTED.append(run)
    return run


def read(log_path: str) -> str:
    with open(log_path) as f:
        return f.read()


def finish(run: subprocess.Popen, log_path: str) -> None:
    assert run.wait(timeout=600) == 0, read(log_path)[-3000:]


def wait_for(condition: Callable[[], bool], run: subprocess.Popen,
             log_path: str) -> None:
    deadline = time.time() + 300
    while not condition():
        assert run.poll() is None and time.time() < deadline, read(
            log_path)[-3000:]
        time.sleep(0.02)


def draw_kill(rng: random.Random, first: int, last: int) -> Tuple[int,
                                                                   float]:
    """The iteration (first..last) and the delay (0-0.3 s) of a kill."""
    return rng.randint(first, last), rng.uniform(0, 0.3)


def kill_at_random_moment(cmd: List[str], log_path: str, rng: random.Random,
                          first: int, last: int) -> str:
    """Train, and kill the run a random 0-0.3 s after iteration k (drawn
    from first..last) is logged; returns what was drawn."""
    k, delay = draw_kill(rng, first, last)
    run = start(cmd, log_path)
    wait_for(lambda: len(re.findall(r'(?:Epoch|Iter)\(train\) ', read(
        log_path))) >= k, run, log_path)
    time.sleep(delay)
    sigkill_tree(run.pid)
    run.wait()
    return f'killed {delay:.2f} s after iteration {k} ' \
           f'(MMSWIN_KILL_SEED={KILL_SEED})'


def resume(cmd: List[str], moment: str) -> Tuple[int, str]:
    """``--resume`` the killed run to the end; returns the iteration it
    resumed from and the log."""
    log = run_tool_ok(cmd + ['--resume'], env=tool_env())
    resumed_at = re.findall(
        r'Restored the random generator state of iteration (\d+)', log)
    assert resumed_at, f'{moment}: no checkpoint resumed\n{log[-2000:]}'
    return int(resumed_at[0]), log


def max_weight_diff(path_a: str, path_b: str) -> float:
    a, b = (torch.load(p, map_location='cpu')['state_dict']
            for p in (path_a, path_b))
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.mark.parametrize('family, processes', [
    ('detector', 1), ('segmentor', 1), ('detector', 2)])
def test_sigkill_at_random_moment_then_resume_is_exact(
        family, processes, det_options, seg_options, tmp_path):
    config, options = (TOY_DET_CONFIG, det_options) if (
        family == 'detector') else (TOY_SEG_CONFIG, seg_options)
    if processes == 2:  # each process: 3 images, 3 batches per epoch
        options = options + ['train_dataloader.batch_size=1']
    rng = random.Random(f'{KILL_SEED}-{family}-{processes}')
    straight, straight_log = str(tmp_path / 'straight'), str(
        tmp_path / 'straight.log')
    reference = start(train_cmd(config, straight, options, processes),
                      straight_log)
    killed = str(tmp_path / 'killed')
    cmd = train_cmd(config, killed, options, processes)
    # Iteration 3 ends the detector's first epoch; 4 is checkpointed.
    moment = kill_at_random_moment(cmd, str(tmp_path / 'killed.log'), rng,
                                   first=3, last=4)
    assert not osp.exists(osp.join(killed, f'iter_{ITERS}.pth')), moment
    resumed_at, log = resume(cmd, moment)
    assert resumed_at in (2, 4), moment
    if family == 'detector':  # 2 and 4 are in the middle of an epoch
        assert 'Resuming in the middle of epoch' in log, moment
    finish(reference, straight_log)
    diff = max_weight_diff(osp.join(straight, f'iter_{ITERS}.pth'),
                           osp.join(killed, f'iter_{ITERS}.pth'))
    assert diff <= 1e-6, f'{moment}: max abs weight diff {diff}'


def test_without_resumable_batch_sampler_the_detector_resumes_elsewhere(
        det_options, tmp_path):
    """Control, as mmdet's loader runs: persistent workers seeded once at
    start. (``batch_sampler=None`` gives torch's batches; the toy images
    are all square, so mmdet's aspect-ratio batches would be the same.)"""
    options = det_options + [
        'train_dataloader.batch_sampler=None',
        'default_hooks.checkpoint.by_epoch=True',
        'default_hooks.checkpoint.interval=1',
        'default_hooks.checkpoint.max_keep_ckpts=2']
    straight, straight_log = str(tmp_path / 'straight'), str(
        tmp_path / 'straight.log')
    reference = start(train_cmd(TOY_DET_CONFIG, straight, options),
                      straight_log)
    epoch_1 = osp.join(straight, 'epoch_1.pth')  # complete once it exists
    wait_for(lambda: osp.exists(epoch_1), reference, straight_log)
    log = run_tool_ok(train_cmd(TOY_DET_CONFIG, str(tmp_path / 'resumed'),
                                options) + ['--resume', epoch_1],
                      env=tool_env())
    finish(reference, straight_log)
    assert 'Restored the random generator state of iteration 3' in log
    diff = max_weight_diff(osp.join(straight, 'epoch_2.pth'),
                           str(tmp_path / 'resumed' / 'epoch_2.pth'))
    assert diff > 1e-5, diff
