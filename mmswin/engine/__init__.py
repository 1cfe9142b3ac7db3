"""Training-engine pieces: crash-safe checkpoint files, an exact-resume
checkpoint hook and CPU-capable mixed precision (registered in the
``mmswin`` scope)."""
from .amp import AutocastOptimWrapper, amp_optim_wrapper_type
from .atomic_io import ATOMIC_BACKEND, AtomicLocalBackend, atomic_write_bytes
from .checkpoint_hook import ResumableCheckpointHook

__all__ = [
    'ATOMIC_BACKEND', 'AtomicLocalBackend', 'atomic_write_bytes',
    'ResumableCheckpointHook', 'AutocastOptimWrapper',
    'amp_optim_wrapper_type'
]
