"""Atomic file writes: a file appears complete under its final name, or not at all.

Every file dedupkit writes that a reader (or a rerun) could take for finished goes through
:func:`atomic_path`: it is written under a temporary name beside its final one and renamed into
place (``os.replace``, atomic on POSIX and Windows) only when complete. A write that fails (disk
full, Ctrl-C) removes its temporary file; a process killed half-way leaves one whose name starts
with ``NAME.tmp`` (see :func:`temp_name`), which never looks complete and which the folder's
next writer removes.

All file-system calls for these writes live here, so that one place decides how a file is put in
place (the hook for writing through another file system later).
"""

from __future__ import annotations

import errno
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def temp_name(path: str | os.PathLike, hidden: bool = False, suffix: str = "") -> Path:
    """The temporary name :func:`atomic_path` writes ``path`` under.

    ``NAME.tmp<pid>.<thread>`` beside ``path`` (unique per process and thread, so two writers never
    share one), with a leading dot when ``hidden`` (a page or file a folder listing should not
    show), and ``suffix`` appended (``.npy``: ``numpy.save`` adds it to any other name).
    """
    p = Path(path)
    return p.with_name(f"{'.' if hidden else ''}{p.name}.tmp{os.getpid()}.{threading.get_ident()}{suffix}")


@contextmanager
def atomic_path(path: str | os.PathLike, *, hidden: bool = False, suffix: str = "", sync: bool = True,
                sync_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to ``path`` in one step.

    Args:
        path: the final file.
        hidden: give the temporary file a leading dot.
        suffix: appended to the temporary name (see :func:`temp_name`).
        sync: fsync the file before the rename (it survives a power cut once renamed).
        sync_dir: also fsync the folder after the rename (the rename itself survives it).

    Raises:
        Whatever the write raises; the temporary file is removed first.

    Example:
        >>> with atomic_path(folder / "table.parquet") as tmp:  # doctest: +SKIP
        ...     pyarrow.parquet.write_table(table, tmp)
    """
    final = Path(path)
    tmp = temp_name(final, hidden, suffix)
    try:
        yield tmp
        if sync:
            fsync_file(tmp)
        os.replace(tmp, final)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    if sync_dir:
        fsync_dir(final.parent)


def atomic_write(path: str | os.PathLike, data: bytes | str, **options) -> None:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` atomically; ``options`` as :func:`atomic_path`."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path, **options) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(raw)


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a written file's data to the disk."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename into it) to the disk, where the platform allows it.

    A platform that cannot open folders (Windows) or a file system without folder fsync (EINVAL)
    skips it; any other error is raised.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.EACCES):
            raise
    finally:
        os.close(fd)
