"""Output folders: one writer at a time, never a half-written folder that looks complete."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from pathlib import Path

from dedupkit.errors import OutputError
from dedupkit.manifest import MANIFEST_DIR, SUMMARY

LOCK = ".dedupkit.lock"
WORK = ".work"
WORK_TRASH = ".work.trash"
_OURS = {LOCK, WORK, WORK_TRASH, SUMMARY, MANIFEST_DIR, ".manifest.tmp"}


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
        try:
            fh = open(self.path / LOCK, "a+")
        except OSError as exc:
            raise write_error(exc, self.path) from exc
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
            self._remove_stale_temporaries()
            self.work.mkdir(exist_ok=True)
        except OSError as exc:
            self.release()
            raise write_error(exc, self.path) from exc
        except BaseException:
            self.release()
            raise
        return self

    def _remove_stale_temporaries(self) -> None:
        """Remove what a killed run left half-written (we hold the lock, so nobody else writes).

        ``summary.json.tmp<pid>`` and ``.manifest.tmp`` never look complete, but without this they
        would stay in the folder forever after the rerun finishes. The scan files under ``.work``
        are kept: the rerun reuses the finished ones and removes the folder when it succeeds.
        """
        for p in self.path.iterdir():
            if p.name.startswith(SUMMARY + ".tmp"):
                p.unlink(missing_ok=True)
            elif p.name in (".manifest.tmp", WORK_TRASH):
                shutil.rmtree(p, ignore_errors=True)

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

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc is not None:
                # A failed run keeps its finished scan tasks (a rerun resumes from them) but never
                # a half-written manifest.
                shutil.rmtree(self.path / ".manifest.tmp", ignore_errors=True)
        finally:
            self.release()
        if isinstance(exc, OSError):
            raise write_error(exc, self.path) from exc

    def manifest_tmp(self) -> Path:
        tmp = self.path / ".manifest.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        return tmp

    def finish(self, tmp_manifest: Path, write_summary, keep_work: bool = False) -> None:
        """Move the manifest into place, remove the work files, then write the summary.

        The summary is the completion mark, so it comes last: a run killed at any point before it
        leaves a folder that every reader treats as unfinished and a rerun completes. Work files
        go before it (not after) so that a finished folder never holds half-deleted leftovers.
        """
        final = self.path / MANIFEST_DIR
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp_manifest, final)
        _fsync_dir(self.path)
        if not keep_work and self.work.exists():
            # Rename first, in one step: a kill during the deletion must not leave a .work folder
            # whose completion markers point to files already deleted.
            trash = self.path / WORK_TRASH
            os.replace(self.work, trash)
            shutil.rmtree(trash, ignore_errors=True)
        write_summary(self.path)
        _fsync_dir(self.path)


def write_error(exc: OSError, out: Path) -> OutputError:
    """Turn an OS error met while writing ``out`` into an OutputError that says what to do."""
    where = exc.filename or out
    text = str(exc)
    if _disk_full(exc, out):
        return OutputError(
            f"no space left on the device while writing {where}; nothing final was written "
            f"(no {SUMMARY}). Free space and rerun the same command to resume, or delete {out} "
            "and choose an -o on a larger disk"
        )
    if exc.filename and not os.path.abspath(str(exc.filename)).startswith(os.path.abspath(out) + os.sep):
        # Not one of our output files: an input or cache file went missing or became unreadable.
        return OutputError(f"I/O error on {exc.filename} ({exc.strerror or text}); nothing final was "
                           "written; check the file and rerun the same command to resume")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"cannot write {where} ({exc.strerror or text}); choose an -o you can write to")
    return OutputError(
        f"I/O error while writing {where} ({exc.strerror or text}); nothing final was written; "
        "rerun the same command to resume"
    )


def _disk_full(exc: OSError, out: Path) -> bool:
    # Not every writer reports ENOSPC: numpy raises "N requested and M written" for a short
    # write, and some pyarrow errors carry no errno. So also look at the free space left.
    text = str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in text or "quota" in text.lower():
        return True
    if "requested and" in text and "written" in text:
        return True
    try:
        st = os.statvfs(out if os.path.exists(out) else os.path.dirname(os.path.abspath(out)))
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < (1 << 20)


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
