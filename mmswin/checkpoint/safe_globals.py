"""Let mmengine's own checkpoints load under ``weights_only=True``.

Since torch 2.6 ``torch.load`` defaults to ``weights_only=True``, and
mmengine's ``Runner`` checkpoints carry, in ``meta['message_hub']``,
:class:`~mmengine.logging.HistoryBuffer` objects holding numpy arrays and
scalars, whose pickles also name the buffer's statistics methods through
``getattr``. Importing mmswin allowlists these (numpy restricted to
numeric dtypes), so ``--resume``
works with the safe default and no environment variable has to switch the
safety off. ``getattr`` is not allowlisted itself: a stand-in resolves only
``HistoryBuffer.<statistics method>`` and refuses anything else.
"""
import pickle
from typing import Callable, List, Tuple, Union

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

SafeGlobal = Union[Callable, Tuple[Callable, str]]

# Arrays and scalars in a message hub are numeric (HistoryBuffer keeps
# float64 histories; runtime info may hold other numpy numbers). Object,
# string and structured dtypes stay refused.
NUMERIC_DTYPES = ('bool', 'int8', 'int16', 'int32', 'int64', 'uint8',
                  'uint16', 'uint32', 'uint64', 'float16', 'float32',
                  'float64')

# HistoryBuffer fills its class-level ``_statistics_methods`` with these on
# first use, so a fresh process must know them before any buffer exists.
_DEFAULT_STATISTICS = frozenset(('min', 'max', 'current', 'mean'))


def history_buffer_method(owner: type, name: str) -> Callable:
    """Stand-in for ``builtins.getattr`` while unpickling: returns
    ``HistoryBuffer.<name>`` for a registered statistics method only.

    Raises:
        pickle.UnpicklingError: any other owner or attribute.
    """
    allowed = _DEFAULT_STATISTICS.union(HistoryBuffer._statistics_methods)
    if owner is HistoryBuffer and name in allowed:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'checkpoint asks for getattr({owner!r}, {name!r}); only '
        'HistoryBuffer statistics methods are allowed')


def _array_constructors() -> List[SafeGlobal]:
    """numpy's array and scalar constructors under both names pickles use:
    numpy >= 2 writes ``numpy._core.multiarray.*``, numpy < 2 wrote
    ``numpy.core.multiarray.*`` (``numpy.core`` is a deprecated alias in
    numpy 2, so it is not imported there)."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 1.26 has no numpy._core
        from numpy.core import multiarray
    return [(function, f'{module}.{function.__name__}')
            for function in (multiarray._reconstruct, multiarray.scalar)
            for module in ('numpy._core.multiarray', 'numpy.core.multiarray')]


def mmengine_safe_globals() -> List[SafeGlobal]:
    """The globals a checkpoint saved by mmengine's Runner refers to."""
    return [
        HistoryBuffer,
        (history_buffer_method, 'builtins.getattr'),
        np.ndarray,
        np.dtype,
    ] + _array_constructors() + [
        type(np.dtype(name)) for name in NUMERIC_DTYPES]


def register_mmengine_safe_globals() -> None:
    """Allowlist :func:`mmengine_safe_globals` for ``torch.load``; a no-op
    on torch versions without ``add_safe_globals`` (their default is not
    weights-only)."""
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is not None:
        add(mmengine_safe_globals())


register_mmengine_safe_globals()
