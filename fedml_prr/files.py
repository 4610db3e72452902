"""Atomic file writes: a reader sees the old file or the new one, never a half-written one.

One mechanism, :func:`atomic_write`: the content is written to a temporary sibling of the target
(same folder, so the same file system), which then replaces the target with ``os.replace``
(atomic on POSIX and Windows).  If writing fails, the temporary file is removed and the target
is untouched.  There is no ``fsync``: a power loss may lose the newest content, but never leaves
a truncated file under the target's name.

The thin helpers :func:`atomic_write_text`, :func:`atomic_write_bytes` and
:func:`atomic_torch_save` cover the usual payloads; :func:`unwritable_folder` says, before any
work, why an output folder could not be written.  This module imports only the standard
library (and torch, lazily, in :func:`atomic_torch_save`); every layer may use it.
"""

from __future__ import annotations

import itertools
import os
import threading
from pathlib import Path
from typing import Any, Callable, Optional, Union

PathLike = Union[str, Path]

_counter = itertools.count()


def temporary_sibling(path: PathLike) -> Path:
    """A hidden, unused name next to ``path``, unique per process, thread and call."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}-{next(_counter)}.tmp")


def atomic_write(path: PathLike, write: Callable[[Path], None]) -> Path:
    """Create or replace ``path`` atomically with what ``write(temporary_path)`` writes.

    Parameters
    ----------
    path:
        The target file; its folder must exist.
    write:
        Called once with a temporary sibling path, which it must create and fill (for example
        ``torch.save(obj, tmp)`` or opening it for writing).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    Exception
        Whatever ``write`` or ``os.replace`` raises; the temporary file is removed first and
        ``path`` keeps its previous content (or stays absent).
    """
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Atomically make ``data`` the content of ``path``."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: PathLike, text: str, *, encoding: str = "utf-8") -> Path:
    """Atomically make ``text`` (encoded with ``encoding``, newlines untranslated) the content of ``path``."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    """``torch.save(obj, path)``, atomically."""
    import torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def unwritable_folder(path: PathLike) -> Optional[str]:
    """Why folder ``path`` could not be created or written into, or None if it can.

    Checks the nearest existing ancestor (or ``path`` itself): it must be a folder this process
    may write into.  Nothing is created.
    """
    probe = Path(path).absolute()
    try:
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        if not probe.is_dir():
            return f"{probe} is a file, not a folder"
    except OSError as error:
        return f"{probe} cannot be inspected ({error.strerror or error})"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"no permission to write in {probe}"
    return None
