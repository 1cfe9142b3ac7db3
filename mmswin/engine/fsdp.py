"""Fully sharded data parallel training (FSDP2, ``fully_shard``) for
mmengine's ``FlexibleRunner``.

mmengine 0.10.7's own ``FSDPStrategy`` wraps the model in FSDP1 (which
torch deprecates for ``fully_shard``), needs CUDA, and its optimizer
resume calls ``FSDP.optim_state_dict_to_load`` with positional arguments
in the order of an older torch (fixed in mmengine after 0.10.7), so a
resumed run loads no optimizer state. :class:`FSDP2Strategy` is a
strategy of its own, registered in mmswin's ``STRATEGIES`` scope::

    runner_type = 'FlexibleRunner'
    strategy = dict(type='mmswin.FSDP2Strategy')

It shards each Swin block, each patch merging and each stage, then the
root, so one block's parameters are gathered at a time; the optimizer
then steps on the shards (DTensors), with mmengine's paramwise settings,
frozen parameters and ``clip_grad`` (over the global norm: torch's
``clip_grad_norm_`` reduces the DTensor shards' norms). Checkpoints hold
the full, unsharded state dict under the plain module names, so
``tools/test.py`` and :func:`mmswin.checkpoint.load_pretrained` read them
like any other; the optimizer state is saved in full too, keyed by
parameter name, and resumes on any number of processes.
"""
import re
import time
from typing import Callable, List, Optional, Sequence, Tuple, Union

import mmengine
import torch
import torch.distributed as dist
import torch.nn as nn
from mmengine._strategy import DDPStrategy
from mmengine.device import get_device
from mmengine.dist import is_distributed, is_main_process
from mmengine.model import is_model_wrapper
from mmengine.optim import BaseOptimWrapper
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from ..models.layers import SwinStage
from ..registry import STRATEGIES

# Innermost first: fully_shard groups a module's parameters that no inner
# group holds. PatchMerging is its own group because the backbone calls it
# outside its stage's forward, after that stage's parameters are resharded.
SWIN_SHARD_TYPES = ('SwinBlock', 'PatchMerging', 'SwinStage')


def _api():
    """torch.distributed.checkpoint.state_dict, imported on first use so
    that importing mmswin takes no longer."""
    from torch.distributed.checkpoint import state_dict
    return state_dict


def _dtype(value):
    return getattr(torch, value) if isinstance(value, str) else value


@STRATEGIES.register_module()
class FSDP2Strategy(DDPStrategy):
    """``fully_shard`` (FSDP2) for mmengine's ``FlexibleRunner``, on CUDA
    (NCCL) or on CPU (gloo).

    On every :class:`~mmswin.models.layers.SwinStage` it switches the CPU
    fast path off (the fast path runs a stage's blocks on its own token
    rows without calling the blocks, so their parameters would never be
    gathered) and, with ``activation_checkpointing``, switches the stage's
    per-block checkpointing (``with_cp``) on.

    Args:
        shard_types: Class names of the modules sharded one group each,
            innermost first; the root is sharded last.
        activation_checkpointing: Recompute each Swin block in the backward
            pass instead of keeping its activations.
        reshard_after_forward: Free gathered parameters after each
            module's forward (gather again in backward): less memory, more
            communication.
        mixed_precision: Keyword arguments of
            :class:`torch.distributed.fsdp.MixedPrecisionPolicy` (dtypes as
            names, e.g. ``dict(param_dtype='bfloat16',
            reduce_dtype='float32')``), or None for fp32 everywhere.
        **kwargs: :class:`mmengine._strategy.DDPStrategy`'s arguments
            (``model_wrapper`` is unused).
    """

    def __init__(self, *, shard_types: Sequence[str] = SWIN_SHARD_TYPES,
                 activation_checkpointing: bool = True,
                 reshard_after_forward: bool = True,
                 mixed_precision: Optional[dict] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.shard_types = tuple(shard_types)
        self.activation_checkpointing = activation_checkpointing
        self.reshard_after_forward = reshard_after_forward
        self.mp_policy = MixedPrecisionPolicy(**{
            k: _dtype(v) for k, v in (mixed_precision or {}).items()})

    def _setup_distributed(self, launcher: str = 'pytorch',
                           backend: str = 'nccl', **kwargs) -> None:
        """Join the process group; without CUDA with gloo (mmengine's
        ``init_dist`` sets a CUDA device)."""
        if not is_distributed() and not torch.cuda.is_available():
            dist.init_process_group('gloo')
        super()._setup_distributed(launcher, backend, **kwargs)

    def build_optim_wrapper(self, optim_wrapper: Union[dict, BaseOptimWrapper],
                            model: Optional[nn.Module] = None
                            ) -> BaseOptimWrapper:
        """mmengine's ``build_optim_wrapper``, with a one-line error for
        mmengine's ``AmpOptimWrapper`` without CUDA (it asserts there)."""
        if (isinstance(optim_wrapper, dict)
                and optim_wrapper.get('type') == 'AmpOptimWrapper'
                and not torch.cuda.is_available()):
            raise ValueError(
                "optim_wrapper type 'AmpOptimWrapper' needs CUDA; on CPU "
                "use optim_wrapper.type='mmswin.AutocastOptimWrapper' "
                '(bfloat16 autocast)')
        return super().build_optim_wrapper(optim_wrapper, model)

    def shard_groups(self, model: nn.Module) -> List[nn.Module]:
        """The modules that get a ``fully_shard`` of their own, in the
        order they are sharded (``shard_types`` order, then the root)."""
        groups = [m for name in self.shard_types for m in model.modules()
                  if type(m).__name__ == name and m is not model]
        return groups + [model]

    def _wrap_model(self, model: nn.Module) -> nn.Module:
        """Shard ``model`` in place (its class becomes an FSDP subclass of
        its own; names and ``train_step`` stay)."""
        if is_model_wrapper(model):
            return model
        model = self.convert_model(model.to(get_device()))
        for module in model.modules():
            if isinstance(module, SwinStage):
                module.cpu_fast_path = False
                if self.activation_checkpointing:
                    module.with_cp = True
        for module in self.shard_groups(model):
            fully_shard(module, mp_policy=self.mp_policy,
                        reshard_after_forward=self.reshard_after_forward)
        return model

    # -- state dicts: full, on rank 0 (the gathers are collectives) ---------
    def _full_options(self, strict: bool = True):
        return _api().StateDictOptions(full_state_dict=True,
                                       cpu_offload=True, strict=strict)

    def model_state_dict(self) -> dict:
        """The unsharded model state dict, plain module names, on the CPU
        (rank 0; ``{}`` on the others). Every rank must call it."""
        return _api().get_model_state_dict(self.model,
                                           options=self._full_options())

    def optim_state_dict(self) -> dict:
        """The unsharded optimizer state keyed by parameter name (rank 0;
        ``{}`` on the others). Every rank must call it."""
        return _api().get_optimizer_state_dict(
            self.model, self.optim_wrapper.optimizer,
            options=self._full_options())

    def load_model_state_dict(
        self, state_dict: dict, *, strict: bool = False,
        revise_keys: Sequence[Tuple[str, str]] = ((r'^module.', ''), )
    ) -> None:
        """Load a full state dict (every rank passes the whole of it) into
        the shards, after renaming keys by ``revise_keys``."""
        for pattern, replacement in revise_keys:
            state_dict = {re.sub(pattern, replacement, k): v
                          for k, v in state_dict.items()}
        _api().set_model_state_dict(self.model, state_dict,
                                    options=self._full_options(strict))

    def load_optim_state_dict(self, state_dict: dict) -> None:
        """Load a full optimizer state from :meth:`optim_state_dict` into
        the shards (keyword arguments: the positional call is the bug of
        mmengine 0.10.7's FSDPStrategy)."""
        _api().set_optimizer_state_dict(
            model=self.model, optimizers=self.optim_wrapper.optimizer,
            optim_state_dict=state_dict, options=self._full_options())

    def save_checkpoint(self, filename: str, *, save_optimizer: bool = True,
                        save_param_scheduler: bool = True,
                        extra_ckpt: Optional[dict] = None,
                        callback: Optional[Callable] = None) -> None:
        """Gather the full state on every rank; rank 0 writes ``filename``
        in mmengine's checkpoint format (``state_dict``, ``optimizer``,
        ``param_schedulers``, ``meta``, ``message_hub``...)."""
        from mmengine.runner.checkpoint import save_checkpoint
        from mmengine.utils import get_git_hash
        checkpoint = dict(state_dict=self.model_state_dict())
        if save_optimizer and hasattr(self, 'optim_wrapper'):
            checkpoint['optimizer'] = self.optim_state_dict()
        if not is_main_process():
            return
        if save_param_scheduler and hasattr(self, 'param_schedulers'):
            checkpoint['param_schedulers'] = self.scheduler_state_dict()
        extra = dict(extra_ckpt or {})
        extra['meta'] = dict(extra.get('meta') or {}, seed=self.seed,
                             time=time.strftime('%Y%m%d_%H%M%S'),
                             mmengine=mmengine.__version__ + get_git_hash())
        checkpoint.update(extra)
        if callback is not None:
            callback(checkpoint)
        save_checkpoint(checkpoint, filename)
