"""Atomic, durable file writes: a crash mid-write leaves the previous file intact, never a torn one.

The content goes to a temporary file ``.{name}.{random}.tmp`` in the destination's folder, is
flushed to disk, and then replaces the destination with :func:`os.replace`, which is atomic on
POSIX and Windows when both paths are on the same file system; the folder is then flushed too,
so that the rename itself survives a power loss. The file is created with the permissions
every other file gets (``0o666`` less the umask).

A process killed during a write (``SIGKILL``, out of memory) leaves its temporary file behind;
:func:`remove_stale_temporaries` deletes those of one destination, e.g. when a run starts.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

_TEMPORARY_SUFFIX = ".tmp"


def _temporary_name(name: str, token: str) -> str:
    return f".{name}.{token}{_TEMPORARY_SUFFIX}"


def _create_temporary(path: Path) -> tuple[int, Path]:
    """A new file beside ``path``, open for writing, with the umask's permissions."""
    while True:
        temporary = path.with_name(_temporary_name(path.name, secrets.token_hex(4)))
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
            return os.open(temporary, flags, 0o666), temporary
        except FileExistsError:
            continue


def _fsync_directory(directory: Path) -> None:
    """Flush a folder's entries (a rename in it) to disk; a no-op where folders cannot be opened."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _atomic_write(path: str | Path, write: Callable[[IO[bytes]], object]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = _create_temporary(path)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """:func:`torch.save` ``obj`` to ``path`` atomically; returns the path."""
    return _atomic_write(path, lambda handle: torch.save(obj, handle))


def atomic_write_text(text: str, path: str | Path) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    return atomic_write_bytes(text.encode("utf-8"), path)


def atomic_write_bytes(data: bytes, path: str | Path) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    return _atomic_write(path, lambda handle: handle.write(data))


def atomic_copy(source: str | Path, path: str | Path) -> Path:
    """Copy the file ``source`` to ``path`` atomically; returns ``path``."""
    with open(source, "rb") as origin:
        return _atomic_write(path, lambda handle: shutil.copyfileobj(origin, handle))


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Delete the temporary files that interrupted atomic writes of ``path`` left behind.

    Only files named as this module names them (``.{name}.{token}.tmp`` beside ``path``, and
    ``.{name}.tmp``, which earlier versions used for ``{stage}_final.pt``) are removed; call it
    when no write of ``path`` is under way, e.g. when a run starts.

    Returns:
        The files removed.
    """
    path = Path(path)
    pattern = re.compile(
        re.escape(f".{path.name}") + r"(\.[A-Za-z0-9_]+)?" + re.escape(_TEMPORARY_SUFFIX)
    )
    if not path.parent.is_dir():
        return []
    removed = []
    for candidate in path.parent.iterdir():
        if pattern.fullmatch(candidate.name) and candidate.is_file():
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed
