"""ZeRO stage 1 (optimizer state sharded over the processes) under
mmengine's ``Runner`` and DDP.

mmengine 0.10.7 ships ``ZeroRedundancyOptimizer`` (torch's, built from an
optimizer name), and its paramwise settings work: mmengine's
``DefaultOptimWrapperConstructor`` hands it one parameter group per
parameter, which torch partitions greedily by size, each rank's local
AdamW keeping the group's ``weight_decay``/``lr``. What does not work is
saving: ``Runner.save_checkpoint`` runs on rank 0 only
(``@master_only``), while mmengine's ``state_dict`` consolidates the
shards, a collective every rank must join, so the first checkpoint hangs
(mmengine PR 551 moved the hook's saving off ``master_only`` for this;
the runner's own decorator stayed).

The fix uses two public extension points: :class:`ZeroConsolidateHook`
gathers the shards on every rank right before a ``CheckpointHook`` saves,
and :class:`ZeroRedundancyOptimizer` (mmengine's, registered in the
``mmswin`` scope) returns that consolidated state instead of starting a
collective on one rank, and says what to add when it has none. Use::

    optim_wrapper = dict(optimizer=dict(
        type='mmswin.ZeroRedundancyOptimizer', optimizer_type='AdamW'))
    custom_hooks = [dict(type='mmswin.ZeroConsolidateHook')]

(as the SwinV2-G configs do). Resuming needs nothing:
every rank reads the full optimizer state and keeps its own shard.
"""
from typing import Any, Dict, Iterable, Optional

from mmengine.dist import get_world_size, is_main_process
from mmengine.hooks import CheckpointHook, Hook
from mmengine.optim import BaseOptimWrapper, OptimWrapperDict
from mmengine.optim import ZeroRedundancyOptimizer as MMEngineZero

from ..registry import HOOKS, OPTIMIZERS

MISSING_HOOK = (
    'mmswin.ZeroRedundancyOptimizer: the optimizer state was not '
    'consolidated before this checkpoint (rank 0 saves alone, so it cannot '
    'gather the other ranks\' shards itself); add '
    "custom_hooks=[dict(type='mmswin.ZeroConsolidateHook')] to the config")


@OPTIMIZERS.register_module()
class ZeroRedundancyOptimizer(MMEngineZero):
    """mmengine's ``ZeroRedundancyOptimizer`` (torch's ZeRO-1 around
    ``torch.optim.<optimizer_type>``) whose ``state_dict`` rank 0 can call
    alone, as ``Runner.save_checkpoint`` does.

    Args:
        params: Parameters or parameter groups (mmengine's paramwise groups).
        optimizer_type: Name of the local optimizer in ``torch.optim``.
        **kwargs: The local optimizer's defaults and ZeRO's options.
    """

    def __init__(self, params: Iterable, optimizer_type: str,
                 **kwargs: Any) -> None:
        self._steps = 0
        self._consolidated_at: Optional[int] = None
        super().__init__(params, optimizer_type, **kwargs)

    def step(self, closure=None, **kwargs: Any):
        """Update this rank's shard and broadcast it (torch's step)."""
        loss = super().step(closure, **kwargs)
        self._steps += 1
        return loss

    def consolidate_state_dict(self, to: int = 0) -> None:
        """Gather every rank's shard on rank ``to``; every rank must call
        it (a collective)."""
        super().consolidate_state_dict(to)
        self._consolidated_at = self._steps

    def state_dict(self) -> Dict[str, Any]:
        """The full optimizer state on rank 0 (``{}`` on the others), as
        gathered by the last :meth:`consolidate_state_dict`.

        Raises:
            RuntimeError: on rank 0 when the state changed since it was
                last consolidated (no :class:`ZeroConsolidateHook`).
        """
        if get_world_size() == 1:
            self.consolidate_state_dict()
        if not is_main_process():
            return {}
        if self._consolidated_at != self._steps:
            raise RuntimeError(MISSING_HOOK)
        # torch's own method: mmengine's would start a collective here.
        return super(MMEngineZero, self).state_dict()


def zero_optimizers(runner) -> list:
    """The :class:`ZeroRedundancyOptimizer` instances of ``runner``'s
    optim wrapper (several with an ``OptimWrapperDict``)."""
    wrapper = runner.optim_wrapper  # a config dict until training builds it
    if isinstance(wrapper, OptimWrapperDict):
        wrappers = list(wrapper.values())
    elif isinstance(wrapper, BaseOptimWrapper):
        wrappers = [wrapper]
    else:
        return []
    return [w.optimizer for w in wrappers
            if isinstance(w.optimizer, ZeroRedundancyOptimizer)]


@HOOKS.register_module()
class ZeroConsolidateHook(Hook):
    """Gather the ZeRO optimizer shards on rank 0 on every rank just before
    a ``CheckpointHook`` saves (this hook's priority, ``LOW``, runs before
    the checkpoint hook's ``VERY_LOW``), using the checkpoint hooks' own
    settings (``interval``, ``by_epoch``, ``save_begin``, ``save_last``,
    ``save_best``) to know when they will."""

    priority = 'LOW'

    def _consolidate(self, runner) -> None:
        for optimizer in zero_optimizers(runner):
            optimizer.consolidate_state_dict()

    def _checkpoint_hooks(self, runner) -> list:
        return [h for h in runner.hooks if isinstance(h, CheckpointHook)]

    def after_train_iter(self, runner, batch_idx: int,
                         data_batch: Any = None, outputs: Any = None) -> None:
        """Consolidate if an iteration-based checkpoint follows."""
        if any(not h.by_epoch and (
                h.every_n_train_iters(runner, h.interval, h.save_begin)
                or (h.save_last and h.is_last_train_iter(runner)))
               for h in self._checkpoint_hooks(runner)):
            self._consolidate(runner)

    def after_train_epoch(self, runner) -> None:
        """Consolidate if an epoch-based checkpoint follows."""
        if any(h.by_epoch and (
                h.every_n_epochs(runner, h.interval, h.save_begin)
                or (h.save_last and h.is_last_train_epoch(runner)))
               for h in self._checkpoint_hooks(runner)):
            self._consolidate(runner)

    def after_val_epoch(self, runner, metrics: Optional[dict] = None) -> None:
        """Consolidate if a best checkpoint may follow (``save_best``)."""
        if metrics and any(h.save_best is not None
                           for h in self._checkpoint_hooks(runner)):
            self._consolidate(runner)
