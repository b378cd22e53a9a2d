"""Output folders: one writer at a time, never a half-written folder that looks complete."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

from dedupkit.errors import OutputError
from dedupkit.manifest import MANIFEST_DIR, SUMMARY

LOCK = ".dedupkit.lock"
WORK = ".work"
_OURS = {LOCK, WORK, SUMMARY, MANIFEST_DIR, ".manifest.tmp"}


class OutputDir:
    """An output folder held for one run.

    On entry: takes an exclusive lock (a second run on the same folder fails at once with a clear
    message), refuses a folder that holds a finished run unless ``overwrite``, and refuses a folder
    with foreign files. A folder with only an interrupted run's work files is resumed.

    Use :meth:`finish` to move the finished manifest into place and write the summary last.
    """

    def __init__(self, path: str | os.PathLike, overwrite: bool = False, allowed: tuple[str, ...] = ()):
        self.path = Path(path)
        self.overwrite = overwrite
        self.allowed = set(allowed)
        self._lock_fh = None

    @property
    def work(self) -> Path:
        return self.path / WORK

    def __enter__(self) -> "OutputDir":
        if self.path.exists() and not self.path.is_dir():
            raise OutputError(f"{self.path} exists and is not a folder; choose another -o")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create output folder {self.path} ({exc.strerror})") from exc
        fh = open(self.path / LOCK, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            who = fh.read().strip() or "unknown pid"
            fh.close()
            raise OutputError(
                f"{self.path} is being written by another dedupkit run ({who}); wait for it to finish "
                "or choose another -o"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        self._lock_fh = fh
        try:
            self._check_contents()
        except BaseException:
            self.release()
            raise
        self.work.mkdir(exist_ok=True)
        return self

    def _check_contents(self) -> None:
        entries = {p.name for p in self.path.iterdir()}
        foreign = sorted(e for e in entries - _OURS - self.allowed if not e.startswith(SUMMARY + ".tmp"))
        if foreign and not (SUMMARY in entries):
            raise OutputError(
                f"{self.path} already holds other files ({', '.join(foreign[:3])}...); dedupkit only "
                "writes into a new or a dedupkit output folder: choose another -o"
            )
        if SUMMARY in entries:
            if not self.overwrite:
                raise OutputError(
                    f"{self.path} already holds a finished run; pass --overwrite to replace it, or "
                    "choose another -o"
                )
            # Make the old run look unfinished first, then remove it.
            os.remove(self.path / SUMMARY)
            for e in entries - {LOCK, SUMMARY}:
                p = self.path / e
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()

    def release(self) -> None:
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    def __exit__(self, *exc) -> None:
        self.release()

    def manifest_tmp(self) -> Path:
        tmp = self.path / ".manifest.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        return tmp

    def finish(self, tmp_manifest: Path, write_summary, keep_work: bool = False) -> None:
        """Move the manifest into place, then write the summary (the completion mark)."""
        final = self.path / MANIFEST_DIR
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp_manifest, final)
        _fsync_dir(self.path)
        write_summary(self.path)
        _fsync_dir(self.path)
        if not keep_work and self.work.exists():
            shutil.rmtree(self.work, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
