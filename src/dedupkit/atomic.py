"""Atomic file writes: a file appears complete under its final name, or not at all.

Every file dedupkit writes that a reader (or a rerun) could take for finished goes through
:func:`atomic_open` (or :func:`atomic_write`): it is written under a temporary name beside its final one and renamed into
place (``os.replace``, atomic on POSIX and Windows) only when complete. A write that fails (disk
full, Ctrl-C) removes its temporary file; a process killed half-way leaves one whose name starts
with ``NAME.tmp`` (see :func:`temp_name`), which never looks complete and which the folder's
next writer removes.

All file-system calls for these writes live here and callers only see a file object, so that one
place decides how a file is put in place (the seam for writing through another file system: an
object store's upload appears whole at close, with no rename).
"""

from __future__ import annotations

import errno
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator


def temp_name(path: str | os.PathLike, hidden: bool = False) -> Path:
    """The temporary name :func:`atomic_open` writes ``path`` under.

    ``NAME.tmp<pid>.<thread>`` beside ``path`` (unique per process and thread, so two writers never
    share one), with a leading dot when ``hidden`` (a page or file a folder listing should not
    show).
    """
    p = Path(path)
    return p.with_name(f"{'.' if hidden else ''}{p.name}.tmp{os.getpid()}.{threading.get_ident()}")


@contextmanager
def atomic_open(path: str | os.PathLike, *, hidden: bool = False, sync: bool = True,
                sync_dir: bool = False) -> Iterator[BinaryIO]:
    """Yield a binary file to write; when the block ends without an error it appears as ``path``.

    The file is written under :func:`temp_name` beside ``path`` and renamed into place in one step;
    an error (or Ctrl-C) in the block removes it and leaves ``path`` as it was.

    Args:
        path: the final file.
        hidden: give the temporary file a leading dot.
        sync: fsync the file before the rename (it survives a power cut once renamed).
        sync_dir: also fsync the folder after the rename (the rename itself survives it).

    Example:
        >>> from dedupkit.atomic import atomic_open
        >>> with atomic_open(tmp / "hello.txt") as fh:
        ...     _ = fh.write(b"hello")
        >>> (tmp / "hello.txt").read_bytes()
        b'hello'
    """
    final = Path(path)
    tmp = temp_name(final, hidden)
    try:
        with open(tmp, "wb") as fh:
            yield fh
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
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
    """Write ``data`` (text is UTF-8 encoded) to ``path`` atomically; ``options`` as :func:`atomic_open`."""
    with atomic_open(path, **options) as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)


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
