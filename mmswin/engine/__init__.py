"""Training-engine pieces: crash-safe checkpoint files and an exact-resume
checkpoint hook (registered in the ``mmswin`` scope)."""
from .atomic_io import ATOMIC_BACKEND, AtomicLocalBackend, atomic_write_bytes
from .checkpoint_hook import ResumableCheckpointHook

__all__ = [
    'ATOMIC_BACKEND', 'AtomicLocalBackend', 'atomic_write_bytes',
    'ResumableCheckpointHook'
]
