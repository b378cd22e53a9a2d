"""The embedded index: a local folder of immutable, checksummed segments and one generation file.

Layout::

    INDEX/index.json                 format, settings and the list of committed segments (the
                                     generation file; replaced atomically, never edited in place)
    INDEX/segments/seg-000000/       one folder per append, never changed once listed:
        exact_hi.npy exact_lo.npy    uint64 hash halves sorted by (hi, lo, doc)
        exact_doc.npy                int32 segment-local doc number of each sorted hash
        bands_key.npy bands_doc.npy  (bands, n) uint64 keys sorted per band, int32 doc numbers
        docs.parquet                 doc_id and shard of every document, in doc order
    INDEX/.lock                      held (flock) by the one writer; it names the holder

Why sorted NumPy arrays: a lookup is a binary search (``np.searchsorted``) over memory-mapped
files, so checking a drop touches only the pages it needs and peak memory stays far below the
index size; the files are plain ``.npy`` that any tool can read. ``benchmarks/index.py`` measures
size per document, build and check speed.

Why it is safe to read while another process appends: a writer builds a new segment in a
temporary folder, fsyncs it, renames it into place and only then replaces ``index.json``
(``os.replace``, atomic on POSIX): that replace is the commit. A reader reads ``index.json`` once
and opens only the segments it lists, which never change; so it sees the index before or after an
append, never half of one. A writer killed at any point leaves at most an unlisted folder or a
temporary ``index.json.tmp*`` that no reader opens and the next writer removes (under the lock).
Writers take ``INDEX/.lock`` (``flock``: released by the kernel when a writer dies, so a killed
writer never blocks the next one).
Every listed file's size and xxh3-64 checksum is recorded and verified on open, so a truncated or
damaged index is an error, never a silent pass.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from dedupkit.atomic import atomic_open, fsync_dir, fsync_file
from dedupkit.errors import ConfigError
from dedupkit.index.base import (
    BAND_CAP, FORMAT, FORMAT_VERSION, BandMatches, IndexInfo, IndexSettings, IndexStore,
    IndexStoreError, Segment, WriterLock, best_band_matches, holder_record, holder_text,
)
from dedupkit.index.faults import point

GEN_FILE = "index.json"
SEG_DIR = "segments"
LOCK = ".lock"
_FIX = "restore the index folder from a backup, or rebuild it with `dedupkit index create --overwrite`"


def _checksum(path: Path) -> str:
    h = xxhash.xxh3_64()
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(8 << 20)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


def _write_json_atomic(path: Path, data: dict) -> None:
    with atomic_open(path, sync_dir=True) as fh:
        fh.write(json.dumps(data, indent=1).encode())
        fh.flush()
        point("local: new index.json written, not yet in place")


class _Seg:
    """A committed segment opened for lookups (memory-mapped)."""

    def __init__(self, root: Path, entry: dict, settings: IndexSettings):
        self.name = entry["name"]
        self.base = int(entry["base"])
        self.n = int(entry["n"])
        self.dir = root / SEG_DIR / self.name
        self._docs: pa.Table | None = None
        self.exact_hi = self.exact_lo = self.exact_doc = None
        self.bands_key = self.bands_doc = None
        if settings.exact:
            self.exact_hi = self._load("exact_hi.npy", (self.n,))
            self.exact_lo = self._load("exact_lo.npy", (self.n,))
            self.exact_doc = self._load("exact_doc.npy", (self.n,))
        if settings.fuzzy:
            self.bands_key = self._load("bands_key.npy", (settings.bands, self.n))
            self.bands_doc = self._load("bands_doc.npy", (settings.bands, self.n))

    def _load(self, fname: str, shape: tuple[int, ...]) -> np.ndarray:
        path = self.dir / fname
        try:
            arr = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise IndexStoreError(f"{path}: unreadable index file ({exc}); {_FIX}") from exc
        if arr.shape != shape:
            raise IndexStoreError(f"{path}: holds shape {arr.shape}, index.json says {shape}; {_FIX}")
        return arr

    def docs(self) -> pa.Table:
        if self._docs is None:
            path = self.dir / "docs.parquet"
            try:
                t = pq.read_table(path)
            except (OSError, pa.ArrowInvalid) as exc:
                raise IndexStoreError(f"{path}: unreadable ({exc}); {_FIX}") from exc
            if len(t) != self.n:
                raise IndexStoreError(f"{path}: {len(t)} documents, index.json says {self.n}; {_FIX}")
            self._docs = t
        return self._docs


class LocalIndex(IndexStore):
    """An index in a local folder. Open with :meth:`create` or :meth:`open`.

    Example:
        >>> from dedupkit.index.base import IndexSettings
        >>> from dedupkit.index.local import LocalIndex
        >>> idx = LocalIndex.create(tmp / "corpus.idx", IndexSettings(stages=("exact",)))
        >>> idx.count
        0
    """

    kind = "local"

    def __init__(self, root: Path, meta: dict, verify: bool = True):
        self.root = root
        self.location = str(root)
        self.meta = meta
        self.settings = IndexSettings.from_dict(meta["settings"])
        self.segments: list[_Seg] = []
        self._verify = verify
        self._opened: dict[str, _Seg] = {}
        self._load_segments(meta)

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike, settings: IndexSettings, overwrite: bool = False) -> "LocalIndex":
        """Create an empty index folder (``overwrite`` replaces an existing index)."""
        root = Path(path)
        if root.exists() and not root.is_dir():
            raise IndexStoreError(f"{root} exists and is not a folder; choose another index path")
        if root.exists() and any(root.iterdir()):
            if not (root / GEN_FILE).exists():
                raise IndexStoreError(f"{root} holds other files and is not a dedupkit index; choose another path")
            if not overwrite:
                raise IndexStoreError(f"{root} already holds an index; use `dedupkit index add` to grow it, "
                                      "or pass --overwrite to replace it")
            with _Lock(root, "dedupkit index create --overwrite"):
                # Make the old index unreadable first (no index.json), then remove its segments.
                os.remove(root / GEN_FILE)
                shutil.rmtree(root / SEG_DIR, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
        (root / SEG_DIR).mkdir(exist_ok=True)
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "settings": settings.to_dict(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "generation": 0, "count": 0, "segments": []}
        with _Lock(root, "dedupkit index create"):
            _write_json_atomic(root / GEN_FILE, meta)
        return cls(root, meta)

    @classmethod
    def open(cls, path: str | os.PathLike, verify: bool = True) -> "LocalIndex":
        """Open the current generation of an index folder.

        Raises:
            IndexStoreError: missing, not an index, other format, truncated or damaged files.
        """
        root = Path(path)
        gen = root / GEN_FILE
        if not root.exists():
            raise IndexStoreError(f"{root}: no such index; create it with `dedupkit index create {root} --from DATA`")
        if not gen.exists():
            raise IndexStoreError(
                f"{root} is not a dedupkit index (no {GEN_FILE}); create it with "
                f"`dedupkit index create {root} --from DATA`, or check the path")
        try:
            meta = json.loads(gen.read_text())
        except ValueError as exc:
            raise IndexStoreError(f"{gen}: not valid JSON ({exc}); {_FIX}") from exc
        cls._check_meta(meta, gen)
        return cls(root, meta, verify=verify)

    def _read_meta(self) -> dict:
        gen = self.root / GEN_FILE
        try:
            meta = json.loads(gen.read_text())
        except FileNotFoundError:
            raise IndexStoreError(f"{self.root}: the index was removed while open") from None
        except ValueError as exc:
            raise IndexStoreError(f"{gen}: not valid JSON ({exc}); {_FIX}") from exc
        self._check_meta(meta, gen)
        if IndexSettings.from_dict(meta["settings"]) != self.settings:
            raise IndexStoreError(f"{self.root}: the index was recreated with other settings while open")
        return meta

    @staticmethod
    def _check_meta(meta: dict, where) -> None:
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise IndexStoreError(f"{where}: not a dedupkit index file; {_FIX}")
        if meta.get("version") != FORMAT_VERSION:
            raise IndexStoreError(
                f"{where}: index format version {meta.get('version')}, this dedupkit reads version "
                f"{FORMAT_VERSION}; rebuild the index with this dedupkit (`dedupkit index create --overwrite`)")
        for k in ("settings", "segments", "count"):
            if k not in meta:
                raise IndexStoreError(f"{where}: missing {k!r}; {_FIX}")

    def _load_segments(self, meta: dict) -> None:
        segs = []
        expect_base = 0
        for entry in meta["segments"]:
            if int(entry["base"]) != expect_base:
                raise IndexStoreError(f"{self.root / GEN_FILE}: segment {entry['name']} starts at doc "
                                      f"{entry['base']}, expected {expect_base}; {_FIX}")
            if entry["name"] in self._opened:  # verified when first opened; segments never change
                segs.append(self._opened[entry["name"]])
                expect_base += int(entry["n"])
                continue
            d = self.root / SEG_DIR / entry["name"]
            for fname, want in entry["files"].items():
                path = d / fname
                if not path.exists():
                    raise IndexStoreError(f"{path}: missing index file (segment {entry['name']}); {_FIX}")
                size = path.stat().st_size
                if size != want["size"]:
                    raise IndexStoreError(
                        f"{path}: {size} bytes, the index recorded {want['size']} (truncated or "
                        f"overwritten); {_FIX}")
                if self._verify and _checksum(path) != want["xxh3_64"]:
                    raise IndexStoreError(f"{path}: checksum mismatch (the file was changed or damaged); {_FIX}")
            segs.append(_Seg(self.root, entry, self.settings))
            self._opened[entry["name"]] = segs[-1]
            expect_base += int(entry["n"])
        if expect_base != int(meta["count"]):
            raise IndexStoreError(f"{self.root / GEN_FILE}: count {meta['count']} differs from the segments' "
                                  f"{expect_base} documents; {_FIX}")
        self.segments = segs
        self._count = expect_base

    @property
    def count(self) -> int:
        return self._count

    # -- writers ------------------------------------------------------------------------------
    def _make_lock(self) -> WriterLock:
        return _Lock(self.root, self._command)

    def _leftovers(self, meta: dict | None = None) -> list[Path]:
        """What interrupted writers left: unlisted segment folders and temporary index.json files."""
        listed = {e["name"] for e in (meta or self.meta)["segments"]}
        seg_root = self.root / SEG_DIR
        out = [p for p in seg_root.iterdir() if p.name not in listed] if seg_root.is_dir() else []
        return out + sorted(self.root.glob(GEN_FILE + ".tmp*"))

    def _recover(self) -> None:
        self.meta = self._read_meta()
        for p in self._leftovers():  # never listed, never read: remove (we hold the lock)
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        point("writer: recovered")

    def refresh(self) -> None:
        self.meta = self._read_meta()
        self._load_segments(self.meta)

    def commits(self) -> list[dict]:
        return [{"base": int(e["base"]), "n": int(e["n"]), "key": e.get("key"), "name": e["name"]}
                for e in self.meta["segments"]]

    def view_before(self, commit: dict) -> None:
        self.segments = [s for s in self.segments if s.base < int(commit["base"])]
        self._count = int(commit["base"])

    def discard(self) -> None:
        with _Lock(self.root, "dedupkit index create (cleaning up)"):
            (self.root / GEN_FILE).unlink(missing_ok=True)  # unreadable first, then the rest
            shutil.rmtree(self.root / SEG_DIR, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- appending ----------------------------------------------------------------------------
    def _append(self, segment: Segment, key: str | None) -> int:
        # The latest generation (we hold the lock, so nobody else changes it meanwhile).
        self.refresh()
        meta = self.meta
        base = int(meta["count"])
        if len(segment) == 0:
            return base
        gen = int(meta["generation"]) + 1
        name = f"seg-{gen:06d}"
        seg_root = self.root / SEG_DIR
        seg_root.mkdir(exist_ok=True)
        tmp = seg_root / f".tmp-{name}-{os.getpid()}"
        tmp.mkdir()
        point("local: temporary segment folder made")
        try:
            files = self._write_segment(tmp, segment)
            os.replace(tmp, seg_root / name)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_dir(seg_root)
        point("local: segment folder in place, not yet listed")
        entry = {"name": name, "base": base, "n": len(segment), "files": files}
        if key is not None:
            entry["key"] = key
        meta = {**meta, "segments": meta["segments"] + [entry], "generation": gen,
                "count": base + len(segment), "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        _write_json_atomic(self.root / GEN_FILE, meta)  # the commit
        point("local: committed")
        self.meta = meta
        self._load_segments(meta)
        return base

    def _write_segment(self, d: Path, seg: Segment) -> dict:
        n = len(seg)
        arrays: dict[str, np.ndarray] = {}
        local = np.arange(n, dtype=np.int32)
        if self.settings.exact:
            h = np.ascontiguousarray(seg.exact, dtype=np.uint64)
            order = np.lexsort((local, h[:, 1], h[:, 0]))  # by hi, then lo, then doc number
            arrays["exact_hi"] = h[order, 0].copy()
            arrays["exact_lo"] = h[order, 1].copy()
            arrays["exact_doc"] = local[order]
        if self.settings.fuzzy:
            k = np.ascontiguousarray(seg.bands, dtype=np.uint64)
            keys = np.empty((k.shape[1], n), np.uint64)
            docs = np.empty((k.shape[1], n), np.int32)
            for j in range(k.shape[1]):
                order = np.argsort(k[:, j], kind="stable")  # stable: equal keys stay in doc order
                keys[j] = k[order, j]
                docs[j] = order
            arrays["bands_key"], arrays["bands_doc"] = keys, docs
        for name, arr in arrays.items():
            np.save(d / f"{name}.npy", arr)
            point(f"local: {name}.npy written")
        names = pa.array(seg.shard_names, pa.string())
        shard_col = pa.DictionaryArray.from_arrays(pa.array(seg.shard_index, pa.int32()), names)
        pq.write_table(pa.table({"doc_id": pa.array(seg.doc_ids, pa.string()), "shard": shard_col}),
                       d / "docs.parquet", compression="zstd")
        point("local: docs.parquet written")
        files = {}
        for p in sorted(d.iterdir()):
            fsync_file(p)
            files[p.name] = {"size": p.stat().st_size, "xxh3_64": _checksum(p)}
        fsync_dir(d)
        point("local: segment files synced")
        return files

    # -- lookups ------------------------------------------------------------------------------
    def lookup_exact(self, hashes: np.ndarray) -> np.ndarray:
        if not self.settings.exact:
            raise ConfigError(f"{self.root}: this index holds no exact hashes (stages: "
                              f"{','.join(self.settings.stages)})")
        hashes = np.asarray(hashes, np.uint64).reshape(-1, 2)
        out = np.full(len(hashes), -1, dtype=np.int64)
        qhi, qlo = hashes[:, 0], hashes[:, 1]
        for s in self.segments:
            todo = np.flatnonzero(out < 0)
            if len(todo) == 0 or s.n == 0:
                continue
            left = np.searchsorted(s.exact_hi, qhi[todo], "left")
            right = np.searchsorted(s.exact_hi, qhi[todo], "right")
            width = right - left
            one = width == 1
            pos = left[one]
            ok = s.exact_lo[pos] == qlo[todo][one]
            out[todo[one][ok]] = s.base + s.exact_doc[pos[ok]].astype(np.int64)
            for i in np.flatnonzero(width > 1):  # equal hi halves: indexed copies (or a 2^-64 collision)
                lo = np.asarray(s.exact_lo[left[i]:right[i]])
                hit = np.flatnonzero(lo == qlo[todo[i]])
                if len(hit):
                    out[todo[i]] = s.base + int(s.exact_doc[left[i] + hit[0]])
        return out

    def lookup_bands(self, keys: np.ndarray) -> BandMatches:
        if not self.settings.fuzzy:
            raise ConfigError(f"{self.root}: this index holds no MinHash band keys (stages: "
                              f"{','.join(self.settings.stages)})")
        keys = np.asarray(keys, np.uint64)
        n, b = keys.shape
        if b != self.settings.bands:
            raise ConfigError(f"got {b} band keys per document, the index has {self.settings.bands}")
        qs, ds = [], []
        for s in self.segments:
            if s.n == 0:
                continue
            for j in range(b):
                col = s.bands_key[j]
                left = np.searchsorted(col, keys[:, j], "left")
                right = np.searchsorted(col, keys[:, j], "right")
                cnt = np.minimum(right - left, BAND_CAP)
                hit = np.flatnonzero(cnt)
                if len(hit) == 0:
                    continue
                c = cnt[hit]
                q = np.repeat(hit, c)
                starts = np.repeat(left[hit], c)
                within = np.arange(len(q)) - np.repeat(np.cumsum(c) - c, c)
                qs.append(q)
                ds.append(s.base + s.bands_doc[j][starts + within].astype(np.int64))
        if not qs:
            return best_band_matches(n, np.zeros(0, np.int64), np.zeros(0, np.int64))
        return best_band_matches(n, np.concatenate(qs), np.concatenate(ds))

    def resolve(self, docs: np.ndarray) -> tuple[list[str], list[str]]:
        docs = np.asarray(docs, np.int64)
        ids: list[str | None] = [None] * len(docs)
        shards: list[str | None] = [None] * len(docs)
        bases = np.array([s.base for s in self.segments], np.int64)
        seg_of = np.searchsorted(bases, docs, "right") - 1
        if len(docs) and (docs.min() < 0 or docs.max() >= self.count):
            raise ValueError("doc number out of range")
        for si in np.unique(seg_of):
            s = self.segments[si]
            where = np.flatnonzero(seg_of == si)
            t = s.docs().take(pa.array(docs[where] - s.base))
            for w, d, sh in zip(where, t.column("doc_id").to_pylist(), t.column("shard").to_pylist()):
                ids[w], shards[w] = d, sh
        return ids, shards  # type: ignore[return-value]

    def info(self) -> IndexInfo:
        size = sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())
        shards: set[str] = set()
        for s in self.segments:
            shards.update(pq.read_table(s.dir / "docs.parquet", columns=["shard"]).column("shard")
                          .combine_chunks().dictionary.to_pylist())
        nfiles = sum(len(e["files"]) for e in self.meta["segments"])
        leftovers = [str(p.relative_to(self.root)) for p in self._leftovers(self._read_meta())]
        holder = _Lock(self.root).probe()
        return IndexInfo(location=self.location, kind=self.kind, settings=self.settings, documents=self.count,
                         segments=len(self.segments), bytes=size, shards=len(shards),
                         extra={"generation": self.meta.get("generation"), "created": self.meta.get("created"),
                                "updated": self.meta.get("updated"),
                                "verified": (f"index.json and the sizes{' and checksums' if self._verify else ''} "
                                             f"of all {nfiles} files of {len(self.segments)} segments"),
                                "writer": holder_text(holder) if holder is not False else None,
                                "leftovers": leftovers})


class _Lock(WriterLock):
    """Exclusive writer lock on INDEX/.lock (a :class:`dedupkit.locks.LockFile`), which names the holder.

    The operating system releases it when its holder dies, so a killed writer never blocks the next.
    """

    def __init__(self, root: Path, command: str = "dedupkit"):
        from dedupkit.locks import LockFile

        self.root = root
        self.what = f"index {root}"
        self.command = command
        self.file = LockFile(root / LOCK)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()

    def try_acquire(self) -> bool:
        return self.file.try_acquire(json.dumps(holder_record(self.command)))

    def holder(self) -> dict | None:
        try:
            return json.loads(self.file.holder() or "")
        except ValueError:
            return None

    def probe(self):
        """The holder's record while a writer holds the lock, else False (never blocks a writer long)."""
        if not self.file.is_locked():
            return False
        return self.holder() or {}

    def release(self) -> None:
        self.file.release()
