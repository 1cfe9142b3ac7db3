"""Keep the calling thread's alternate signal stack across OpenVINO calls.

OpenVINO's CPU plugin (``SigAltStackSetup`` in ``intel_cpu/src/plugin.cpp``,
added by openvinotoolkit/openvino PR #11894 for AMX; still in 2026.4)
``mmap``\\ s a signal stack whenever a plugin instance is created, installs
it with ``sigaltstack`` and remembers the one it replaced; on destruction it
``munmap``\\ s its own and, if its own is still installed, re-installs the
remembered one. Two plugin instances (two ``ov.Core`` objects, or a
compiled model outliving its ``Core``) that die in the order they were
created leave the thread's alternate stack pointing at unmapped memory.
The next signal delivered with ``SA_ONSTACK`` (Python installs every
handler so, e.g. the ``SIGCHLD`` handler of a PyTorch ``DataLoader`` with
workers) kills the process with ``SIGSEGV`` (``SI_KERNEL``, no traceback).

:func:`keep_signal_stack` puts back the caller's alternate stack when the
call that created a plugin returns. A plugin then never finds its own stack
installed when it dies, so it never re-installs a stale one.
"""
import contextlib
import ctypes
import sys
from typing import Iterator, Optional

SS_DISABLE = 2  # <signal.h>; SS_ONSTACK (1) is reported, never set


class _StackT(ctypes.Structure):
    """``stack_t`` of Linux (``void *ss_sp; int ss_flags; size_t
    ss_size``)."""
    _fields_ = [('ss_sp', ctypes.c_void_p), ('ss_flags', ctypes.c_int),
                ('ss_size', ctypes.c_size_t)]


def _libc() -> Optional[ctypes.CDLL]:
    if not sys.platform.startswith('linux'):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def current_signal_stack() -> Optional[tuple]:
    """``(address, flags, size)`` of this thread's alternate signal stack
    (address None and flags 2 when disabled); None off Linux."""
    libc = _libc()
    stack = _StackT()
    if libc is None or libc.sigaltstack(None, ctypes.byref(stack)) != 0:
        return None
    return stack.ss_sp, stack.ss_flags, stack.ss_size


@contextlib.contextmanager
def keep_signal_stack() -> Iterator[None]:
    """Run the body (an OpenVINO call that may create a CPU plugin:
    ``compile_model``, ``get_property('CPU', ...)``, ``nncf.quantize``) and
    re-install the alternate signal stack this thread had before it."""
    libc = _libc()
    saved = _StackT()
    if libc is None or libc.sigaltstack(None, ctypes.byref(saved)) != 0:
        yield
        return
    try:
        yield
    finally:
        saved.ss_flags &= SS_DISABLE
        libc.sigaltstack(ctypes.byref(saved), None)
