"""What dedupkit may write or delete: only what it wrote itself.

Every command that writes (the stages, ``run`` and its ``--clean`` corpus, ``apply -o``,
``report -o``) goes through this module, so the rules live in one place:

- A folder is claimed for one run by :class:`Claim`: an exclusive lock (``.dedupkit.lock``,
  created only after the checks passed and removed when the run ends), a record file
  (``.dedupkit.json``) that marks the folder as dedupkit's output, and, when the run is refused or
  fails for a reason a rerun cannot cure (bad input, bad settings), the removal of everything the
  run created, the folder included: the tree is left as it was.
- Inside a claimed folder only dedupkit's own names are ever deleted (see ``Claim.ours``); other
  files are left alone, and a folder holding other files is only used when it already holds a
  dedupkit run.
- An output never overlaps what the run reads (:func:`check_separate`): ``-o`` that is, contains or
  lies inside a ``--skip``/``--manifest`` folder, or is or contains an input, is refused up front.
- A folder walk treats a folder as dedupkit output only when it holds a record or summary that
  parses as dedupkit's (:func:`is_output_folder`); a stray lock file proves nothing.
- A single output file (``report -o``) replaces an existing file only with ``overwrite`` and only
  when that file carries dedupkit's mark (:func:`check_replace_file`).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Iterable, Sequence

from dedupkit.errors import (
    ConfigError,
    InputError,
    ManifestError,
    MissingExtraError,
    OutputError,
)
from dedupkit.manifest import SUMMARY

LOCK = ".dedupkit.lock"
RECORD = ".dedupkit.json"
APPLY_RECORD = "_dedupkit_apply.json"  # = dedupkit.apply.APPLY_SUMMARY
REPORT_MARK = b'<meta name="generator" content="dedupkit '  # the head of every report page

# Failures that a rerun of the same command cannot cure: the run's work files are worthless, so
# they go, and the tree is left as it was. Anything else (disk full, a killed worker, Ctrl-C)
# keeps them so that the rerun resumes.
# A guardrail abort keeps them: the rerun with a raised --max-drop-rate reuses the scan.
FINAL_FAILURES = (InputError, ConfigError, ManifestError, MissingExtraError)


def read_json(path: Path) -> object:
    """The parsed JSON in ``path``, or None when it is missing, unreadable or not JSON."""
    try:
        with open(path, "rb") as fh:
            return json.loads(fh.read(1 << 24))
    except (OSError, ValueError):
        return None


def is_output_folder(folder: str | os.PathLike, files: Iterable[str] | None = None, kind: str | None = None) -> bool:
    """True when ``folder`` holds dedupkit output (a stage or ``run`` folder, or a clean corpus).

    The proof is a file dedupkit writes that parses as dedupkit's: the claim record, a finished
    run's ``summary.json`` or ``apply``'s record. A lock file alone is no proof (a killed or
    refused run of an older version could leave one in a data folder). ``files`` (the names in the
    folder, when the caller already listed them) saves reading the folder again. ``kind``
    (``"stage"`` or ``"run"``) asks for that kind of output only (a stage never writes into a
    clean corpus or a ``run`` folder, nor ``run`` into a stage's folder).
    """
    folder = Path(folder)
    names = set(files) if files is not None else None

    def has(name: str) -> bool:
        return name in names if names is not None else (folder / name).is_file()

    if has(RECORD):
        rec = read_json(folder / RECORD)
        if isinstance(rec, dict) and rec.get("dedupkit") == "output" and kind in (None, rec.get("kind")):
            return True
    if has(SUMMARY):
        s = read_json(folder / SUMMARY)
        if isinstance(s, dict) and "dedupkit" in s and "stage" in s and (
                kind is None or (kind == "run") == bool(s.get("pipeline"))):
            return True
    if kind is None and has(APPLY_RECORD):
        s = read_json(folder / APPLY_RECORD)
        if isinstance(s, dict) and "shards" in s and "manifests" in s:
            return True
    return False


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_separate(out: str | os.PathLike, reads: Sequence[tuple[str, str | os.PathLike]],
                   contain_ok: bool = False, out_option: str = "-o") -> None:
    """Refuse an output that is, lies inside, or contains a path the run reads.

    Args:
        out: the output path.
        reads: ``(option, path)`` pairs, e.g. ``("--skip", "out/exact")``.
        contain_ok: allow ``out`` inside a read folder (a stage's or apply's output inside the
            input folder is fine: folder walks skip it).
        out_option: how the output was given, for the message (``-o``, ``--clean``).

    Raises:
        OutputError: naming the option and the fix.
    """
    o = Path(os.path.realpath(out))
    for option, p in reads:
        r = Path(os.path.realpath(p))
        if o == r or _within(r, o) or (not contain_ok and _within(o, r)):
            how = "is" if o == r else ("contains" if _within(r, o) else "lies inside")
            raise OutputError(f"{out_option} {out} {how} {option} {p}, which this run reads; writing there "
                              f"could destroy it: choose another {out_option}")


def check_creatable(path: str | os.PathLike, option: str = "-o") -> None:
    """Refuse a path that cannot be created because an ancestor is a file (checked up front, so a
    run does not do its work first and fail at the end)."""
    p = Path(os.path.abspath(path)).parent
    while not p.exists() and p != p.parent:
        if p.is_symlink():
            raise OutputError(f"{option} {path}: {p} is a dangling symbolic link; choose another {option}")
        p = p.parent
    if not p.is_dir():
        raise OutputError(f"{option} {path}: {p} is a file, not a folder; choose another {option}")


def made_dirs(path: Path) -> list[Path]:
    """Create ``path`` and its missing parents; return the folders created, deepest first."""
    missing = []
    p = Path(os.path.abspath(path))
    while not p.exists() and not p.is_symlink():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            pass
    return missing


def remove_made_dirs(dirs: Sequence[Path]) -> None:
    """Remove folders listed by :func:`made_dirs` (deepest first) while they are empty."""
    for d in dirs:
        try:
            d.rmdir()
        except OSError:
            return


class FolderLock:
    """An exclusive lock on ``folder/.dedupkit.lock`` (a :class:`dedupkit.locks.LockFile`), removed
    again on release.

    The lock file names the holder's pid (another run's refusal message shows it). Removing the
    file on release leaves no trace of a finished or refused run (a stale lock file that was there
    before gets its old content back instead).
    """

    def __init__(self, folder: Path, busy: str):
        from dedupkit.locks import LockFile

        self.path = Path(folder) / LOCK
        self.busy = busy
        self.file = LockFile(self.path, remove=True)

    @property
    def old(self) -> str | None:
        return self.file.old

    @old.setter
    def old(self, value: str | None) -> None:
        self.file.old = value

    def acquire(self) -> "FolderLock":
        try:  # never through a link: it could point at anybody's file
            got = self.file.try_acquire(f"pid {os.getpid()}")
        except OSError:
            if self.path.is_symlink():
                raise OutputError(f"{self.path} is a symbolic link; remove it (dedupkit never writes "
                                  "through links)") from None
            raise
        if not got:
            who = (self.file.holder() or "").strip() or "unknown pid"
            raise OutputError(self.busy.format(who=who))
        return self

    def release(self) -> None:
        self.file.release()


class Claim:
    """A folder held by one dedupkit run (a stage's or ``run``'s ``-o``).

    Subclasses say which names are dedupkit's (:meth:`ours`) and what a folder must hold to be
    used (:meth:`check`). On entry the folder is checked before anything is created in it, then
    created if missing, locked, checked again under the lock, and marked with the record file.
    On a refusal, or a failure in :data:`FINAL_FAILURES`, everything this run created is removed
    again (work files, the record, the lock, the folder and the parents it made).
    """

    kind = "output"
    busy = "{path} is being written by another dedupkit run ({who}); wait for it to finish or choose another -o"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._made: list[Path] = []
        self._created: list[Path] = []
        self._lock: FolderLock | None = None
        self._record_made = False

    # -- subclass hooks --------------------------------------------------------------------------
    def ours(self, name: str) -> bool:
        """True for a top-level name in the folder that dedupkit writes."""
        return name in (LOCK, RECORD)

    def check(self, entries: set[str], locked: bool) -> None:
        """Refuse (raise OutputError) a folder this run must not use. Deletes nothing."""
        links = sorted(e for e in entries if self.ours(e) and (self.path / e).is_symlink())
        if links:
            raise OutputError(f"{self.path / links[0]} is a symbolic link where dedupkit keeps its own files; "
                              "dedupkit never writes through links: remove it, or choose another -o")
        foreign = sorted(e for e in entries if not self.ours(e))
        if foreign and not self.is_dedupkit_folder(entries):
            raise OutputError(
                f"{self.path} already holds other files ({', '.join(foreign[:3])}{'...' if len(foreign) > 3 else ''}); "
                "dedupkit only writes into a new, an empty or a dedupkit output folder: choose another -o")
        if not foreign and not self.is_dedupkit_folder(entries) and any(e not in (LOCK,) for e in entries):
            # dedupkit's names without dedupkit's record: not provably ours, so not ours to reuse
            raise OutputError(
                f"{self.path} holds {', '.join(sorted(entries)[:3])} but no dedupkit record ({RECORD}); it was "
                "not written by this version of dedupkit: remove those files or choose another -o")

    def is_dedupkit_folder(self, entries: set[str]) -> bool:
        return is_output_folder(self.path, entries, kind=self.kind)

    # -- entering and leaving --------------------------------------------------------------------
    def entries(self) -> set[str]:
        return {p.name for p in self.path.iterdir()}

    def __enter__(self):
        if self.path.is_symlink() or (self.path.exists() and not self.path.is_dir()):
            what = "a symbolic link" if self.path.is_symlink() else "not a folder"
            raise OutputError(f"{self.path} exists and is {what}; choose another -o")
        try:
            if self.path.exists():
                self.check(self.entries(), locked=False)
            else:
                check_creatable(self.path)
            self._made = made_dirs(self.path)
            self._lock = FolderLock(self.path, self.busy.replace("{path}", str(self.path))).acquire()
            self.check(self.entries() - {LOCK}, locked=True)
            if not (self.path / RECORD).exists():
                self._record_made = True
                (self.path / RECORD).write_text(json.dumps({"dedupkit": "output", "kind": self.kind}) + "\n")
            else:
                self._lock.old = None  # a stale lock in our own folder (a killed run's) goes at the end
            self.prepare()
        except BaseException as exc:
            self._undo(final=True)
            if isinstance(exc, OSError):
                raise write_error(exc, self.path) from exc
            raise
        return self

    def prepare(self) -> None:
        """Work done under the lock before the run starts (subclasses)."""

    def create(self, name: str) -> Path:
        """Note that this run creates ``name`` (removed again if the run is refused or fails)."""
        p = self.path / name
        if not p.exists():
            self._created.append(p)
        return p

    def _undo(self, final: bool) -> None:
        try:
            if final:
                for p in reversed(self._created):
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        p.unlink(missing_ok=True)
                # The record goes only with the rest: a folder still holding dedupkit output (an
                # earlier stage folder, resumable work) must stay recognisable as dedupkit's.
                if self._record_made and self.path.is_dir() and not any(
                        self.ours(e) for e in self.entries() - {RECORD, LOCK}):
                    (self.path / RECORD).unlink(missing_ok=True)
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None
            if final:
                remove_made_dirs(self._made)

    def release(self) -> None:
        """Let go of the folder (the lock), keeping what was written."""
        self._undo(final=False)

    def __exit__(self, exc_type, exc, tb) -> None:
        self._undo(final=isinstance(exc, FINAL_FAILURES))


def check_replace_file(path: str | os.PathLike, overwrite: bool, protected: Sequence[str | os.PathLike] = ()) -> None:
    """May a command write the file ``path`` (``report -o``)?

    A new path is fine, and so is a page dedupkit wrote (it carries :data:`REPORT_MARK`): it is
    regenerated. Any other existing file is replaced only with ``overwrite``, and never one the
    command reads: ``protected`` names those (the run's summaries, manifests and input shards).

    Raises:
        OutputError: saying why and what to do.
    """
    p = Path(path)
    real = os.path.realpath(p)
    for q in protected:
        if real == os.path.realpath(q) or _within(Path(real), Path(os.path.realpath(q))):
            raise OutputError(f"-o {p} is part of {q}, which this command reads; choose another -o")
    if p.is_dir():
        raise OutputError(f"{p} is a folder; pass -o with a file name such as {p / 'report.html'}")
    if not p.exists() and not p.is_symlink():
        return
    if p.is_symlink():
        raise OutputError(f"{p} is a symbolic link; dedupkit does not write through links: choose another -o")
    try:
        with open(p, "rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise OutputError(f"cannot read {p} ({exc.strerror}); choose another -o") from exc
    if REPORT_MARK not in head and not overwrite:
        raise OutputError(f"{p} already exists and was not written by dedupkit report; pass --overwrite to "
                          "replace it, or choose another -o")


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
