"""Reading a finished manifest, validated against its summary before anything uses it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dedupkit.errors import DedupkitError, ManifestError
from dedupkit.manifest import MANIFEST_DIR, PARTS_KEY, SUMMARY, load_summary, output_root
from dedupkit.manifest.write import SCHEMA

_FIX = "rerun the stage with --overwrite to rebuild it"


def _hash_file(path: Path) -> str:
    from dedupkit.io.shards import fingerprint

    try:
        return fingerprint(str(path))
    except DedupkitError as exc:
        raise ManifestError(f"{path}: {exc}; {_FIX}") from exc


def part_records(manifest_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """What a summary records about each manifest part: file name, row count and xxh3-128 checksum.

    A stage calls this on its finished ``manifest/`` folder and stores the list under
    :data:`PARTS_KEY` in ``summary.json``; every reader then refuses a part that is missing, added
    or changed.
    """
    return [part_record(p) for p in _part_files(Path(manifest_dir))]


def part_record(path: str | os.PathLike, rows: int | None = None) -> dict[str, Any]:
    """One part's entry of :func:`part_records` (``rows``: its row count, when the writer knows it)."""
    p = Path(path)
    n = pq.ParquetFile(p).metadata.num_rows if rows is None else int(rows)
    return {"file": p.name, "rows": n, "checksum": _hash_file(p)}


def _part_files(mdir: Path) -> list[Path]:
    """The part files of a manifest folder; any other visible entry is refused."""
    parts = []
    for p in sorted(mdir.iterdir()):
        if p.name.startswith((".", "_")):
            continue  # as pyarrow.dataset: hidden files are not data
        if not (p.name.endswith(".parquet") and p.is_file()):
            raise ManifestError(f"{p}: not a manifest part (a manifest folder holds only .parquet files); "
                                f"remove it, or {_FIX}")
        parts.append(p)
    return parts


class Manifest:
    """A finished, validated manifest: its summary, its shards and its parts.

    Use :func:`open_manifest` to get one; it checks the whole contract before anything is read,
    so every reader (``apply``, ``stats``, ``report``, ``inspect``, ``--skip``, ``index``,
    ``check``) refuses a damaged or tampered manifest in the same way.

    Attributes:
        root: the output folder (``OUT``).
        summary: its ``summary.json``.
        rows: rows per input shard name, as the summary records them.
    """

    def __init__(self, root: Path, summary: dict[str, Any], rows: dict[str, int],
                 part_shards: dict[str, list[Path]],
                 keep_bits: dict[str, list[tuple[int, int, np.ndarray]]] | None = None):
        self.root = root
        self._keep_bits = keep_bits  # None: read from the parts when asked (opened with an engine)
        self.summary = summary
        self.rows = rows
        self._part_shards = part_shards
        self.inputs: dict[str, dict] = {s["name"]: s for s in summary["inputs"]}
        """The summary's record of each input shard, by name."""

    @property
    def shard_names(self) -> list[str]:
        return list(self.rows)

    def shard_table(self, name: str, columns: Sequence[str] | None = None) -> pa.Table:
        """The manifest rows of one input shard, sorted by row (read from its parts only)."""
        if name not in self.rows:
            raise ManifestError(f"{self.root}: shard {name!r} is not in this manifest")
        cols = list(dict.fromkeys(["shard", "row", *columns])) if columns else None
        tables = []
        for p in self._part_shards.get(name, []):
            t = _read_part(p, cols)
            if t.column("shard").null_count or not pc.all(pc.equal(t.column("shard"), name)).as_py():
                t = t.filter(pc.equal(t.column("shard"), name))
            tables.append(t)
        if not tables:
            return _empty(cols)
        t = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
        rows = t.column("row").to_numpy()
        if len(rows) > 1 and not bool(np.all(rows[1:] > rows[:-1])):
            t = t.sort_by("row")
        return t.select(list(columns)) if columns else t

    def keep_mask(self, name: str) -> np.ndarray:
        """Boolean keep flag of every row of shard ``name`` (index = row number)."""
        if name not in self.rows:
            raise ManifestError(f"{self.root}: shard {name!r} is not in this manifest")
        if self._keep_bits is None:
            return keep_flags([str(p) for p in self._part_shards.get(name, [])], name, self.rows[name])
        pieces = sorted(self._keep_bits.get(name, []), key=lambda x: x[0])
        if not pieces:
            return np.zeros(0, dtype=bool)
        return np.concatenate([np.unpackbits(bits, count=n).astype(bool) for _, n, bits in pieces])

    def parts_of(self, name: str) -> list[str]:
        """The part files that hold rows of shard ``name``."""
        return [str(p) for p in self._part_shards.get(name, [])]

    def table(self, columns: Sequence[str] | None = None) -> pa.Table:
        """The whole manifest as one table, sorted by shard (in summary order) and row."""
        tables = [self.shard_table(n, columns) for n in self.rows if self._part_shards.get(n)]
        if not tables:
            parts = _part_files(self.root / MANIFEST_DIR)
            if parts:  # no rows, but the parts know every column (a stage's extras too)
                return _read_part(parts[0], columns).slice(0, 0)
            return _empty(columns)
        return pa.concat_tables(tables, promote_options="permissive")


def _empty(columns: Sequence[str] | None) -> pa.Table:
    schema = SCHEMA if not columns else pa.schema([SCHEMA.field(c) for c in columns if c in SCHEMA.names])
    return schema.empty_table()


def _read_part(path: Path, columns: Sequence[str] | None, check: bool = False) -> pa.Table:
    try:
        pf = pq.ParquetFile(path)
        if check:
            _check_columns(pf.schema_arrow, path)
        return pf.read(columns=list(columns) if columns else None, use_threads=False)
    except ManifestError:
        raise
    except (pa.ArrowInvalid, OSError, ValueError, KeyError) as exc:
        raise ManifestError(f"{path}: manifest part unreadable ({' '.join(str(exc).split())}); {_FIX}") from exc


def open_manifest(path: str | os.PathLike, engine: Any = None) -> Manifest:
    """Open a finished manifest and check it against its summary before anything uses it.

    Checked: the summary is a finished run's (a JSON object listing its input shards and their row
    counts); every part the summary records is present, unchanged (xxh3-128) and no part was
    added; every part is readable and has the core columns with their types; ``keep`` has no
    nulls; each shard's rows are exactly ``0..rows-1``, once each; every shard the manifest names
    is one of the summary's inputs; the kept and total counts match the summary's.

    Args:
        path: ``OUT`` or ``OUT/manifest``.
        engine: an :class:`~dedupkit.engine.Engine` whose tasks check the parts (one task each,
            checksum included); the caller then holds no keep flags: :meth:`Manifest.keep_mask`
            reads them from the parts when asked. None: checked here, keep flags kept (1 bit a row).

    Returns:
        The validated :class:`Manifest`.

    Raises:
        ManifestError: naming the file and what is wrong, and how to fix it (rerun the stage).

    Example:
        >>> import dedupkit
        >>> from dedupkit.manifest.read import open_manifest
        >>> res = dedupkit.exact([str(data)], str(tmp / "exact"))
        >>> open_manifest(res.out).keep_mask(str(data / "a.jsonl")).tolist()
        [True, False, True, True]
    """
    root = output_root(path)
    summary = load_summary(root)
    sp = root / SUMMARY
    rows = _summary_rows(summary, sp)
    mdir = root / MANIFEST_DIR
    try:
        files = _part_files(mdir)
    except OSError as exc:
        raise ManifestError(f"{mdir}: cannot list the manifest ({exc.strerror}); {_FIX}") from exc
    recorded = summary.get(PARTS_KEY)
    if recorded is not None:
        # with an engine, each part's checksum is compared by the task that reads it
        _check_recorded_parts(recorded, files, mdir, sp, hashes=engine is None)
    want = {r["file"]: r.get("checksum") for r in recorded} if recorded is not None else {}
    part_shards: dict[str, list[Path]] = {}
    spans: dict[str, list[tuple[int, int, Path]]] = {}
    keep_bits: dict[str, list[tuple[int, int, np.ndarray]]] | None = {} if engine is None else None
    total = kept = 0
    if engine is None:
        checked = [_check_part(p, rows, sp) for p in files]
    else:
        checked = engine.map(check_part_task, [PartCheck(str(p), str(sp), want.get(p.name)) for p in files],
                             desc="manifest: check parts")
    for p, (n_total, n_kept, pieces) in zip(files, checked):
        total += n_total
        kept += n_kept
        for name, lo, hi, bits in pieces:
            if engine is not None:
                _check_piece(p, name, lo, hi, rows, sp)
            spans.setdefault(name, []).append((lo, hi, p))
            part_shards.setdefault(name, []).append(p)
            if keep_bits is not None:
                # the keep flags, one bit a row, so that apply need not read every part a second time
                keep_bits.setdefault(name, []).append((lo, hi - lo + 1, bits))
    for name, n in rows.items():
        got = sorted(spans.get(name, []))
        expect = 0
        for lo, hi, p in got:
            if lo != expect:
                what = (f"row {lo} appears in two parts ({p.name})" if lo < expect
                        else f"rows {expect}..{lo - 1} are missing")
                raise ManifestError(f"{mdir}: shard {name!r}: {what}; every input row must appear exactly once "
                                    f"(a part was removed or damaged?); {_FIX}")
            expect = hi + 1
        if expect != n:
            raise ManifestError(f"{mdir}: shard {name!r} has {expect} manifest rows, {sp} records {n} "
                                f"(a part was removed or damaged?); {_FIX}")
    counts = summary.get("counts") if isinstance(summary.get("counts"), dict) else {}
    for key, value in (("rows", total), ("kept", kept)):
        if isinstance(counts.get(key), int) and counts[key] != value:
            raise ManifestError(f"{mdir} holds {value} {key} rows but {sp} says {counts[key]} "
                                f"(the manifest or the summary was changed); {_FIX}")
    return Manifest(root, summary, rows, part_shards, keep_bits)


def keep_flags(parts: Sequence[str], name: str, n: int) -> np.ndarray:
    """The keep flag of every row of shard ``name`` (``n`` rows), read from the manifest parts that
    hold it (checked already: :func:`open_manifest`); what an engine task of ``apply`` reads."""
    mask = np.zeros(n, dtype=bool)
    for p in parts:
        t = _read_part(Path(p), ["shard", "row", "keep"])
        shards = t.column("shard")
        if shards.null_count or not pc.all(pc.equal(shards, name)).as_py():
            t = t.filter(pc.equal(shards, name))
        mask[t.column("row").to_numpy()] = np.asarray(t.column("keep").to_numpy(zero_copy_only=False), dtype=bool)
    return mask


@dataclass(frozen=True)
class PartCheck:
    """One manifest part to check (:func:`check_part_task`): its path, the summary's path (for
    messages) and the checksum the summary records (None: not recorded). The summary's rows per
    shard stay with the caller (a task per part would otherwise carry every shard's count)."""

    path: str
    summary_path: str
    checksum: str | None


def check_part_task(task: PartCheck) -> tuple[int, int, list]:
    """:func:`_check_part` as an engine task: the checksum too, and no keep bits sent back."""
    p = Path(task.path)
    if task.checksum is not None:
        _check_checksum(p, task.checksum, task.summary_path)
    return _check_part(p, None, Path(task.summary_path), bits=False)


def _check_piece(p: Path, name: str, lo: int, hi: int, rows: dict[str, int], sp: Path) -> None:
    """A part's rows ``lo..hi`` of shard ``name``: a shard of the run, rows within its count."""
    if name not in rows:
        raise ManifestError(f"{p}: names shard {name!r}, which is not one of the run's inputs in {sp}; {_FIX}")
    if lo < 0 or hi >= rows[name]:
        bad = lo if lo < 0 else hi
        raise ManifestError(f"{p}: row {bad} of shard {name!r} is outside 0..{rows[name] - 1} "
                            f"({rows[name]} rows recorded in {sp}); {_FIX}")


def _check_part(p: Path, rows: dict[str, int] | None, sp: Path, bits: bool = True) -> tuple[int, int, list]:
    """Check one part's columns, keep flags and rows; ``(rows, kept, [(shard, lo, hi, keep bits)])``,
    one piece per shard it holds (its rows ``lo..hi``, without gaps; bits packed, or None).
    ``rows``: the summary's rows per shard (None: the caller checks each piece against them)."""
    pieces: list = []
    t = _read_part(p, ["shard", "row", "keep"], check=True)
    keep = t.column("keep")
    if keep.null_count:
        raise ManifestError(f"{p}: {keep.null_count} row(s) have a null keep (must be true or false); {_FIX}")
    if t.column("shard").null_count or t.column("row").null_count:
        raise ManifestError(f"{p}: a row with a null shard or row number; {_FIX}")
    shards = t.column("shard")
    names = pc.unique(shards).to_pylist()
    for name in names:
        sub = t if len(names) == 1 else t.filter(pc.equal(shards, name))
        r = sub.column("row").to_numpy()
        k = np.asarray(sub.column("keep").to_numpy(zero_copy_only=False), dtype=bool)
        if len(r) > 1 and not bool(np.all(r[1:] > r[:-1])):
            order = np.argsort(r, kind="stable")
            r, k = r[order], k[order]
        lo, hi = int(r[0]), int(r[-1])
        if rows is not None:
            _check_piece(p, name, lo, hi, rows, sp)
        if len(r) > 1 and not bool(np.all(np.diff(r) == 1)):
            dup = int(r[1:][np.diff(r) == 0][0]) if bool(np.any(np.diff(r) == 0)) else None
            what = f"row {dup} appears twice" if dup is not None else "rows are missing"
            raise ManifestError(f"{p}: shard {name!r}: {what}; every input row must appear exactly once; {_FIX}")
        pieces.append((name, lo, hi, np.packbits(k) if bits else None))
    return len(t), int(pc.sum(keep).as_py() or 0), pieces


def _summary_rows(summary: Any, sp: Path) -> dict[str, int]:
    """Rows per input shard from a summary, refusing a summary that is not a finished run's."""
    inputs = summary.get("inputs") if isinstance(summary, dict) else None
    if not isinstance(summary, dict) or summary.get("complete") is not True or not isinstance(inputs, list):
        raise ManifestError(f"{sp} is not the summary of a finished dedupkit run (a JSON object with "
                            f"\"complete\": true and its \"inputs\"); {_FIX}")
    rows: dict[str, int] = {}
    for s in inputs:
        name = s.get("name") if isinstance(s, dict) else None
        n = s.get("rows") if isinstance(s, dict) else None
        if not isinstance(name, str) or not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ManifestError(f"{sp}: an input entry without a shard name and row count ({str(s)[:80]}); {_FIX}")
        if name in rows:
            raise ManifestError(f"{sp}: shard {name!r} is listed twice; {_FIX}")
        rows[name] = n
    return rows


def _check_recorded_parts(recorded: Any, files: list[Path], mdir: Path, sp: Path, hashes: bool = True) -> None:
    if not isinstance(recorded, list) or not all(
            isinstance(r, dict) and isinstance(r.get("file"), str) for r in recorded):
        raise ManifestError(f"{sp}: {PARTS_KEY!r} is not a list of parts; {_FIX}")
    want = {r["file"]: r for r in recorded}
    have = {p.name: p for p in files}
    for name in want:
        if name not in have:
            raise ManifestError(f"{mdir / name}: manifest part missing ({sp} records it); its rows would count "
                                f"as kept; restore it or {_FIX}")
    for name, p in have.items():
        if name not in want:
            raise ManifestError(f"{p}: a manifest part that {sp} does not record; remove it or {_FIX}")
        if hashes:
            _check_checksum(p, want[name].get("checksum"), sp)


def _check_checksum(p: Path, checksum: str | None, sp: str | os.PathLike) -> None:
    """A part's bytes hash to the checksum its summary ``sp`` records."""
    if _hash_file(p) != checksum:
        raise ManifestError(f"{p}: manifest part changed since the run wrote it (checksum differs from the one "
                            f"in {sp}); {_FIX}")


def _check_columns(schema: pa.Schema, p: Path) -> None:
    for c in ("shard", "row", "keep"):
        if c not in schema.names:
            raise ManifestError(f"{p}: no {c!r} column; not a dedupkit manifest part; {_FIX}")
    for c, ok in (("row", pa.types.is_integer), ("keep", pa.types.is_boolean),
                  ("shard", lambda ty: pa.types.is_string(ty) or pa.types.is_large_string(ty)
                   or pa.types.is_dictionary(ty))):
        if not ok(schema.field(c).type):
            raise ManifestError(f"{p}: column {c!r} has type {schema.field(c).type}; {_FIX}")


def read_manifest(path: str | os.PathLike, columns: Sequence[str] | None = None,
                  shard: str | None = None) -> pa.Table:
    """Read a finished, validated manifest as one table (optionally one shard's rows).

    Rows come sorted by shard (summary order) and row.

    Args:
        path: ``OUT`` or ``OUT/manifest``.
        columns: columns to read (default all).
        shard: only rows of this shard name.

    Raises:
        ManifestError: see :func:`open_manifest`.
    """
    m = open_manifest(path)
    if shard is not None:
        return m.shard_table(shard, columns) if shard in m.rows else _empty(columns)
    return m.table(columns)


def load_prior(dirs: Sequence[str], shard_names: Sequence[str]) -> tuple[dict[str, pa.Table], list[dict]]:
    """Rows dropped by earlier stages (``--skip``), per shard name, and those stages' summaries.

    Raises:
        ManifestError: a folder is not a finished run, or does not cover an input shard.
    """
    prior: dict[str, list[pa.Table]] = {}
    summaries = []
    for d in dirs:
        m = open_manifest(d)
        summary = m.summary
        summaries.append({"path": str(m.root), "summary": summary})
        missing = [n for n in shard_names if n not in m.rows]
        if missing:
            raise ManifestError(
                f"--skip {d}: that manifest does not cover input shard {missing[0]!r}"
                f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; run every stage over "
                "the same inputs, named the same way"
            )
        for name in shard_names:
            t = m.shard_table(name)
            t = t.filter(pc.invert(t.column("keep")))
            if len(t):
                prior.setdefault(name, []).append(t)
    out: dict[str, pa.Table] = {}
    for name, tables in prior.items():
        t = pa.concat_tables(tables, promote_options="permissive")
        # A row dropped by several earlier stages keeps the first stage's record.
        rows = t.column("row").to_numpy()
        _, first = np.unique(rows, return_index=True)
        out[name] = t.take(pa.array(np.sort(first)))
    return out, summaries


def check_prior_fingerprints(summaries: list[dict], shards: list[dict]) -> None:
    """Refuse ``--skip`` manifests made from other versions of the input shards."""
    current = {s["name"]: s["fingerprint"] for s in shards}
    for entry in summaries:
        for s in entry["summary"].get("inputs", []):
            fp = current.get(s["name"])
            if fp is not None and s.get("fingerprint") != fp:
                raise ManifestError(
                    f"--skip {entry['path']}: shard {s['name']} changed since that manifest was made "
                    "(fingerprint differs); rerun the earlier stage on the current data"
                )
