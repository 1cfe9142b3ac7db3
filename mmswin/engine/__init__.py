"""Training-engine pieces: crash-safe checkpoint files, exact resume (a
checkpoint hook and a batch sampler that derive every random draw from the
seed) and CPU-capable mixed precision, registered in the ``mmswin``
scope."""
from .amp import AutocastOptimWrapper, amp_optim_wrapper_type
from .atomic_io import ATOMIC_BACKEND, AtomicLocalBackend, atomic_write_bytes
from .checkpoint_hook import ResumableCheckpointHook
from .fsdp import FSDP2Strategy
from .resumable_sampler import ResumableBatchSampler, SeededIndex
from .zero import ZeroConsolidateHook, ZeroRedundancyOptimizer

__all__ = [
    'ATOMIC_BACKEND', 'AtomicLocalBackend', 'atomic_write_bytes',
    'ResumableCheckpointHook', 'ResumableBatchSampler', 'SeededIndex',
    'AutocastOptimWrapper', 'amp_optim_wrapper_type',
    'ZeroRedundancyOptimizer', 'ZeroConsolidateHook', 'FSDP2Strategy'
]
