"""The fuzzy stage's per-task functions: the leaf module both global steps run through the engine.

Every function here is a top-level function over a small, picklable task object that names files
under the work folder, so the local process pool and the Ray engine execute the same code. This
module imports nothing of the stage (:mod:`dedupkit.stages.fuzzy.stage`) nor of either global step
(:mod:`~dedupkit.stages.fuzzy.single`, :mod:`~dedupkit.stages.fuzzy.partitioned`); they import it.

1. scan (runner): :class:`FuzzyMapper` writes per scan task ``sig`` (uint32 signature values),
   with ``--verify sets`` also ``wset``/``wsetn`` (every document's distinct word-shingle hashes),
   ``band`` (one uint64 key per LSH band) and ``nsh`` (shingles per document).
2. :func:`bucket_task` per (band, hash partition): sort the band keys, turn every bucket of two or
   more documents into candidate pairs, write them to ``pairs-*.npy``.
3. :func:`verify_task` per chunk of unique candidate pairs: keep the pairs whose similarity reaches
   the threshold of at least one measure, on the signatures or on the true shingle sets (the char
   n-gram sets are recomputed by :func:`shingle_set_task` for candidate documents only). Each kept
   pair carries its score and the measure that decided it (:func:`pack_payload`).
"""

from __future__ import annotations

import io
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np

from dedupkit import kernels
from dedupkit import settings as _S
from dedupkit.atomic import atomic_open
from dedupkit.io.npy import load_npy, npy_header
from dedupkit.io.read import Batch
from dedupkit.minhash import MinHashConfig, band_keys, batch_shingle_hashes, char_shingle_hashes, signatures_from_hashes
from dedupkit.stages.base import Mapper

# Codes of the measure that decided a verified pair (stored beside its score), and their names in
# the manifest's ``measure`` column. Several measures may pass; the first of MEASURE_ORDER that
# does decides (the word measures, on sets the scan kept, then char n-grams, which are computed
# only for the pairs the word measures did not verify: they need the text read again).
MEASURE_NAMES = ("candidate", "jaccard_estimate", "jaccard", "containment", "char")
MEASURE_ORDER = ("jaccard", "containment", "char")
_CODE = {m: i for i, m in enumerate(MEASURE_NAMES)}
# A bucket with up to this many documents yields all its pairs; a bigger one (boilerplate shared by
# many documents) yields a star from its highest-priority member (the document the keep policy
# would keep, so the centre that claims them sees all of them) plus a chain through the others in
# priority order: n-1 + n-2 pairs instead of n(n-1)/2.
ALL_PAIRS_MAX = 16
# Text bytes shingled at once by a scan worker (whole documents; one longer document is one slice).
SLICE_BYTES = 4 * 2**20
# Candidate pairs per in-memory block of a verification task.
PAIRS_PER_BLOCK = 32_768


class FuzzyMapper(Mapper):
    """Signatures (uint32 values), band keys and shingle counts of a batch; with ``word_sets``, also
    every document's distinct word-shingle hashes (top 32 bits, sorted: ``wset``, ``wsetn`` values
    per document) for verification on the true sets without reading the text again."""

    def __init__(self, cfg: MinHashConfig, word_sets: bool = False, signature: bool = True, keep_text: bool = False):
        self.cfg = cfg
        self.bands, self.rows = cfg.resolved()
        self.word_sets = word_sets
        # without ``sig`` (only the signature modes verify with it), only the permutations the
        # bands use are computed
        self.signature = signature
        # the scan keeps a copy of the texts (dedupkit.scan.good_texts) for the char n-gram pass
        self.keep_text = keep_text
        # decoding a Parquet row against shingling and MinHash of it (dedupkit.scan._cuts)
        self.decode_weight = 0.15

    def map_batch(self, batch: Batch) -> dict[str, np.ndarray]:
        import pyarrow.compute as pc

        # Token and shingle arrays take about 60 bytes per token, ~10x the text: work through the
        # batch in slices of at most SLICE_BYTES of text (whole documents) to bound that.
        text = batch.text
        nbytes = np.asarray(pc.fill_null(pc.binary_length(text), 0), dtype=np.int64) if len(text) else \
            np.zeros(0, np.int64)
        ends = np.cumsum(nbytes)
        parts, start = [], 0
        while start < len(text):
            base = ends[start - 1] if start else 0
            stop = max(start + 1, int(np.searchsorted(ends, base + SLICE_BYTES, side="right")))
            parts.append(self._map(text.slice(start, stop - start)))
            start = stop
        if not parts:
            return self.empty()
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _map(self, text) -> dict[str, np.ndarray]:
        hashes, counts = batch_shingle_hashes(text, self.cfg)
        sig = signatures_from_hashes(hashes, counts, self.cfg,
                                     num=None if self.signature else self.bands * self.rows)
        keys = band_keys(sig, self.bands, self.rows)
        out = {"band": keys, "nsh": np.minimum(counts, 2**31 - 1).astype(np.int32)}
        if self.signature:
            # The low 32 bits of each value are enough to estimate Jaccard (a false agreement of
            # two different minima has probability 2**-32) and halve the disk space; legacy values
            # are 32-bit already.
            out["sig"] = sig.astype(np.uint32)
        if self.word_sets:
            # The top 32 bits of a 64-bit shingle hash: two different shingles agree by chance with
            # probability 2**-32, about one spurious shared shingle in 10,000 pairs of 600-shingle
            # documents (a similarity off by 1/600), for half the disk and memory of 64 bits.
            vals, off = sorted_sets(hashes >> np.uint64(32), counts)
            out["wset"] = vals.astype(np.uint32)
            out["wsetn"] = np.diff(off).astype(np.int32)
        return out

    def empty(self) -> dict[str, np.ndarray]:
        out = {"band": np.zeros((0, self.bands), np.uint64), "nsh": np.zeros(0, np.int32)}
        if self.signature:
            out["sig"] = np.zeros((0, self.cfg.num_perm), np.uint32)
        if self.word_sets:
            out["wset"], out["wsetn"] = np.zeros(0, np.uint32), np.zeros(0, np.int32)
        return out


# --- step 2: buckets -> candidate pairs -------------------------------------------------------

@dataclass(frozen=True)
class BandSplitTask:
    """Lay one scan task's band keys out by (band, key partition), read once.

    The scan writes ``(n_t, bands)`` band keys, row by row. Read as it is, every bucket task (one
    per band and key partition) would read the whole file to keep 1/(bands x partitions) of it.
    This task writes, per scan task, ``PREFIX.keys.npy`` and ``PREFIX.idx.npy`` (``(bands, m)``,
    documents with shingles only, each band's row ordered by key partition and, within one, by
    document) and ``PREFIX.bounds.npy`` (``(bands, nparts + 1)``), so a bucket task reads one
    contiguous slice of each: its own partition, nothing else.
    """

    band_path: str  # (n_t, bands) uint64 from the scan
    nsh_path: str
    offset: int  # global index of the scan task's first document
    nparts: int
    prefix: str


def band_split_task(task: BandSplitTask) -> int:
    """Write the partitioned layout of one scan task's band keys (see :class:`BandSplitTask`)."""
    k = np.load(task.band_path)
    ok = np.load(task.nsh_path) > 0  # documents without shingles are never duplicates here
    sel = np.flatnonzero(ok)
    bands = k.shape[1] if k.ndim == 2 else 0
    keys = np.empty((bands, len(sel)), np.uint64)
    idx = np.empty((bands, len(sel)), np.int64)
    bounds = np.zeros((bands, task.nparts + 1), np.int64)
    for b in range(bands):
        col = k[sel, b]
        part = (col % np.uint64(task.nparts)).astype(np.int64) if task.nparts > 1 else np.zeros(len(col), np.int64)
        order = np.argsort(part, kind="stable")  # stable: documents stay ascending within a partition
        keys[b], idx[b] = col[order], sel[order] + task.offset
        bounds[b] = np.searchsorted(part[order], np.arange(task.nparts + 1), side="left")
    for name, arr in (("keys", keys), ("idx", idx), ("bounds", bounds)):
        save_npy(f"{task.prefix}.{name}.npy", arr)
    return int(len(sel))


@dataclass(frozen=True)
class BucketTask:
    band: int
    part: int
    nparts: int
    split_prefixes: tuple[str, ...]  # per scan task: the BandSplitTask's output prefix
    out: str
    rank: str = ""  # .npy of every document's keep-priority rank (0 = kept first); "" = index order
    priority: Any = None  # instead of ``rank``: dedupkit.engine.driver.Priority, ranks of any documents


def bucket_pairs(keys: np.ndarray, idx: np.ndarray, rank: np.ndarray | None = None) -> np.ndarray:
    """Candidate pairs (i < j, int64 (m, 2)) of documents ``idx`` that share a key.

    Buckets of up to ALL_PAIRS_MAX documents give all their pairs; a bigger bucket gives a star from
    its best member by ``rank`` (lowest; default: lowest index) and a chain through the rest in rank
    order, so the document the keep policy would keep is compared with every member.
    """
    if len(keys) < 2:
        return np.zeros((0, 2), np.int64)
    # members of a bucket in priority order (idx is ascending, so index order without rank)
    order = np.lexsort((rank, keys)) if rank is not None else np.argsort(keys, kind="stable")
    ks, ids = keys[order], idx[order]
    starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
    sizes = np.diff(np.r_[starts, len(ks)])
    out = []
    for k in np.unique(sizes[sizes >= 2]).tolist():
        st = starts[sizes == k]
        if k <= ALL_PAIRS_MAX:
            a, b = np.triu_indices(k, 1)
            out.append(np.stack([ids[st[:, None] + a[None, :]].ravel(), ids[st[:, None] + b[None, :]].ravel()], 1))
        else:
            first = np.repeat(ids[st], k - 1)
            members = ids[(st[:, None] + np.arange(1, k)[None, :]).ravel()]
            out.append(np.stack([first, members], 1))
            if k > 2:
                prev = ids[(st[:, None] + np.arange(1, k - 1)[None, :]).ravel()]
                nxt = ids[(st[:, None] + np.arange(2, k)[None, :]).ravel()]
                out.append(np.stack([prev, nxt], 1))
    if not out:
        return np.zeros((0, 2), np.int64)
    return np.sort(np.concatenate(out).astype(np.int64, copy=False), axis=1)


def bucket_task(task: BucketTask) -> dict[str, int]:
    """Candidate pairs of one band (one hash partition of it), saved to ``task.out``.

    Reads only its partition's slice of each scan task's split band keys (:class:`BandSplitTask`);
    returns ``{"pairs", "bytes_read"}``.
    """
    keys, idx = [], []
    read = 0
    for prefix in task.split_prefixes:
        a, b = np.load(f"{prefix}.bounds.npy")[task.band, task.part:task.part + 2]
        if b <= a:
            continue
        keys.append(np.array(np.load(f"{prefix}.keys.npy", mmap_mode="r")[task.band, a:b]))
        idx.append(np.array(np.load(f"{prefix}.idx.npy", mmap_mode="r")[task.band, a:b]))
        read += int(b - a) * 16
    if keys:
        idx_all = np.concatenate(idx)
        if task.priority is not None:
            rank = task.priority.ranks(idx_all)
        else:
            rank = np.asarray(np.load(task.rank, mmap_mode="r")[idx_all]) if task.rank else None
        pairs = bucket_pairs(np.concatenate(keys), idx_all, rank)
    else:
        pairs = np.zeros((0, 2), np.int64)
    if len(pairs):
        pairs = np.unique(pairs, axis=0)
    save_npy(task.out, pairs)
    return {"pairs": int(len(pairs)), "bytes_read": read}


# --- step 3: verification ---------------------------------------------------------------------

class _Gather:
    """Rows of a per-scan-task feature for arbitrary global indices (memory-mapped)."""

    def __init__(self, paths: tuple[str, ...], offsets: tuple[int, ...]):
        self.parts = [load_npy(p) for p in paths]  # no file descriptor held per scan task
        self.offsets = np.asarray(offsets, dtype=np.int64)

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        first = self.parts[0]
        out = np.empty((len(idx),) + first.shape[1:], dtype=first.dtype)
        t = np.searchsorted(self.offsets, idx, side="right") - 1
        for ti in np.unique(t).tolist():
            m = t == ti
            local = idx[m] - self.offsets[ti]
            order = np.argsort(local, kind="stable")  # sorted reads from the memory map
            rows = np.asarray(self.parts[ti][local[order]])
            dest = np.flatnonzero(m)[order]
            out[dest] = rows
        return out


def signature_agreement(sig: _Gather, pairs: np.ndarray) -> np.ndarray:
    """Share of equal signature slots (the Jaccard estimate) of each pair, float32."""
    est = np.empty(len(pairs), dtype=np.float32)
    for s in range(0, len(pairs), PAIRS_PER_BLOCK):
        p = pairs[s:s + PAIRS_PER_BLOCK]
        a, b = sig(p[:, 0]), sig(p[:, 1])
        est[s:s + len(p)] = (a == b).mean(axis=1)
    return est


@dataclass(frozen=True)
class ShingleSetTask:
    """Recompute the shingle sets (sorted, distinct hashes) of the candidate documents of one scan
    task: word shingles (``word``) and/or character ``char_ngram``-grams (``char_ngram`` > 0)."""

    scan_task: object  # dedupkit.scan.ScanTask
    offset: int
    wanted: str  # .npy of global indices (sorted) in this scan task
    cfg: MinHashConfig
    out: str  # prefix: .idx.npy, then .word/.char + .off.npy/.hash.npy
    word: bool = True
    char_ngram: int = 0


def sorted_sets(hashes: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per document, the distinct values of its run of ``hashes``, sorted; and the n+1 offsets.

    The C kernel sorts each document's run on its own (a radix sort in cache; a numpy lexsort on
    (document, hash) over a whole batch was 10x slower); the fallback is that lexsort.
    """
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    counts = np.asarray(counts, dtype=np.int64)
    off = np.zeros(len(counts) + 1, np.int64)
    if kernels.speedups is not None:
        np.cumsum(counts, out=off[1:])
        raw, cnt = kernels.speedups.sort_unique_runs(hashes, off, len(counts))
        np.cumsum(np.frombuffer(cnt, np.int64), out=off[1:])
        return np.frombuffer(raw, np.uint64), off
    doc = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    order = np.lexsort((hashes, doc))
    h, d = hashes[order], doc[order]
    keep = np.r_[True, (h[1:] != h[:-1]) | (d[1:] != d[:-1])] if len(h) else np.zeros(0, bool)
    h, d = h[keep], d[keep]
    np.cumsum(np.bincount(d, minlength=len(counts)), out=off[1:])
    return h, off


def shingle_set_task(task: ShingleSetTask) -> int:
    """Write the sets of the wanted documents of one scan task (see :class:`ShingleSetTask`).

    Each text batch's sets go to the hash files as they are made (the .npy header, written first,
    gets the final length at the end): a task never holds more than one batch's sets, where
    gathering them all and concatenating them held each task's char sets twice (~600 MB at 1M
    documents).
    """
    st = task.scan_task
    wanted = np.load(task.wanted) - task.offset
    pos = 0
    kinds = (["word"] if task.word else []) + (["char"] if task.char_ngram else [])
    sizes: dict[str, list[np.ndarray]] = {k: [] for k in kinds}
    count = {k: 0 for k in kinds}
    with ExitStack() as stack:
        files = {k: stack.enter_context(atomic_open(f"{task.out}.{k}.hash.npy", sync=False)) for k in kinds}
        for fh in files.values():
            fh.write(_npy_header(np.uint64, 0))
        for text in st.good_texts():  # the scan's copy of the texts, else the shard read again
            lo, hi = np.searchsorted(wanted, [pos, pos + len(text)])
            if hi > lo:
                texts = text.take(wanted[lo:hi] - pos)
                for kind in kinds:
                    if kind == "word":
                        h, c = batch_shingle_hashes(texts, task.cfg)
                    else:
                        h, c = char_shingle_hashes(texts, task.char_ngram)
                    vals, off = sorted_sets(h, c)
                    files[kind].write(np.ascontiguousarray(vals, np.uint64).data)
                    sizes[kind].append(np.diff(off))
                    count[kind] += len(vals)
            pos += len(text)
        for kind, fh in files.items():
            fh.seek(0)
            fh.write(_npy_header(np.uint64, count[kind]))
    save_npy(task.out + ".idx.npy", wanted + task.offset)
    for kind in kinds:
        off = np.zeros(sum(len(x) for x in sizes[kind]) + 1, np.int64)
        if sizes[kind]:
            np.cumsum(np.concatenate(sizes[kind]), out=off[1:])
        save_npy(f"{task.out}.{kind}.off.npy", off)
    return int(len(wanted))


def _npy_header(dtype, n: int) -> bytes:
    """The .npy (version 1.0) header of a 1-d array of ``n`` items of ``dtype``: 128 bytes for any
    ``n`` below 10**30, so a header written for 0 items can be overwritten with the final one."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                               "fortran_order": False, "shape": (int(n),)})
    out = buf.getvalue()
    if len(out) != 128:  # pragma: no cover - numpy pads its headers to 64 bytes
        raise RuntimeError(f"unexpected .npy header length {len(out)}")
    return out


def _read_runs(path: str, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """The runs ``[starts[i], starts[i] + lens[i])`` of a 1-d .npy file, concatenated.

    With the C kernel, read with pread(2) (runs adjacent in the file in one call): the pages read
    stay in the page cache, out of the process's resident memory. A memory map counts every page it
    touches as resident while it is open, and the kernel's fault-around maps up to 16 neighbouring
    pages per touched set: at 1M documents that made ~0.8 GB of set files resident at once during
    verification. Without the kernel: through a memory map and an index of every position, the map
    closed again on return.
    """
    starts = np.ascontiguousarray(starts, np.int64)
    lens = np.ascontiguousarray(lens, np.int64)
    if kernels.speedups is not None and hasattr(kernels.speedups, "pread_runs"):
        with open(path, "rb") as fh:
            shape, _, dtype, base = npy_header(fh)
            if int(lens.sum()) and int((starts + lens).max()) > (shape[0] if shape else 0):
                raise ValueError(f"{path}: runs out of range")
            raw = kernels.speedups.pread_runs(fh.fileno(), base, dtype.itemsize, starts, lens)
        return np.frombuffer(raw, dtype)
    arr = np.load(path, mmap_mode="r")
    try:
        pos = np.repeat(starts - (np.cumsum(lens) - lens), lens) + np.arange(int(lens.sum()), dtype=np.int64)
        return np.asarray(arr[pos])
    finally:
        mm = getattr(arr, "_mmap", None)
        del arr
        if mm is not None:
            try:
                mm.close()
            except BufferError:  # pragma: no cover - a view still holds it; the GC closes it later
                pass


class _Sets:
    """The shingle sets of one kind (word or char) written by :func:`shingle_set_task`."""

    def __init__(self, prefixes: tuple[str, ...], kind: str):
        self.idx = [np.load(p + ".idx.npy") for p in prefixes]
        self.off = [np.load(f"{p}.{kind}.off.npy") for p in prefixes]
        self.hash_paths = [f"{p}.{kind}.hash.npy" for p in prefixes]
        self.first = np.array([i[0] if len(i) else np.iinfo(np.int64).max for i in self.idx], np.int64)

    def _rows(self, t: int, docs: np.ndarray) -> np.ndarray:
        """The rows of file ``t`` that hold ``docs`` (global indices of that file's documents)."""
        return np.searchsorted(self.idx[t], docs)

    def gather(self, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The sets of ``docs`` (sorted global indices) as one hash array and n+1 offsets."""
        t_of = np.searchsorted(self.first, docs, side="right") - 1
        hashes, lens = [], []
        for t in np.unique(t_of).tolist():
            k = self._rows(t, docs[t_of == t])
            a, b = self.off[t][k], self.off[t][k + 1]
            ln = b - a
            hashes.append(_read_runs(self.hash_paths[t], a, ln).astype(np.uint64, copy=False))
            lens.append(ln)
        off = np.zeros(len(docs) + 1, np.int64)
        if lens:
            np.cumsum(np.concatenate(lens), out=off[1:])
        return (np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)), off


class _ScanSets(_Sets):
    """The word-shingle sets the scan wrote (``wset``/``wsetn`` per scan task): one row per
    document of the task, in order."""

    def __init__(self, set_paths: tuple[str, ...], count_paths: tuple[str, ...], offsets: tuple[int, ...]):
        self.hash_paths = list(set_paths)
        self.off = []
        for p in count_paths:
            c = np.load(p)
            o = np.zeros(len(c) + 1, np.int64)
            np.cumsum(c, out=o[1:])
            self.off.append(o)
        self.first = np.asarray(offsets, np.int64)

    def _rows(self, t: int, docs: np.ndarray) -> np.ndarray:
        return docs - self.first[t]


def set_intersections(hashes: np.ndarray, offsets: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """|A & B| for every pair of set indices (sets: sorted distinct runs of ``hashes``), int64.

    The C kernel merges the two sorted runs; the fallback intersects them with numpy.
    """
    pairs = np.ascontiguousarray(pairs, dtype=np.int64)
    if kernels.speedups is not None:
        raw = kernels.speedups.set_intersections(np.ascontiguousarray(hashes, dtype=np.uint64),
                                                 np.ascontiguousarray(offsets, dtype=np.int64), pairs)
        return np.frombuffer(raw, dtype=np.int64).copy()
    out = np.zeros(len(pairs), np.int64)
    for q, (a, b) in enumerate(pairs.tolist()):
        out[q] = len(np.intersect1d(hashes[offsets[a]:offsets[a + 1]], hashes[offsets[b]:offsets[b + 1]],
                                    assume_unique=True))
    return out


@dataclass(frozen=True)
class VerifyTask:
    pairs: str  # .npy (m, 2) int64
    mode: str  # none | signature | sets
    thresholds: tuple[tuple[str, float], ...]  # (measure, threshold), measures of MEASURES
    sig_paths: tuple[str, ...]
    offsets: tuple[int, ...]
    set_prefixes: tuple[str, ...] = ()  # char sets (shingle_set_task)
    out: str = ""
    containment_min: int = _S.FuzzyConfig.containment_min
    wset_paths: tuple[str, ...] = ()  # word sets written by the scan (FuzzyMapper word_sets)
    wsetn_paths: tuple[str, ...] = ()


# Pairs per block when whole shingle sets are gathered (bounds the sets held at once: a char
# n-gram set is ~8 bytes a character, so 4,096 pairs of 3.5 KB documents hold up to ~200 MB; at
# 8,192 the char pass was a 1M-document run's peak).
SET_PAIRS_PER_BLOCK = 4096


def _set_similarities(task: VerifyTask, pairs: np.ndarray) -> dict[str, np.ndarray]:
    """Every selected measure of every pair on the true shingle sets (float64 arrays)."""
    thr = dict(task.thresholds)
    kinds = [k for k, ms in (("word", ("jaccard", "containment")), ("char", ("char",))) if any(m in thr for m in ms)]
    sims = {m: np.zeros(len(pairs)) for m in thr}
    sets = {k: (_ScanSets(task.wset_paths, task.wsetn_paths, task.offsets) if k == "word"
                else _Sets(task.set_prefixes, k)) for k in kinds}
    for s in range(0, len(pairs), SET_PAIRS_PER_BLOCK):
        blk = pairs[s:s + SET_PAIRS_PER_BLOCK]
        docs, inv = np.unique(blk, return_inverse=True)
        local = inv.reshape(-1, 2)
        for kind in kinds:
            h, off = sets[kind].gather(docs)
            inter = set_intersections(h, off, local).astype(np.float64)
            size = np.diff(off).astype(np.float64)
            sa, sb = size[local[:, 0]], size[local[:, 1]]
            union = sa + sb - inter
            jac = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
            if kind == "char":
                sims["char"][s:s + len(blk)] = jac
                continue
            if "jaccard" in thr:
                sims["jaccard"][s:s + len(blk)] = jac
            if "containment" in thr:
                small = np.minimum(sa, sb)
                c = np.divide(inter, small, out=np.zeros_like(inter), where=small > 0)
                c[small < task.containment_min] = 0.0
                sims["containment"][s:s + len(blk)] = c
    return sims


def pack_payload(score: np.ndarray, code: np.ndarray) -> np.ndarray:
    """One int64 per pair: the float32 score's bits, and the deciding measure's code above them.

    The score is rounded up to float32 (the manifest's type), never down: a pair that reached the
    threshold exactly (13/20 = 0.65) keeps a stored score >= the threshold (0.65 rounded to nearest
    is 0.6499999762 in float32, which would read as a drop below its own threshold).
    """
    exact = np.asarray(score, np.float64)
    f32 = exact.astype(np.float32)
    f32 = np.where(f32.astype(np.float64) < exact, np.nextafter(f32, np.float32(np.inf)), f32)
    return f32.view(np.uint32).astype(np.int64) | (np.asarray(code, np.int64) << 32)


def unpack_payload(payload: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(score float32, measure code int64) from :func:`pack_payload`."""
    payload = np.asarray(payload, np.int64)
    return (payload & 0xFFFFFFFF).astype(np.uint32).view(np.float32), payload >> 32


def rest_path(out: str) -> str:
    """Where :func:`verify_task` writes the pairs it did not verify (beside ``out``)."""
    return out[:-4] + ".rest.npy"


def verify_task(task: VerifyTask) -> dict[str, int]:
    """Keep the pairs of one chunk that reach the threshold of some measure; saves ``task.out`` as
    int64 rows (i, j, payload: the deciding measure and its score, :func:`pack_payload`).

    The pairs not verified go to :func:`rest_path` (the char pass takes them).

    Returns:
        ``{"verified": pairs kept, MEASURE: pairs reaching that measure's threshold, ...}``.
    """
    pairs = np.load(task.pairs)
    m = len(pairs)
    score = np.zeros(m, np.float64)  # the exact similarity; pack_payload rounds it up to float32
    code = np.zeros(m, np.int64)
    ok = np.zeros(m, bool)
    counts: dict[str, int] = {}
    # float32 estimates are k/num_perm; compare with a tolerance so 0.8 * 128 agreeing slots count.
    eps = 1e-6
    if task.mode in ("none", "signature"):
        score = signature_agreement(_Gather(task.sig_paths, task.offsets), pairs)
        if task.mode == "none":
            ok[:] = True
        else:
            ok = score >= np.float32(dict(task.thresholds)["jaccard"]) - np.float32(eps)
            code[:] = _CODE["jaccard_estimate"]
            counts["jaccard_estimate"] = int(ok.sum())
    else:
        thr = dict(task.thresholds)
        sims = _set_similarities(task, pairs)
        for name in MEASURE_ORDER:
            if name not in sims:
                continue
            passed = sims[name] >= thr[name] - eps
            counts[name] = int(passed.sum())
            new = passed & ~ok
            score[new] = sims[name][new]
            code[new] = _CODE[name]
            ok |= passed
    out = np.column_stack([pairs[ok], pack_payload(score[ok], code[ok])]) if m else np.zeros((0, 3), np.int64)
    save_npy(task.out, out.astype(np.int64, copy=False))
    save_npy(rest_path(task.out), pairs[~ok] if m else np.zeros((0, 2), np.int64))
    return {"verified": int(ok.sum()), **counts}


def save_npy(path: str, arr: np.ndarray) -> None:
    """``np.save`` to a temporary name, then rename: a reader never sees half a file."""
    with atomic_open(path, sync=False) as fh:
        np.save(fh, arr)


def bucket_bytes(res: list[dict]) -> dict[str, int]:
    """Bytes of band keys read per bucket task: the most and the mean (for the summary)."""
    b = [r["bytes_read"] for r in res]
    return {"tasks": len(b), "max": max(b) if b else 0, "mean": int(sum(b) / len(b)) if b else 0}
