"""A CheckpointHook whose checkpoints survive a kill and resume exactly."""
import os
import os.path as osp
import re
from typing import Any, Dict, List

from mmengine.dist import barrier, get_rank, is_main_process
from mmengine.hooks import CheckpointHook

from ..registry import HOOKS
from .atomic_io import ATOMIC_BACKEND, atomic_write_text, remove_partial_files
from .seeding import TRAIN_STEP_STREAM, derive_seed, seed_generators

# The file in the work dir that names the checkpoint ``--resume`` loads
# (mmengine's name).
POINTER = 'last_checkpoint'


class DeferredRemoval:
    """A file backend whose ``remove`` and ``rmtree`` wait for
    :meth:`flush`; everything else is the wrapped backend's.

    mmengine's CheckpointHook deletes the checkpoint that falls out of
    ``max_keep_ckpts`` (and a replaced best checkpoint) before it writes the
    new one; holding the deletions back until the new file and the pointer
    are on disk means a kill in between always leaves one to resume from.
    """

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.pending: List[str] = []

    def __getattr__(self, name: str) -> Any:
        if name == 'backend':  # not set yet (copy, unpickling)
            raise AttributeError(name)
        return getattr(self.backend, name)

    def remove(self, path: str) -> None:
        """Delete the file at ``path`` at the next :meth:`flush`."""
        self.pending.append(path)

    def rmtree(self, path: str) -> None:
        """Delete the folder at ``path`` at the next :meth:`flush`."""
        self.pending.append(path)

    def flush(self) -> List[str]:
        """Carry out the held-back deletions; returns the deleted paths."""
        done = []
        for path in self.pending:
            if self.backend.isfile(path):
                self.backend.remove(path)
            elif self.backend.isdir(path):  # deepspeed checkpoints
                self.backend.rmtree(path)
            else:
                continue
            done.append(path)
        self.pending = []
        return done


@HOOKS.register_module()
class ResumableCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` made safe to kill at any moment.

    Use it in place of the default one::

        default_hooks = dict(checkpoint=dict(
            type='mmswin.ResumableCheckpointHook', interval=...))

    It accepts every argument of :class:`mmengine.hooks.CheckpointHook`,
    extends only its public hook methods, and changes three things:

    - Files appear only complete. Checkpoints go through the
      ``'mmswin_atomic_local'`` backend (temporary file, fsync, rename);
      partial files of a killed run are deleted when training starts. (A
      remote ``out_dir`` or explicit ``backend_args`` keep the backend they
      name.)
    - There is always a checkpoint to resume from. Old checkpoints
      (``max_keep_ckpts``, a replaced best one) are deleted only after the
      new checkpoint and ``last_checkpoint`` are on disk; mmengine deletes
      first. A ``last_checkpoint`` that a kill left half-written is pointed
      at the newest complete checkpoint when the next run starts, before
      ``--resume`` reads it, and checkpoints the killed run had yet to
      delete are deleted on resume.
    - The training step's randomness is derived, not carried: before every
      iteration python's, numpy's and torch's (CPU and CUDA) generators are
      seeded from (seed, rank, iteration). Dropout, drop-path and the
      detectors' proposal samplers therefore draw the same numbers in a
      resumed run, in every process of a multi-process run, and validation
      between epochs does not shift them. With
      :class:`~mmswin.engine.ResumableBatchSampler` for the data side, the
      same seed and ``randomness.deterministic=True``, a killed and resumed
      run ends with the weights of the uninterrupted one.
    """

    def __init__(self, *args, **kwargs) -> None:
        out_dir = kwargs.get('out_dir')
        is_local = out_dir is None or '://' not in str(out_dir)
        self.writes_atomically = is_local and kwargs.get(
            'backend_args') is None and kwargs.get('file_client_args') is None
        if self.writes_atomically:
            kwargs['backend_args'] = dict(backend=ATOMIC_BACKEND)
        super().__init__(*args, **kwargs)

    # -- before training: repair what a kill left ----------------------------
    def before_run(self, runner) -> None:
        """Point an unreadable ``last_checkpoint`` at the newest complete
        checkpoint (or remove it if there is none): runs before the runner
        resumes from it."""
        super().before_run(runner)
        if self.writes_atomically and is_main_process():
            self._repair_pointer(runner)
        barrier()  # the other processes read the pointer next

    def before_train(self, runner) -> None:
        """Set up as mmengine does, hold back deletions, and delete the
        files a killed run left behind."""
        super().before_train(runner)
        self.file_backend = DeferredRemoval(self.file_backend)
        if is_main_process() and self.writes_atomically:
            stale = remove_partial_files(self.out_dir)
            stale += self._remove_unkept_checkpoints()
            for path in stale:
                runner.logger.warning(f'Removed {path}, left by a killed run.')
        if runner.iter > 0:
            runner.logger.info(
                f'Restored the random generator state of iteration '
                f'{runner.iter}: it is derived from (seed {runner.seed}, '
                f'rank {get_rank()}, iteration).')

    def _checkpoint_folder(self, runner) -> str:
        # Where before_train will put the checkpoints (mmengine's rule).
        if self.out_dir is None or self.out_dir == runner.work_dir:
            return runner.work_dir
        return osp.join(self.out_dir,
                        osp.basename(runner.work_dir.rstrip(osp.sep)))

    def _saved_checkpoints(self, folder: str) -> Dict[int, str]:
        """{step: path} of the checkpoint files in ``folder`` named by
        ``filename_tmpl``."""
        pattern = re.escape(self.filename_tmpl).replace(r'\{\}', r'(\d+)')
        if pattern.count(r'(\d+)') != 1 or not osp.isdir(folder):
            return {}
        saved = {}
        for name in os.listdir(folder):
            match = re.fullmatch(pattern, name)
            path = osp.join(folder, name)
            if match and osp.isfile(path):
                saved[int(match.group(1))] = path
        return saved

    def _repair_pointer(self, runner) -> None:
        pointer = osp.join(runner.work_dir, POINTER)
        if not osp.isfile(pointer):
            return
        with open(pointer) as f:
            if osp.isfile(f.read().strip()):
                return
        saved = self._saved_checkpoints(self._checkpoint_folder(runner))
        if saved:
            atomic_write_text(saved[max(saved)], pointer)
            runner.logger.warning(
                f'{pointer} was left unreadable by a killed run; it now '
                f'names the newest complete checkpoint, {saved[max(saved)]}.')
        else:
            os.remove(pointer)
            runner.logger.warning(f'Removed {pointer}: unreadable and no '
                                  'complete checkpoint to name.')

    def _remove_unkept_checkpoints(self) -> List[str]:
        """After a resume: the checkpoints older than the newest kept one
        that ``max_keep_ckpts`` had dropped but a kill left on disk."""
        kept = set(getattr(self, 'keep_ckpt_ids', ()))
        if self.max_keep_ckpts <= 0 or not kept:
            return []
        removed = []
        for step, path in self._saved_checkpoints(self.out_dir).items():
            if step < max(kept) and step not in kept:
                os.remove(path)
                removed.append(path)
        return removed

    # -- during training -----------------------------------------------------
    def before_train_iter(self, runner, batch_idx: int,
                          data_batch: Any = None) -> None:
        """Seed the generators for this iteration from (seed, rank,
        iteration)."""
        super().before_train_iter(runner, batch_idx, data_batch)
        seed_generators(derive_seed(runner.seed, TRAIN_STEP_STREAM,
                                    get_rank(), runner.iter))

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None,
                         outputs: Any = None) -> None:
        """Save as mmengine does, then delete what the save replaced."""
        super().after_train_iter(runner, batch_idx, data_batch, outputs)
        self._remove_replaced()

    def after_train_epoch(self, runner) -> None:
        """Save as mmengine does, then delete what the save replaced."""
        super().after_train_epoch(runner)
        self._remove_replaced()

    def after_val_epoch(self, runner, metrics: Any = None) -> None:
        """Save the best checkpoint as mmengine does, then delete the one
        it replaced."""
        super().after_val_epoch(runner, metrics)
        self._remove_replaced()

    def _remove_replaced(self) -> None:
        # No backend yet where validation runs without training.
        backend = getattr(self, 'file_backend', None)
        if isinstance(backend, DeferredRemoval):
            backend.flush()
