"""Output folders: one writer at a time, never a half-written folder that looks complete."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Callable

from dedupkit.atomic import fsync_dir
from dedupkit.errors import OutputError
from dedupkit.manifest import MANIFEST_DIR, SUMMARY
from dedupkit.ownership import LOCK, RECORD, Claim, is_output_folder, read_json, write_error

WORK = ".work"
WORK_TRASH = ".work.trash"
MANIFEST_TMP = ".manifest.tmp"
MANIFEST_OLD = ".manifest.old"
ANALYSIS = "analysis.json"
SPANS = "spans"  # = dedupkit.spans.SPANS_DIR (not imported: pyarrow)
SPANS_OLD = ".spans.old"
RUN_STATE = "pipeline.json"  # a `dedupkit run` folder's record of what produced each stage folder
_STAGE_DIR = re.compile(r"^\d{2}-[A-Za-z0-9_]+$")  # a `dedupkit run` folder's stage folders: 01-exact, ...
_PART = re.compile(r"^part-\d{5,}\.parquet$")


class OutputDir(Claim):
    """An output folder held for one stage run (see :class:`RunDir` for a ``dedupkit run`` folder).

    On entry: refuses a folder with other files unless it already holds a dedupkit run, a folder
    holding a finished run unless ``overwrite``, and a second run on the same folder (an exclusive
    lock); nothing is created or deleted before these checks pass. A folder with an interrupted
    run's work files is resumed. Files dedupkit did not write are never deleted.

    ``overwrite`` deletes nothing up front: the new run works beside the old finished one, and
    :meth:`finish` swaps the new manifest in only when it is complete, so a run that fails (a
    mistyped column) leaves the old run as it was.
    """

    kind = "stage"
    names = frozenset({LOCK, RECORD, WORK, WORK_TRASH, SUMMARY, MANIFEST_DIR, MANIFEST_TMP, MANIFEST_OLD, ANALYSIS,
                       SPANS, SPANS_OLD})
    """The top-level names this kind of folder holds."""
    temporaries = (SUMMARY + ".tmp", "." + ANALYSIS + ".tmp")
    """Prefixes of the temporary files a write leaves when killed (see :func:`dedupkit.atomic.temp_name`)."""

    def __init__(self, path: str | os.PathLike, overwrite: bool = False, allowed: tuple[str, ...] = ()):
        super().__init__(path)
        self.overwrite = overwrite
        self.allowed = set(allowed)

    @property
    def work(self) -> Path:
        return self.path / WORK

    def ours(self, name: str) -> bool:
        return name in self.names or name in self.allowed or name.startswith(self.temporaries)

    def check(self, entries: set[str], locked: bool) -> None:
        super().check(entries, locked)
        if SUMMARY in entries and not self.overwrite:
            raise OutputError(
                f"{self.path} already holds a finished run; pass --overwrite to replace it, or "
                "choose another -o"
            )
        for name in (MANIFEST_DIR, SPANS):
            folder = self.path / name
            if name in entries and folder.is_dir() and not folder.is_symlink():
                foreign = sorted(p.name for p in folder.iterdir() if not _PART.match(p.name) or p.is_dir())
                if foreign:
                    raise OutputError(
                        f"{folder} holds files dedupkit did not write ({', '.join(foreign[:3])}); they are never "
                        "deleted: move them away, or choose another -o")
            elif name in entries:
                raise OutputError(f"{folder} is not a folder dedupkit wrote; move it away or choose another -o")

    def prepare(self) -> None:
        self._remove_stale_temporaries()
        self.create(WORK).mkdir(exist_ok=True)

    def _remove_stale_temporaries(self) -> None:
        """Remove what a killed run left half-written (we hold the lock, so nobody else writes).

        ``summary.json.tmp<pid>`` and ``.manifest.tmp`` never look complete, but without this they
        would stay in the folder forever after the rerun finishes. The scan files under ``.work``
        are kept: the rerun reuses the finished ones and removes the folder when it succeeds.
        """
        for p in self.path.iterdir():
            if p.name.startswith(self.temporaries):
                p.unlink(missing_ok=True)
            elif p.name in (MANIFEST_TMP, WORK_TRASH):
                shutil.rmtree(p, ignore_errors=True)
            elif p.name in (MANIFEST_OLD, SPANS_OLD):
                _remove_manifest(p)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc is not None:
                # A failed run keeps its finished scan tasks (a rerun resumes from them) but never
                # a half-written manifest.
                shutil.rmtree(self.path / MANIFEST_TMP, ignore_errors=True)
        finally:
            super().__exit__(exc_type, exc, tb)
        if isinstance(exc, OSError):  # disk full: a clear error, not a traceback
            raise write_error(exc, self.path) from exc

    def manifest_tmp(self) -> Path:
        """A new, empty ``.manifest.tmp`` to write the new manifest's parts into (see :meth:`finish`)."""
        return fresh_folder(self.path / MANIFEST_TMP)

    def finish(self, tmp_manifest: Path, write_summary, keep_work: bool = False, spans: Path | None = None) -> None:
        """Swap the new manifest in, remove the work files, then write the summary.

        Nothing of an old finished run is touched before this point. Its summary goes first (the
        folder then looks unfinished), its manifest is renamed aside and its part files deleted,
        the new manifest renamed into place. The summary is the completion mark, so it comes last:
        a run killed at any point before it leaves a folder that every reader treats as unfinished
        and a rerun completes. Work files go before it (not after) so that a finished folder never
        holds half-deleted leftovers.
        """
        (self.path / SUMMARY).unlink(missing_ok=True)
        (self.path / ANALYSIS).unlink(missing_ok=True)  # an old run's; the new one writes its own
        # A span stage's OUT/spans (span manifests) is swapped the same way; an old run's spans
        # go when the new run has none.
        _swap_parts(self.path, SPANS, SPANS_OLD, spans)
        swap_manifest(self.path, tmp_manifest)
        if not keep_work and self.work.exists():
            # Rename first, in one step: a kill during the deletion must not leave a .work folder
            # whose completion markers point to files already deleted.
            trash = self.path / WORK_TRASH
            os.replace(self.work, trash)
            shutil.rmtree(trash, ignore_errors=True)
        write_summary(self.path)
        fsync_dir(self.path)


class RunDir(OutputDir):
    """The ``dedupkit run`` output folder, held for one run.

    Only a new, an empty or an earlier ``dedupkit run`` folder is used, and nothing in it but
    dedupkit's own names (the stage folders ``NN-name`` among them only when they hold dedupkit
    stage output) is ever touched. A finished run in it is not refused here: ``dedupkit run``
    decides whether it is reused, rerun in part, or refused.
    """

    kind = "run"
    names = frozenset({LOCK, RECORD, RUN_STATE, SUMMARY, MANIFEST_DIR, MANIFEST_TMP, MANIFEST_OLD})
    temporaries = (SUMMARY + ".tmp", RUN_STATE + ".tmp")

    def __init__(self, path: str | os.PathLike):
        super().__init__(path, overwrite=True)

    def ours(self, name: str) -> bool:
        if super().ours(name):
            return True
        return bool(_STAGE_DIR.match(name)) and is_output_folder(self.path / name, kind="stage")

    def check(self, entries: set[str], locked: bool) -> None:
        foreign = sorted(e for e in entries if not self.ours(e))
        if foreign:
            raise OutputError(f"{self.path} already holds other files ({', '.join(foreign[:3])}); `dedupkit run` "
                              "only writes into a new folder or one it wrote before: choose another -o")
        if SUMMARY in entries:
            s = read_json(self.path / SUMMARY)
            if not (isinstance(s, dict) and s.get("pipeline")):
                stage = s.get("stage", "stage") if isinstance(s, dict) else "stage"
                raise OutputError(f"{self.path} holds the output of a single `dedupkit {stage}` "
                                  "run, not of `dedupkit run`; choose another -o")
        Claim.check(self, entries, locked)

    def check_early(self) -> None:
        """Refuse a folder ``dedupkit run`` must not use, before any work (creates nothing)."""
        if self.path.is_symlink() or (self.path.exists() and not self.path.is_dir()):
            raise OutputError(f"{self.path} exists and is not a folder; choose another -o")
        if self.path.exists():
            self.check(self.entries(), locked=False)

    def prepare(self) -> None:
        self._remove_stale_temporaries()
        self.create(RUN_STATE)

    def stage_dirs(self) -> list[Path]:
        """The stage folders (``NN-name``) in the run folder, sorted."""
        return sorted(p for p in self.path.iterdir() if _STAGE_DIR.match(p.name))


def fresh_folder(path: Path) -> Path:
    """Create the folder ``path`` empty (a leftover of a killed run is removed first)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir()
    return path


def swap_manifest(root: Path, tmp_manifest: Path) -> None:
    """Put ``tmp_manifest`` in place as ``root/manifest``; the old one's parts are deleted after.

    Call it only when the summary is gone (the folder looks unfinished). Only part files are
    deleted; anything else in the old manifest folder stays under ``.manifest.old``.
    """
    _swap_parts(root, MANIFEST_DIR, MANIFEST_OLD, tmp_manifest)


def _swap_parts(root: Path, name: str, old_name: str, new: Path | None) -> None:
    """Replace the part folder ``root/name`` by ``new`` (or just remove it when ``new`` is None);
    of the old folder only its ``part-NNNNN.parquet`` files are deleted (and the folder, if that
    left it empty)."""
    swap_folder(new, root / name, root / old_name, _remove_manifest)


def swap_folder(new: Path | None, final: Path, old: Path, remove_old: Callable[[Path], None], *,
                links: bool = False) -> None:
    """Put the finished folder ``new`` in place as ``final`` (``new`` None: just take ``final`` away).

    An existing ``final`` is renamed aside to ``old`` in one step, so ``final`` is always the old or
    the new folder, never a half-deleted one; then ``new`` is renamed in, and ``remove_old(old)``
    deletes what of the old folder is dedupkit's (anything else stays under ``old``). A leftover
    ``old`` of a killed swap is removed the same way first. A symbolic link at ``final`` is moved
    aside (never followed) with ``links``, else left where it is. The parent folder is fsynced.

    Used by every output that is built beside its place and swapped in: a stage's manifest and
    spans, ``apply``'s clean corpus, ``index create --overwrite``.
    """
    if old.exists():
        remove_old(old)
    if (links and final.is_symlink()) or (final.exists() and not final.is_symlink()):
        os.replace(final, old)
    if new is not None:
        os.replace(new, final)
    if old.exists():
        remove_old(old)
    fsync_dir(final.parent)


def discard_output(folder: Path) -> None:
    """Delete a dedupkit stage folder that is no longer wanted: only the names dedupkit writes.

    A folder that does not prove to be dedupkit output is left alone, and so is any other file in
    it (the folder then stays).
    """
    if folder.is_symlink() or not folder.is_dir() or not is_output_folder(folder):
        return
    (folder / SUMMARY).unlink(missing_ok=True)  # unfinished first
    for p in folder.iterdir():
        if p.name == RECORD or p.name == LOCK:
            continue
        if p.name in (MANIFEST_DIR, MANIFEST_OLD, SPANS, SPANS_OLD) and p.is_dir() and not p.is_symlink():
            _remove_manifest(p)
        elif p.name in (WORK, WORK_TRASH, MANIFEST_TMP) and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        elif p.name == ANALYSIS or p.name.startswith(OutputDir.temporaries):
            p.unlink(missing_ok=True)
    (folder / RECORD).unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass


def _remove_manifest(folder: Path) -> None:
    """Delete a manifest folder's part files, then the folder if nothing else is left in it."""
    for p in folder.iterdir():
        if _PART.match(p.name) and not p.is_dir():
            p.unlink()
    try:
        folder.rmdir()
    except OSError:
        pass
