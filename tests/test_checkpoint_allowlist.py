"""The refusing side of the weights-only allowlist that importing mmswin adds
(``mmswin/checkpoint/safe_globals.py``).

Every pickle here is made by the test with ``torch.save`` and read with
``torch.load(weights_only=True)``, as ``--resume`` and ``load_from`` read:

- the ``getattr`` stand-in resolves ``HistoryBuffer.<statistics method>``
  and refuses every other attribute or owner, naming the request;
- numpy arrays and scalars of object, string and structured dtypes stay
  refused, while numeric ones load (the control that the refusals are about
  the dtype, not about numpy);
- arrays pickled under numpy < 2 (which names ``numpy.core.multiarray``)
  load under numpy 2 (which names ``numpy._core.multiarray``) and the other
  way round, and building the allowlist warns about no deprecated module.
"""
import io
import warnings

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

import mmswin  # noqa: F401  (registers the allowlist)
from mmswin.checkpoint import safe_globals


class GetAttr:
    """Pickles as ``getattr(owner, name)``, the way Python pickles a method
    looked up on a class."""

    def __init__(self, owner: object, name: str) -> None:
        self.owner, self.name = owner, name

    def __reduce__(self):
        return getattr, (self.owner, self.name)


def saved(obj: object, legacy: bool = False) -> bytes:
    buffer = io.BytesIO()
    torch.save({'meta': obj}, buffer,
               _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


def load(data: bytes) -> object:
    return torch.load(io.BytesIO(data), weights_only=True)['meta']


@pytest.mark.parametrize('name', ['mean', 'min', 'max', 'current'])
def test_statistics_methods_resolve(name):
    """Control: what mmengine's checkpoints hold loads."""
    assert load(saved(GetAttr(HistoryBuffer, name))) is getattr(
        HistoryBuffer, name)


@pytest.mark.parametrize('owner, name', [
    (HistoryBuffer, '__init__'),
    (HistoryBuffer, '__class__'),
    (HistoryBuffer, 'update'),
    (HistoryBuffer, '__reduce_ex__'),
    (np.ndarray, 'mean'),  # an allowlisted owner, but not HistoryBuffer
    (np.ndarray, 'tofile'),
])
def test_getattr_stand_in_refuses_other_attributes_and_owners(owner, name):
    with pytest.raises(Exception, match='Weights only load failed') as err:
        load(saved(GetAttr(owner, name)))
    assert (f'checkpoint asks for getattr({owner!r}, {name!r}); only '
            'HistoryBuffer statistics methods are allowed') in str(err.value)


REFUSED_ARRAYS = {
    'object': np.array([1, 'a', None], dtype=object),
    'string': np.array(['ab', 'c']),
    'bytes': np.array([b'ab']),
    'structured': np.zeros(2, dtype=[('a', 'f4'), ('b', 'i4')]),
    'string scalar': np.str_('ab'),
    'structured scalar': np.zeros(1, dtype=[('a', 'f4')])[0],
}


@pytest.mark.parametrize('kind', sorted(REFUSED_ARRAYS))
def test_non_numeric_numpy_dtypes_stay_refused(kind):
    with pytest.raises(Exception, match='Weights only load failed') as err:
        load(saved(REFUSED_ARRAYS[kind]))
    assert 'numpy.dtypes.' in str(err.value)  # the refused dtype class


@pytest.mark.parametrize('dtype', safe_globals.NUMERIC_DTYPES)
def test_numeric_arrays_and_scalars_load(dtype):
    """Control: the same route with a numeric dtype loads, value and dtype
    intact."""
    array = np.arange(6).reshape(2, 3).astype(dtype)
    got = load(saved(dict(array=array, scalar=array.flat[1])))
    assert got['array'].dtype == dtype and (got['array'] == array).all()
    assert got['scalar'].dtype == dtype and got['scalar'] == array.flat[1]


@pytest.mark.parametrize('written, rewritten', [
    (b'numpy._core.multiarray', b'numpy.core.multiarray'),
    (b'numpy.core.multiarray', b'numpy._core.multiarray')],
    ids=['saved-under-numpy1', 'saved-under-numpy2'])
def test_arrays_pickled_by_either_numpy_major_load(written, rewritten):
    """numpy < 2 pickles arrays and scalars as
    ``numpy.core.multiarray._reconstruct`` / ``.scalar``, numpy >= 2 as
    ``numpy._core.multiarray...``; a legacy-format checkpoint (one plain
    pickle) rewritten to the other major's names must load too."""
    meta = dict(array=np.linspace(0, 1, 5), scalar=np.float64(2.5))
    data = saved(meta, legacy=True)
    numpy2 = int(np.__version__.split('.')[0]) >= 2
    native = b'numpy._core.multiarray' if numpy2 else b'numpy.core.multiarray'
    data = data.replace(native, written)
    assert data.count(written) == 2 and rewritten not in data
    data = data.replace(written, rewritten)
    got = load(data)
    assert (got['array'] == meta['array']).all()
    assert got['scalar'] == 2.5


def test_building_the_allowlist_uses_no_deprecated_numpy_module():
    with warnings.catch_warnings():
        warnings.simplefilter('error', DeprecationWarning)
        entries = safe_globals.mmengine_safe_globals()
    names = {entry[1] for entry in entries if isinstance(entry, tuple)}
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        assert {f'{module}._reconstruct', f'{module}.scalar'} <= names
