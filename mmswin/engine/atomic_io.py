"""Crash-safe local file writes: a file appears complete or not at all.

A process killed while writing (SIGKILL, OOM killer, pre-emption) leaves a
truncated file behind when it writes to the final name. Here the bytes go
to a hidden temporary file in the same directory, are flushed to disk, and
the temporary file is renamed onto the final name: ``os.replace`` within one
file system is atomic, so a reader sees the old file, no file, or the whole
new one, never a part.

``AtomicLocalBackend`` is an mmengine file backend (registered as
``'mmswin_atomic_local'``) that writes this way, so every checkpoint mmengine
saves through ``backend_args=dict(backend='mmswin_atomic_local')`` is
crash-safe without patching mmengine or torch.
"""
import os
import os.path as osp
import re
from pathlib import Path
from typing import List, Union

from mmengine.fileio import LocalBackend, register_backend

ATOMIC_BACKEND = 'mmswin_atomic_local'
# '.{name}.{pid}.part': hidden and never a '*.pth' name, so neither
# mmengine's 'last_checkpoint' nor a glob for checkpoints can pick it up.
_PART_RE = re.compile(r'^\..+\.\d+\.part$')


def partial_path(path: Union[str, Path]) -> str:
    """Temporary name, in ``path``'s directory, that a write goes to first."""
    folder, name = osp.split(str(path))
    return osp.join(folder, f'.{name}.{os.getpid()}.part')


def _fsync_dir(folder: str) -> None:
    # Makes the rename itself durable across a power loss; not possible
    # (nor needed) where directories cannot be opened, e.g. on Windows.
    if not hasattr(os, 'O_DIRECTORY'):
        return
    fd = os.open(folder or '.', os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(data: bytes, path: Union[str, Path]) -> None:
    """Write ``data`` to ``path`` so that ``path`` is never seen partial.

    Creates missing parent directories. A failure (or a kill) before the
    final rename leaves ``path`` as it was; the temporary file of a failed
    call is removed, that of a killed process is removed by
    :func:`remove_partial_files`.
    """
    path = str(path)
    folder = osp.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    tmp = partial_path(path)
    try:
        with open(tmp, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(folder)


def atomic_write_text(text: str, path: Union[str, Path],
                      encoding: str = 'utf-8') -> None:
    """:func:`atomic_write_bytes` for text."""
    atomic_write_bytes(text.encode(encoding), path)


def remove_partial_files(folder: Union[str, Path]) -> List[str]:
    """Delete the temporary files that killed writers left in ``folder``.

    Returns the removed paths. Only names of the form ``.{name}.{pid}.part``
    made by :func:`partial_path` are touched.
    """
    folder = str(folder)
    if not osp.isdir(folder):
        return []
    removed = []
    for name in sorted(os.listdir(folder)):
        path = osp.join(folder, name)
        if _PART_RE.match(name) and osp.isfile(path):
            os.remove(path)
            removed.append(path)
    return removed


@register_backend(ATOMIC_BACKEND, force=True)
class AtomicLocalBackend(LocalBackend):
    """mmengine's local backend whose writes are atomic (see module doc).

    Select it with ``backend_args=dict(backend='mmswin_atomic_local')``;
    reads, listing and removal are those of :class:`LocalBackend`.
    """

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        """Atomically write bytes ``obj`` to ``filepath``."""
        atomic_write_bytes(obj, filepath)

    def put_text(self, obj: str, filepath: Union[str, Path],
                 encoding: str = 'utf-8') -> None:
        """Atomically write text ``obj`` to ``filepath``."""
        atomic_write_text(obj, filepath, encoding)
