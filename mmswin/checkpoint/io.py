"""Safe reading and writing of checkpoint files.

External checkpoints are read with ``torch.load(weights_only=True)`` or as
``.safetensors``: nothing in a file is ever unpickled into arbitrary objects,
so a checkpoint carrying a pickle payload is refused before the payload can
run. A truncated or corrupt file gives a :class:`CorruptCheckpointError`
naming the file.
"""
import os
import os.path as osp
import pickle
import struct
import zipfile
from typing import Any, Dict, Mapping, Optional
from urllib.parse import urlparse

import torch

from .renaming import StateDict, keys_under

# Where a checkpoint file keeps its weights, in order of preference:
# mmengine/mmdet/mmseg ('state_dict'), the official Microsoft code ('model'),
# some DDP dumps ('module').
_STATE_DICT_KEYS = ('state_dict', 'model', 'module')


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names file and fix."""


class UnsafeCheckpointError(CheckpointError):
    """The file holds pickled objects other than tensors and containers."""


class CorruptCheckpointError(CheckpointError):
    """The file is truncated, corrupt or not a checkpoint at all."""


def is_url(filename: str) -> bool:
    """True for ``http://`` and ``https://`` addresses."""
    return urlparse(str(filename)).scheme in ('http', 'https')


def download(url: str, model_dir: Optional[str] = None) -> str:
    """Download ``url`` once into torch hub's checkpoint folder (or
    ``model_dir``) and return the local path.

    In distributed runs rank 0 downloads while the others wait, as
    mmengine's ``load_from_http`` does.
    """
    from mmengine.dist import barrier, get_dist_info
    model_dir = model_dir or osp.join(torch.hub.get_dir(), 'checkpoints')
    os.makedirs(model_dir, exist_ok=True)
    cached = osp.join(model_dir, osp.basename(urlparse(url).path))
    rank, world_size = get_dist_info()
    if rank == 0 and not osp.exists(cached):
        torch.hub.download_url_to_file(url, cached, progress=True)
    if world_size > 1:
        barrier()
    return cached


def _is_safetensors(path: str) -> bool:
    # safetensors: 8-byte little-endian header length, then a JSON object.
    if path.endswith('.safetensors'):
        return True
    with open(path, 'rb') as f:
        head = f.read(9)
    if len(head) < 9 or head[:2] == b'PK':
        return False
    (length, ) = struct.unpack('<Q', head[:8])
    return head[8:9] == b'{' and 0 < length < osp.getsize(path)


def _corrupt(path: str, reason: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(
        f'Cannot read checkpoint {path!r}: the file is truncated or corrupt '
        f'({reason}). Download or copy it again.')


def _read_safetensors(path: str, map_location: Any) -> StateDict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    device = map_location if isinstance(map_location, str) else 'cpu'
    try:
        return load_file(path, device=device)
    except (SafetensorError, OSError, ValueError) as err:
        raise _corrupt(path, f'safetensors: {err}') from None


def _unsafe_globals(path: str) -> list:
    """Globals a pickle would import, listed without running anything."""
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # unreadable: the caller reports the original error
        return []


# Phrases of torch's weights-only unpickler when a pickle asks to import or
# build objects (as opposed to bytes that are no pickle at all).
_OBJECT_REQUESTS = ('Unsupported global', 'Can only build',
                    'Can only create new object', 'Trying to call reduce')


def _read_torch(path: str, map_location: Any) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        if not any(phrase in text for phrase in _OBJECT_REQUESTS):
            raise _corrupt(path, text.strip().splitlines()[-1]) from None
        found = ', '.join(_unsafe_globals(path)) or 'see the details'
        detail = next(line for line in text.splitlines()
                      if any(p in line for p in _OBJECT_REQUESTS))
        raise UnsafeCheckpointError(
            f'Refusing to load {path!r}: it holds pickled Python objects '
            f'({found}) besides tensors, and unpickling them could run '
            'arbitrary code. mmswin reads checkpoints with '
            'torch.load(weights_only=True) only. If you trust the file, '
            'extract its state dict in a separate trusted session '
            '(torch.load(..., weights_only=False)) and save that with '
            f'torch.save or safetensors. Details: {detail.strip()}'
        ) from None
    except Exception as err:  # zip, EOF, struct, key errors of broken files
        raise _corrupt(path, f'{type(err).__name__}: {err}') from None


# Leading bytes of files that get mistaken for checkpoints.
_NOT_CHECKPOINTS = (
    (b'\xff\xd8\xff', 'a JPEG image'), (b'\x89PNG', 'a PNG image'),
    (b'\x1f\x8b', 'a gzip archive'), (b'<!DOCTYPE', 'an HTML page'),
    (b'<html', 'an HTML page'), (b'<?xml', 'an XML file'),
    (b'{', 'a JSON or text file'))


def _is_zip(path: str) -> bool:
    with open(path, 'rb') as f:
        return f.read(2) == b'PK'


def _check_zip(path: str) -> None:
    """A cut zip archive has lost its directory, which sits at the end."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            end = max((info.header_offset + info.compress_size
                       for info in archive.infolist()), default=0)
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise _corrupt(path, f'broken zip archive: {err}') from None
    if not any(name.endswith('data.pkl') for name in names):
        raise _corrupt(path, 'a zip archive without data.pkl, not a '
                       'PyTorch checkpoint')
    if end > osp.getsize(path):
        raise _corrupt(path, 'the zip directory points past the end')


def _refuse_non_file(path: str) -> None:
    """Raise for a directory, a missing path, an empty file, or a file that
    starts like something else than a checkpoint (e.g. a JPEG image)."""
    if osp.isdir(path):
        raise CorruptCheckpointError(
            f'Cannot read checkpoint {path!r}: it is a directory, not a '
            'checkpoint file.')
    if not osp.isfile(path):
        raise FileNotFoundError(f'Checkpoint file {path!r} does not exist')
    if osp.getsize(path) == 0:
        raise CorruptCheckpointError(
            f'Cannot read checkpoint {path!r}: the file is empty.')
    with open(path, 'rb') as f:
        head = f.read(16)
    for magic, kind in _NOT_CHECKPOINTS:
        if head.startswith(magic):
            raise CorruptCheckpointError(
                f'Cannot read checkpoint {path!r}: it is {kind}, not a '
                'checkpoint (the file is truncated or not a checkpoint).')


def probe_checkpoint(filename: str) -> str:
    """Check cheaply, without reading the weights, that ``filename`` can be
    a checkpoint: a PyTorch zip archive whose directory is intact (a cut
    file loses it), a safetensors file whose header is valid, or a legacy
    PyTorch pickle (read in full, safely: it has no directory to check).

    Returns:
        ``'torch'``, ``'safetensors'`` or ``'legacy'``.

    Raises:
        FileNotFoundError: no such path.
        CorruptCheckpointError: a directory, an empty, truncated or
            corrupt file, or a file of another kind (e.g. a JPEG image).
        UnsafeCheckpointError: a legacy pickle with Python objects.
    """
    path = str(filename)
    _refuse_non_file(path)
    if _is_zip(path):
        _check_zip(path)
        return 'torch'
    if _is_safetensors(path):
        from safetensors import SafetensorError, safe_open
        try:
            with safe_open(path, framework='pt') as f:
                f.keys()
        except (SafetensorError, OSError, ValueError) as err:
            raise _corrupt(path, f'safetensors: {err}') from None
        return 'safetensors'
    _read_torch(path, 'cpu')  # no zip directory: read it to find a cut
    return 'legacy'


def read_checkpoint(filename: str, map_location: Any = 'cpu') -> Any:
    """Read a ``.pth``/``.pt``/``.bin`` or ``.safetensors`` checkpoint
    safely; URLs are downloaded first (cached in torch hub's folder).

    Returns:
        Whatever the file holds: a state dict or a dict wrapping one.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the file holds pickled objects.
        CorruptCheckpointError: a directory, or a file that is empty,
            truncated, corrupt or of another kind (e.g. an image).
    """
    path = download(filename) if is_url(filename) else str(filename)
    _refuse_non_file(path)
    if _is_safetensors(path):
        return _read_safetensors(path, map_location)
    if _is_zip(path):
        _check_zip(path)
    return _read_torch(path, map_location)


def extract_state_dict(checkpoint: Any, source: str = 'checkpoint'
                       ) -> StateDict:
    """The tensor state dict inside a checkpoint object.

    Unwraps ``state_dict`` (mmengine), ``model`` (official Microsoft) or
    ``module`` and keeps the tensor entries.

    Raises:
        CheckpointError: nothing that looks like a state dict.
    """
    state = checkpoint
    while isinstance(state, Mapping):
        inner = next((state[k] for k in _STATE_DICT_KEYS
                      if isinstance(state.get(k), Mapping)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, Mapping):
        raise CheckpointError(f'{source} holds a {type(state).__name__}, '
                              'not a state dict')
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(
            f'{source} holds no tensors; top-level keys: '
            f'{sorted(map(str, state))[:10]}')
    return tensors


def read_state_dict(filename: str, prefix: Optional[str] = None,
                    map_location: Any = 'cpu') -> StateDict:
    """The tensors of a checkpoint file (:func:`read_checkpoint`, then
    :func:`extract_state_dict`), only those under ``prefix`` when given,
    with the prefix removed.

    Raises:
        CheckpointError: as the two functions, or no key under ``prefix``.
    """
    state = extract_state_dict(read_checkpoint(filename, map_location),
                               source=repr(filename))
    if prefix:
        state = keys_under(state, prefix)
        if not state:
            raise CheckpointError(f'no key of {filename!r} starts with '
                                  f'prefix {prefix!r}')
    return state


def save_checkpoint(state: StateDict, filename: str,
                    metadata: Optional[Dict[str, str]] = None) -> None:
    """Write ``state`` to ``.safetensors`` (flat, with string metadata) or
    to a ``.pth`` holding ``{'state_dict': state, 'meta': metadata}``."""
    os.makedirs(osp.dirname(osp.abspath(filename)), exist_ok=True)
    if filename.endswith('.safetensors'):
        from safetensors.torch import save_file

        # safetensors refuses views that share storage: store copies.
        save_file({k: v.detach().contiguous().clone()
                   for k, v in state.items()}, filename,
                  metadata=dict(metadata or {}))
    else:
        torch.save({'state_dict': state, 'meta': dict(metadata or {})},
                   filename)
