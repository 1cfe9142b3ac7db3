"""A CheckpointHook whose checkpoints survive a kill and resume exactly."""
import os.path as osp
import random
from typing import List, Optional, Tuple

import numpy as np
import torch
from mmengine.dist import get_world_size, is_main_process
from mmengine.hooks import CheckpointHook
from mmengine.runner import EpochBasedTrainLoop

from ..registry import HOOKS
from .atomic_io import ATOMIC_BACKEND, atomic_write_text, remove_partial_files

RNG_STATE_KEY = 'rng_state'


def capture_rng_state() -> dict:
    """The global generators' states: torch's CPU (and CUDA, when in use),
    numpy's and python's, as tensors, ints and tuples only, so that a
    weights-only ``torch.load`` reads them back."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    state = dict(
        torch=torch.get_rng_state(),
        numpy=dict(keys=torch.from_numpy(keys.astype(np.int64)), pos=pos,
                   has_gauss=has_gauss, gauss=gauss),
        python=random.getstate())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict, data_side: bool = True) -> None:
    """Inverse of :func:`capture_rng_state`. ``data_side=False`` leaves
    numpy and python alone (for loops that replay the data pipeline)."""
    torch.set_rng_state(state['torch'])
    cuda = state.get('cuda')
    if cuda and torch.cuda.is_available() and (
            len(cuda) == torch.cuda.device_count()):
        torch.cuda.set_rng_state_all(cuda)
    if data_side and 'numpy' in state:
        npy = state['numpy']
        np.random.set_state(
            ('MT19937', npy['keys'].numpy().astype(np.uint32), npy['pos'],
             npy['has_gauss'], npy['gauss']))
        random.setstate(state['python'])


@HOOKS.register_module()
class ResumableCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` made safe to kill at any moment.

    Use it in place of the default one::

        default_hooks = dict(checkpoint=dict(
            type='mmswin.ResumableCheckpointHook', interval=...))

    It accepts every argument of :class:`mmengine.hooks.CheckpointHook` and
    changes three things:

    - Files appear only complete. Checkpoints go through the
      ``'mmswin_atomic_local'`` backend (temporary file, fsync, rename) and
      ``last_checkpoint`` is rewritten the same way, so ``--resume`` never
      reads a half-written file. Partial files of a killed run are deleted
      when training starts. (A remote ``out_dir`` or explicit
      ``backend_args`` keep the backend they name.)
    - With ``max_keep_ckpts``, old checkpoints are deleted only after the
      new one and the ``last_checkpoint`` pointer are on disk; mmengine
      deletes first, so a kill in between can leave nothing to resume from.
    - The random generators' states are saved in each checkpoint
      (``'rng_state'``) and restored when training resumes from it, so
      dropout, drop-path, the detectors' proposal samplers and the data
      augmentations draw the same numbers as in an uninterrupted run: with
      the same seed and ``randomness.deterministic``, a killed and resumed
      run ends with the same weights. Iteration-based loops replay the data
      pipeline (mmengine re-loads the trained batches), so there only
      torch's state is restored; epoch-based loops also get numpy's and
      python's. Validation during training runs on a copy of the
      generator states, so it does not shift the training stream (a
      resumed run does not repeat the validation that followed its
      checkpoint). Limits: single-process runs only (a checkpoint holds rank
      0's state), and an epoch-based loop with ``persistent_workers``
      keeps worker generators that no checkpoint can hold.
    """

    def __init__(self, *args, **kwargs) -> None:
        out_dir = kwargs.get('out_dir')
        is_local = out_dir is None or '://' not in str(out_dir)
        self.writes_atomically = is_local and kwargs.get(
            'backend_args') is None and kwargs.get('file_client_args') is None
        if self.writes_atomically:
            kwargs['backend_args'] = dict(backend=ATOMIC_BACKEND)
        super().__init__(*args, **kwargs)
        # (iteration the checkpoint was saved after, its generator state)
        self._rng_to_restore: Optional[Tuple[int, dict]] = None
        self._rng_before_val: Optional[dict] = None

    # -- set-up and atomic files ---------------------------------------------
    def before_train(self, runner) -> None:
        """Set up as mmengine does, restore the resumed run's generator
        state, and delete partial files a killed run left behind."""
        super().before_train(runner)
        if self._rng_to_restore is not None:
            saved_iter, state = self._rng_to_restore
            self._rng_to_restore = None
            # Only on resume: ``load_from`` also loads a checkpoint but
            # starts again at iteration 0.
            if saved_iter == runner.iter and get_world_size() > 1:
                runner.logger.info('Multi-process run: the random generator '
                                   'states are not restored (a checkpoint '
                                   'holds rank 0\'s only).')
            elif saved_iter == runner.iter:
                # Iteration-based loops re-load the trained batches, which
                # replays the data pipeline's numpy/python draws.
                restore_rng_state(state, data_side=isinstance(
                    runner.train_loop, EpochBasedTrainLoop))
                runner.logger.info(
                    f'Restored the random generator state of iteration '
                    f'{saved_iter}.')
        if is_main_process() and self.writes_atomically:
            for path in remove_partial_files(self.out_dir):
                runner.logger.warning(
                    f'Removed {path}, left by a run killed while saving.')

    def _save_checkpoint_with_step(self, runner, step: int,
                                   meta: dict) -> None:
        stale = self._advance_kept_steps(runner, step)
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir, filename, self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler, meta=meta,
            by_epoch=self.by_epoch, backend_args=self.backend_args,
            **self.args)
        if not is_main_process():
            return
        atomic_write_text(self.last_ckpt,
                          osp.join(runner.work_dir, 'last_checkpoint'))
        for path in stale:
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):  # deepspeed checkpoints
                self.file_backend.rmtree(path)

    def _advance_kept_steps(self, runner, step: int) -> List[str]:
        """Record ``step`` among the kept checkpoints (as mmengine does) and
        return the paths that fall out, to delete once ``step`` is saved."""
        if self.max_keep_ckpts <= 0 or (self.keep_ckpt_ids and
                                        self.keep_ckpt_ids[-1] == step):
            return []
        stale = []
        if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
            old = self.keep_ckpt_ids.popleft()
            stale.append(self.file_backend.join_path(
                self.out_dir, self.filename_tmpl.format(old)))
        self.keep_ckpt_ids.append(step)
        runner.message_hub.update_info('keep_ckpt_ids',
                                       list(self.keep_ckpt_ids))
        return stale if is_main_process() else []

    # -- random generator state ----------------------------------------------
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Store the generator states in ``checkpoint['rng_state']``."""
        checkpoint[RNG_STATE_KEY] = capture_rng_state()

    def before_val(self, runner) -> None:
        """Remember the generator states validation will draw from."""
        self._rng_before_val = capture_rng_state()

    def after_val(self, runner) -> None:
        """Give training back the generator states it had."""
        if self._rng_before_val is not None:
            restore_rng_state(self._rng_before_val)
            self._rng_before_val = None

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Keep the loaded generator state until training starts."""
        state = checkpoint.get(RNG_STATE_KEY)
        saved_iter = checkpoint.get('meta', {}).get('iter')
        self._rng_to_restore = None if state is None or saved_iter is None \
            else (saved_iter, state)
