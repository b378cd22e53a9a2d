"""Exclusive locks between processes: the one place dedupkit takes them.

The lock itself is ``filelock``'s native primitive on an open descriptor (``flock`` on POSIX,
``LockFileEx`` on Windows): the operating system drops it when its holder dies, so a killed run
never blocks the next one, and nothing here imports ``fcntl`` (importing dedupkit works on every
platform). :class:`LockFile` adds what dedupkit's writers need around it: the lock file names its
holder (a refused writer says who holds it), and, on request, leaves no trace once released.
"""

from __future__ import annotations

import os
from pathlib import Path


def try_lock(fd: int) -> bool:
    """Take an exclusive lock on the open descriptor ``fd`` if nobody holds one; never waits."""
    from filelock import lock_descriptor

    return lock_descriptor(fd, blocking=False)


def unlock(fd: int) -> None:
    """Release a lock taken by :func:`try_lock` (closing ``fd`` releases it too)."""
    from filelock import unlock_descriptor

    unlock_descriptor(fd)


class LockFile:
    """An exclusive lock on the file ``path``, which holds a line naming the holder.

    Args:
        path: the lock file (created if missing).
        remove: delete the file again on release (a file that was there before gets its old
            content back instead). The file is then never opened through a symbolic link, and its
            inode is checked after locking, so a process that opened it just before the holder
            removed it retries on the new file instead of believing it holds the lock.

    Example:
        >>> from dedupkit.locks import LockFile
        >>> lock = LockFile(tmp / ".lock")
        >>> if lock.try_acquire("pid 123"):
        ...     try:
        ...         print(lock.holder())
        ...     finally:
        ...         lock.release()
        pid 123
    """

    def __init__(self, path: str | os.PathLike, remove: bool = False):
        self.path = Path(path)
        self.remove = remove
        self.fh = None
        self.old: str | None = None

    @property
    def held(self) -> bool:
        return self.fh is not None

    def try_acquire(self, holder: str | None = None) -> bool:
        """Take the lock and write ``holder`` into the file (None: leave it as it is).

        Returns:
            False when another process holds it (:meth:`holder` then says who).

        Raises:
            OSError: the file cannot be opened (with ``remove``: also when it is a symbolic link).
        """
        if self.fh is not None:
            return True
        for _ in range(100):
            existed = self.path.exists()
            flags = os.O_RDWR | os.O_CREAT | (getattr(os, "O_NOFOLLOW", 0) if self.remove else 0)
            fh = open(os.open(self.path, flags, 0o644), "r+")
            try:
                got = try_lock(fh.fileno())
            except BaseException:
                fh.close()
                raise
            if not got:
                fh.close()
                return False
            if self.remove:
                try:
                    same = os.stat(self.path).st_ino == os.fstat(fh.fileno()).st_ino
                except FileNotFoundError:
                    same = False
                if not same:
                    fh.close()  # the holder removed the file while we opened it: lock the new one
                    continue
                self.old = fh.read() if existed else None
            if holder is not None:
                fh.seek(0)
                fh.truncate()
                fh.write(holder)
                fh.flush()
            self.fh = fh
            return True
        return False

    def holder(self) -> str | None:
        """The text the holder wrote into the lock file, if readable."""
        try:
            with open(self.path) as fh:
                return fh.read()
        except OSError:
            return None

    def is_locked(self) -> bool:
        """True while another process holds the lock (taken and dropped at once when free)."""
        if self.fh is not None:
            return False
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return False
        try:
            return not try_lock(fd)
        finally:
            os.close(fd)  # closing drops the lock we may have taken

    def release(self) -> None:
        """Let go; with ``remove``, delete the file (or give a file that was there its old content back)."""
        if self.fh is None:
            return
        try:
            if self.remove:
                if self.old is None:
                    self.path.unlink(missing_ok=True)  # still under the lock: nobody else holds this inode
                else:  # a stale lock file was there before: leave it as it was
                    self.fh.seek(0)
                    self.fh.truncate()
                    self.fh.write(self.old)
                    self.fh.flush()
        finally:
            try:
                unlock(self.fh.fileno())
            finally:
                self.fh.close()
                self.fh = None
