"""Fuzzy deduplication: MinHash signatures, LSH band buckets, direct verification, greedy centres.

The work is split so that every step is a top-level function over a small task object that names
files under the work folder; :meth:`FuzzyStage.identify` runs them through ``self.engine.map``, so
the local process pool and the Ray engine execute the same code:

1. scan (runner): :class:`FuzzyMapper` writes per scan task ``sig`` (uint32 signature values),
   with ``--verify sets`` also ``wset``/``wsetn`` (every document's distinct word-shingle hashes),
   ``band`` (one uint64 key per LSH band) and ``nsh`` (shingles per document).
2. :func:`bucket_task` per (band, hash partition): sort the band keys, turn every bucket of two or
   more documents into candidate pairs, write them to ``pairs-*.npy``. The LSH banding comes from
   the *candidate* threshold, which may be lower than the verification thresholds (recall first).
3. :func:`verify_task` per chunk of unique candidate pairs: keep the pairs whose similarity reaches
   the threshold of at least one measure (``--measure``): the signature estimate of Jaccard
   (``--verify signature``), or, on the true shingle sets (``--verify sets``, recomputed by
   :func:`shingle_set_task` for candidate documents only), word-shingle Jaccard, containment of the
   smaller set in the larger, or char-n-gram Jaccard. Each kept pair carries its score and the
   measure that decided it.
4. greedy centre clustering of the verified pairs in keep-priority order
   (:func:`dedupkit.engine.graph.centre_clusters`): the best unclaimed document becomes a kept centre
   and claims its unclaimed verified neighbours. A dropped document is therefore always a *direct*
   verified neighbour of the document named in its ``duplicate_of`` (no chaining A~B~C that drops C
   for A), and its score is that pair's similarity.

Memory of one process is bounded by the number of documents (8-16 bytes per document per task,
plus the candidate pairs), never by their text: signatures stay in memory-mapped files.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from dedupkit import settings as _S
from dedupkit.errors import ConfigError
from dedupkit.io.npy import load_npy
from dedupkit.io.read import Batch
from dedupkit.minhash import (
    MinHashConfig, band_keys, batch_shingle_hashes, detection_probability, signatures_from_hashes,
)
from dedupkit.policy import KeepPolicy, choose_representatives, priority_rank
from dedupkit.stages.base import Decisions, Mapper, Stage

try:  # optional C kernels; numpy fallbacks below
    from dedupkit import _speedups
except ImportError:  # pragma: no cover - depends on the build
    _speedups = None

VERIFY_MODES = ("none", "signature", "sets")
MEASURES = ("jaccard", "containment", "char")
CLUSTER_MODES = ("centre", "split")
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
# Documents per bucket task: more documents split a band by key hash into partitions.
DOCS_PER_PARTITION = 4_000_000
# Text bytes shingled at once by a scan worker (whole documents; one longer document is one slice).
SLICE_BYTES = 4 * 2**20
# Candidate pairs per verification task and per in-memory block inside it.
PAIRS_PER_TASK = 500_000
MIN_PAIRS_PER_TASK = 2_048
PAIRS_PER_BLOCK = 32_768


# The fuzzy-specific options of ``dedupkit fuzzy`` (config keys of [fuzzy]), as FuzzyConfig.from_options takes them.
FUZZY_OPTIONS = ("shingle", "ngram", "num_perm", "seed", "threshold", "candidate_threshold", "bands", "rows",
                 "scheme", "verify", "measure", "containment_threshold", "containment_min", "char_threshold",
                 "char_ngram", "cluster")


_F = _S.FuzzyConfig  # the defaults of every setting (dedupkit.settings)


@dataclass(frozen=True)
class FuzzyConfig:
    """Settings of the fuzzy stage.

    Attributes:
        minhash: shingling, permutations and banding. ``minhash.threshold`` is the *candidate*
            threshold: the Jaccard similarity LSH is tuned to find (bands and rows by datasketch's
            rule, unless ``bands``/``rows`` are given).
        threshold: word-shingle Jaccard that makes a verified duplicate (measure ``jaccard``).
        verify: ``none`` keeps every candidate pair, ``signature`` keeps pairs whose signature
            agreement (the Jaccard estimate) reaches ``threshold``, ``sets`` computes the measures on
            the true shingle sets (``jaccard`` is accepted as an old name of ``sets``).
        measures: with ``verify="sets"`` (other modes verify ``jaccard`` only and record that), a
            pair is a duplicate when any of these reaches its
            threshold: ``jaccard`` (word shingles), ``containment`` (|A & B| / min(|A|, |B|) of word
            shingles: a page quoted inside a longer one) and ``char`` (Jaccard of character
            ``char_ngram``-grams: OCR noise, typos, broken words).
        containment_threshold: for ``containment``.
        containment_min: the smaller document needs at least this many distinct word shingles for
            ``containment`` to count (a one-line text is contained in many unrelated pages).
        char_threshold, char_ngram: for ``char``.
        cluster: ``centre`` (greedy centres in keep-priority order) or ``split`` (connected
            components, keeping every member not directly verified against the representative; the
            alternative measured in docs/fuzzy.md, local engine only).
        policy: which document of a cluster survives (the centre order).
    """

    minhash: MinHashConfig = MinHashConfig(threshold=_S.FuzzyConfig.candidate_threshold)
    threshold: float | None = _S.FuzzyConfig.threshold
    verify: str = _S.FuzzyConfig.verify
    measures: tuple[str, ...] = tuple(_S.FuzzyConfig.measure.split(","))
    containment_threshold: float = _S.FuzzyConfig.containment_threshold
    containment_min: int = _S.FuzzyConfig.containment_min
    char_threshold: float = _S.FuzzyConfig.char_threshold
    char_ngram: int = _S.FuzzyConfig.char_ngram
    cluster: str = _S.FuzzyConfig.cluster
    policy: KeepPolicy = KeepPolicy()

    def __post_init__(self) -> None:
        if self.verify == "jaccard":  # the old name of sets
            object.__setattr__(self, "verify", "sets")
        if self.verify not in VERIFY_MODES:
            raise ConfigError(f"verify must be one of {', '.join(VERIFY_MODES)}, got {self.verify!r}")
        if self.threshold is None:
            object.__setattr__(self, "threshold", float(self.minhash.threshold))
        measures = tuple(self.measures.split(",")) if isinstance(self.measures, str) else tuple(self.measures)
        measures = tuple(dict.fromkeys(m.strip() for m in measures if m.strip()))
        object.__setattr__(self, "measures", measures)
        bad = [m for m in measures if m not in MEASURES]
        if bad or not measures:
            raise ConfigError(f"measure must be a comma-separated list of {', '.join(MEASURES)}, got "
                              f"{','.join(measures) or 'nothing'!r}")
        if self.verify != "sets":
            # Only the true sets have containment and char n-grams: signature (and none) verify
            # Jaccard, whatever --measure says (the summary's config records measure = jaccard).
            object.__setattr__(self, "measures", ("jaccard",))
        # ranges and choices: the schema's (dedupkit.settings)
        _S.validate(_F, {k: getattr(self, k) for k in ("threshold", "containment_threshold", "char_threshold",
                                                        "char_ngram", "containment_min", "cluster")})

    @classmethod
    def from_options(cls, *, shingle: str = _F.shingle, ngram: int = _F.ngram, num_perm: int = _F.num_perm,
                     seed: int = _F.seed, threshold: float = _F.threshold,
                     candidate_threshold: float | None = _F.candidate_threshold,
                     bands: int | None = None, rows: int | None = None, scheme: str = _F.scheme,
                     verify: str = _F.verify, measure: str | Sequence[str] = _F.measure,
                     containment_threshold: float = _F.containment_threshold,
                     containment_min: int = _F.containment_min, char_threshold: float = _F.char_threshold,
                     char_ngram: int = _F.char_ngram, cluster: str = _F.cluster, keep: str = _F.keep,
                     keep_by: str | None = None, keep_order: str = _F.keep_order) -> "FuzzyConfig":
        """The config from the ``dedupkit fuzzy`` options (``candidate_threshold`` None: ``threshold``).

        The defaults are the command's, chosen by leave-one-suite-out over eight labelled suites
        (docs/fuzzy.md, "Defaults and why").

        Raises:
            ConfigError: an invalid value, or ``bands`` without ``rows``.
        """
        if (bands is None) != (rows is None):
            raise ConfigError("give bands and rows together, or neither to derive them from the candidate threshold")
        mh = MinHashConfig(num_perm=num_perm, seed=seed, shingle=shingle, ngram=ngram,
                           threshold=threshold if candidate_threshold is None else candidate_threshold,
                           bands=bands, rows=rows, scheme=scheme)
        return cls(minhash=mh, threshold=threshold, verify=verify, measures=measure,
                   containment_threshold=containment_threshold, containment_min=containment_min,
                   char_threshold=char_threshold, char_ngram=char_ngram, cluster=cluster,
                   policy=KeepPolicy(keep, keep_by, keep_order))

    def measure_thresholds(self) -> dict[str, float]:
        """Threshold of every selected measure."""
        t = {"jaccard": self.threshold, "containment": self.containment_threshold, "char": self.char_threshold}
        return {m: float(t[m]) for m in self.measures}


class FuzzyMapper(Mapper):
    """Signatures (uint32 values), band keys and shingle counts of a batch; with ``word_sets``, also
    every document's distinct word-shingle hashes (top 32 bits, sorted: ``wset``, ``wsetn`` values
    per document) for verification on the true sets without reading the text again."""

    def __init__(self, cfg: MinHashConfig, word_sets: bool = False, signature: bool = True):
        self.cfg = cfg
        self.bands, self.rows = cfg.resolved()
        self.word_sets = word_sets
        # without ``sig`` (only the signature modes verify with it), only the permutations the
        # bands use are computed
        self.signature = signature

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
class BucketTask:
    band: int
    part: int
    nparts: int
    band_paths: tuple[str, ...]  # per scan task: (n_t, bands) uint64
    nsh_paths: tuple[str, ...]
    offsets: tuple[int, ...]  # global index of each scan task's first document
    out: str
    rank: str = ""  # .npy of every document's keep-priority rank (0 = kept first); "" = index order


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


def bucket_task(task: BucketTask) -> int:
    """Candidate pairs of one band (one hash partition of it), saved to ``task.out``."""
    keys, idx = [], []
    for path, nsh_path, off in zip(task.band_paths, task.nsh_paths, task.offsets):
        k = np.load(path, mmap_mode="r")
        if len(k) == 0:
            continue
        col = np.ascontiguousarray(k[:, task.band])
        ok = np.load(nsh_path) > 0  # documents without shingles are never duplicates here
        if task.nparts > 1:
            ok &= (col % np.uint64(task.nparts)) == np.uint64(task.part)
        sel = np.flatnonzero(ok)
        keys.append(col[sel])
        idx.append(sel.astype(np.int64) + off)
    if keys:
        idx_all = np.concatenate(idx)
        rank = np.asarray(np.load(task.rank, mmap_mode="r")[idx_all]) if task.rank else None
        pairs = bucket_pairs(np.concatenate(keys), idx_all, rank)
    else:
        pairs = np.zeros((0, 2), np.int64)
    if len(pairs):
        pairs = np.unique(pairs, axis=0)
    _save(task.out, pairs)
    return int(len(pairs))


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


def sorted_sets(hashes: np.ndarray, counts: np.ndarray, use_c: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per document, the distinct values of its run of ``hashes``, sorted; and the n+1 offsets.

    The C kernel sorts each document's run on its own (a radix sort in cache; a numpy lexsort on
    (document, hash) over a whole batch was 10x slower); the fallback is that lexsort.
    """
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    counts = np.asarray(counts, dtype=np.int64)
    off = np.zeros(len(counts) + 1, np.int64)
    if _speedups is not None and use_c:
        np.cumsum(counts, out=off[1:])
        raw, cnt = _speedups.sort_unique_runs(hashes, off, len(counts))
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
    from dedupkit.minhash import char_shingle_hashes

    st = task.scan_task
    wanted = np.load(task.wanted) - task.offset
    reader = st.reader()
    pos = 0
    kinds = (["word"] if task.word else []) + (["char"] if task.char_ngram else [])
    parts: dict[str, list] = {k: [] for k in kinds}
    for batch in reader:
        lo, hi = np.searchsorted(wanted, [pos, pos + len(batch)])
        if hi > lo:
            texts = batch.text.take(wanted[lo:hi] - pos)
            for kind in kinds:
                if kind == "word":
                    h, c = batch_shingle_hashes(texts, task.cfg)
                else:
                    h, c = char_shingle_hashes(texts, task.char_ngram)
                parts[kind].append(sorted_sets(h, c))
        pos += len(batch)
    _save(task.out + ".idx.npy", wanted + task.offset)
    for kind in kinds:
        hs = [h for h, _ in parts[kind]]
        sizes = [np.diff(o) for _, o in parts[kind]]
        off = np.zeros(sum(len(x) for x in sizes) + 1, np.int64)
        if sizes:
            np.cumsum(np.concatenate(sizes), out=off[1:])
        _save(f"{task.out}.{kind}.off.npy", off)
        _save(f"{task.out}.{kind}.hash.npy", np.concatenate(hs) if hs else np.zeros(0, np.uint64))
    return int(len(wanted))


def _read_at(path: str, pos: np.ndarray) -> np.ndarray:
    """Values at ``pos`` of a .npy file, through a memory map that is closed again on return: the
    pages read stay out of the process's resident memory between blocks (a map kept open for the
    whole verification made every set file that the pairs touch resident, up to all of them)."""
    arr = np.load(path, mmap_mode="r")
    try:
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

    def gather(self, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The sets of ``docs`` (sorted global indices) as one hash array and n+1 offsets."""
        t_of = np.searchsorted(self.first, docs, side="right") - 1
        hashes, lens = [], []
        for t in np.unique(t_of).tolist():
            k = np.searchsorted(self.idx[t], docs[t_of == t])
            a, b = self.off[t][k], self.off[t][k + 1]
            ln = b - a
            pos = np.repeat(a - (np.cumsum(ln) - ln), ln) + np.arange(int(ln.sum()), dtype=np.int64)
            hashes.append(_read_at(self.hash_paths[t], pos))
            lens.append(ln)
        off = np.zeros(len(docs) + 1, np.int64)
        if lens:
            np.cumsum(np.concatenate(lens), out=off[1:])
        return (np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)), off


class _ScanSets:
    """The word-shingle sets the scan wrote (``wset``/``wsetn`` per scan task), same API as _Sets."""

    def __init__(self, set_paths: tuple[str, ...], count_paths: tuple[str, ...], offsets: tuple[int, ...]):
        self.hash_paths = list(set_paths)
        self.off = []
        for p in count_paths:
            c = np.load(p)
            o = np.zeros(len(c) + 1, np.int64)
            np.cumsum(c, out=o[1:])
            self.off.append(o)
        self.first = np.asarray(offsets, np.int64)

    def gather(self, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t_of = np.searchsorted(self.first, docs, side="right") - 1
        hashes, lens = [], []
        for t in np.unique(t_of).tolist():
            k = docs[t_of == t] - self.first[t]
            a, b = self.off[t][k], self.off[t][k + 1]
            ln = b - a
            pos = np.repeat(a - (np.cumsum(ln) - ln), ln) + np.arange(int(ln.sum()), dtype=np.int64)
            hashes.append(_read_at(self.hash_paths[t], pos).astype(np.uint64))
            lens.append(ln)
        off = np.zeros(len(docs) + 1, np.int64)
        if lens:
            np.cumsum(np.concatenate(lens), out=off[1:])
        return (np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)), off


def set_intersections(hashes: np.ndarray, offsets: np.ndarray, pairs: np.ndarray, use_c: bool = True) -> np.ndarray:
    """|A & B| for every pair of set indices (sets: sorted distinct runs of ``hashes``), int64.

    The C kernel merges the two sorted runs; the fallback intersects them with numpy.
    """
    pairs = np.ascontiguousarray(pairs, dtype=np.int64)
    if _speedups is not None and use_c:
        raw = _speedups.set_intersections(np.ascontiguousarray(hashes, dtype=np.uint64),
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
    containment_min: int = _F.containment_min
    wset_paths: tuple[str, ...] = ()  # word sets written by the scan (FuzzyMapper word_sets)
    wsetn_paths: tuple[str, ...] = ()


# Pairs per block when whole shingle sets are gathered (bounds the sets held at once).
SET_PAIRS_PER_BLOCK = 8192


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
    """One int64 per pair: the float32 score's bits, and the deciding measure's code above them."""
    return np.asarray(score, np.float32).view(np.uint32).astype(np.int64) | (np.asarray(code, np.int64) << 32)


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
    score = np.zeros(m, np.float32)
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
    _save(task.out, out.astype(np.int64, copy=False))
    _save(rest_path(task.out), pairs[~ok] if m else np.zeros((0, 2), np.int64))
    return {"verified": int(ok.sum()), **counts}


# --- step 4: clusters -------------------------------------------------------------------------

def connected_components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Root (smallest member index) of every node's component, by union-find on arrays.

    Each round hooks the larger root of every edge under the smaller one (``np.minimum.at``) and
    then compresses paths by pointer jumping, until both ends of every edge share a root; the
    number of rounds grows with the log of the component diameter, not with the number of edges.
    """
    parent = np.arange(n, dtype=np.int64)
    if len(pairs) == 0:
        return parent
    i, j = pairs[:, 0], pairs[:, 1]
    while True:
        pi, pj = parent[i], parent[j]
        diff = pi != pj
        if not diff.any():
            return parent
        pi, pj = pi[diff], pj[diff]
        m = np.minimum(pi, pj)
        np.minimum.at(parent, pi, m)
        np.minimum.at(parent, pj, m)
        while True:
            pp = parent[parent]
            if np.array_equal(pp, parent):
                break
            parent = pp


def split_clusters(n: int, edges: np.ndarray, keys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The measured alternative to greedy centres: connected components, the keep policy's
    representative per component, and only members with a verified pair *to the representative*
    dropped (the others are kept). Returns (dropped docs, their representative, pair payload)."""
    root = connected_components(n, edges[:, :2])
    sizes = np.bincount(root, minlength=n)
    labels = np.where(sizes[root] > 1, root, -1).astype(np.int64)
    rep = choose_representatives(labels, keys)
    a, b, pay = edges[:, 0], edges[:, 1], edges[:, 2]
    to_a = (rep[b] == a) & (a != b)
    to_b = (rep[a] == b) & (a != b)
    docs = np.concatenate([b[to_a], a[to_b]])
    pay = np.concatenate([pay[to_a], pay[to_b]])
    order = np.argsort(docs, kind="stable")
    return docs[order], rep[docs[order]], pay[order]


def _save(path: str, arr: np.ndarray) -> None:
    tmp = f"{path}.tmp{os.getpid()}.npy"
    np.save(tmp, arr)
    os.replace(tmp, path)


class FuzzyStage(Stage):
    """Drop near-duplicates found by MinHash-LSH (see the module docstring for the steps).

    Example:
        >>> from dedupkit.runner import run_stage  # doctest: +SKIP
        >>> run_stage(FuzzyStage(FuzzyConfig.from_options(threshold=0.7)), ["data"], "out")
    """

    name = "fuzzy"

    def __init__(self, config: FuzzyConfig = FuzzyConfig()):
        self.config = config
        self.bands, self.rows = config.minhash.resolved()

    def mapper(self) -> Mapper:
        return FuzzyMapper(self.config.minhash, self.word_sets(), self.config.verify != "sets")

    def word_sets(self) -> bool:
        """Whether the scan keeps word-shingle sets (verification on true sets by a word measure)."""
        f = self.config
        return f.verify == "sets" and ("jaccard" in f.measures or "containment" in f.measures)

    def read_columns(self) -> tuple[str, ...]:
        return (self.config.policy.keep_by,) if self.config.policy.keep_by else ()

    def key(self) -> str:
        c = self.config.minhash
        return (f"fuzzy:v2:{c.scheme}:{c.shingle}:{c.ngram}:{c.num_perm}:{c.seed}:"
                f"{self.bands}x{self.rows}" + (":wsets" if self.word_sets() else "") +
                (":nosig" if self.config.verify == "sets" else ""))

    def config_dict(self) -> dict:
        c, f = self.config.minhash, self.config
        mh = asdict(c)
        mh["candidate_threshold"] = mh.pop("threshold")
        return {**mh, "bands": self.bands, "rows": self.rows, "hash": "xxh3_64", "threshold": f.threshold,
                "verify": f.verify, "measure": ",".join(f.measures), "thresholds": f.measure_thresholds(),
                "containment_min": f.containment_min, "char_ngram": f.char_ngram, "cluster": f.cluster,
                **asdict(f.policy)}

    def priority(self, corpus) -> list[np.ndarray]:
        """The keep policy's sort keys for the corpus (lower wins)."""
        pol = self.config.policy
        return pol.priority(len(corpus), corpus.lengths, corpus.extra.get(pol.keep_by) if pol.keep_by else None)

    def decisions(self, n: int, docs: np.ndarray, centre: np.ndarray, payload: np.ndarray,
                  stats: dict) -> Decisions:
        """Decisions from the claimed documents, their centres and the deciding pairs' payloads.

        Shared by the local global step and the partitioned one (``fuzzy_partitioned``).
        """
        rep = np.arange(n, dtype=np.int64)
        labels = np.full(n, -1, dtype=np.int64)
        score = np.full(n, np.nan, dtype=np.float32)
        code = np.full(n, -1, dtype=np.int64)
        if len(docs):
            rep[docs] = centre
            labels[docs] = centre
            labels[centre] = centre
            score[centre] = 1.0
            score[docs], code[docs] = unpack_payload(payload)
        names = np.array(MEASURE_NAMES, dtype=object)
        import pyarrow as pa

        measure = pa.array(np.where(code >= 0, names[np.maximum(code, 0)], None), pa.string())
        dropped = code[code >= 0]
        stats["decided_by"] = {MEASURE_NAMES[c]: int(k) for c, k in enumerate(np.bincount(dropped, minlength=len(
            MEASURE_NAMES)).tolist()) if k}
        return Decisions(representative=rep, labels=labels, score=score, extra={"measure": measure}, stats=stats)

    def bucket_tasks(self, corpus, work: Path, rank_path: str = ""):
        """Feature-file paths, task offsets, document partitions and one BucketTask per (band, partition).

        Shared by the local global step and the partitioned one (``fuzzy_partitioned``).
        """

        def paths(name: str) -> tuple[str, ...]:
            return tuple(str(Path(t.workdir) / f"task-{t.index:05d}.{name}.npy") for t in corpus.tasks)

        offsets = tuple(int(x) for x in corpus.task_offsets[:-1])
        nparts = max(1, -(-len(corpus) // DOCS_PER_PARTITION))
        btasks = [BucketTask(b, p, nparts, paths("band"), paths("nsh"), offsets,
                             str(work / f"pairs-b{b:03d}-p{p:03d}.npy"), rank_path)
                  for b in range(self.bands) for p in range(nparts)]
        return paths, offsets, nparts, btasks

    def verify_tasks(self, files: list[str], paths, offsets, set_prefixes: tuple[str, ...], work: Path,
                     name: str, thresholds: dict[str, float]) -> list[VerifyTask]:
        """One VerifyTask per candidate pair file."""
        f = self.config
        ws = (paths("wset"), paths("wsetn")) if self.word_sets() else ((), ())
        return [VerifyTask(p, f.verify, tuple(thresholds.items()), paths("sig"), offsets, set_prefixes,
                           str(work / f"verified-{name}{k:05d}.npy"), f.containment_min, *ws)
                for k, p in enumerate(files)]

    def verify(self, corpus, files: list[str], paths, offsets, work: Path, engine, name: str
               ) -> tuple[list[str], list[dict]]:
        """Verify the candidate pair files; returns the verified pair files and the tasks' counts.

        Word measures (and the signature modes) first, on data the scan wrote; then, for the pairs
        they left, the char measure, whose n-gram sets need the text of those pairs' documents read
        again. Shared by the local global step and the partitioned one (``fuzzy_partitioned``).
        """
        thr = self.config.measure_thresholds()
        char = self.config.verify == "sets" and "char" in thr
        first = {m: t for m, t in thr.items() if not (char and m == "char")}
        outs: list[str] = []
        vres: list[dict] = []
        if first and files:
            tasks = self.verify_tasks(files, paths, offsets, (), work, name + "w", first)
            vres += engine.map(verify_task, tasks, desc="fuzzy: verify")
            outs += [t.out for t in tasks]
            files = [rest_path(t.out) for t in tasks]
        if char and files:
            # Only the ids of documents in pairs left over reach the driver (at most one per document).
            ids = [np.unique(np.load(f)) for f in files]
            docs = np.unique(np.concatenate(ids)) if ids else np.zeros(0, np.int64)
            if len(docs):
                prefixes = self._shingle_sets(corpus, docs, work, engine)
                tasks = self.verify_tasks(files, paths, offsets, prefixes, work, name + "c", {"char": thr["char"]})
                vres += engine.map(verify_task, tasks, desc="fuzzy: verify char n-grams")
                outs += [t.out for t in tasks]
        return outs, vres

    def base_stats(self, nsh_empty: int, nparts: int, n_candidates: int, vres: list[dict]) -> dict:
        """Summary stats common to both global steps."""
        f = self.config
        by: dict[str, int] = {}
        for r in vres:
            for k, v in r.items():
                if k != "verified":
                    by[k] = by.get(k, 0) + int(v)
        return {
            "bands": self.bands, "rows": self.rows, "candidate_threshold": float(f.minhash.threshold),
            "detection_probability": {str(s): round(detection_probability(s, self.bands, self.rows), 4)
                                      for s in (0.5, 0.7, 0.8, 0.9)},
            "documents_without_shingles": int(nsh_empty),
            "candidate_pairs": int(n_candidates),
            "verified_pairs": int(sum(r.get("verified", 0) for r in vres)) if f.verify != "none" else int(n_candidates),
            "verified_pairs_by_measure": by,
            "partitions_per_band": nparts,
        }

    def identify(self, corpus, workdir: str) -> Decisions:
        from dedupkit.engine import graph
        from dedupkit.engine.local import LocalEngine

        engine = self.engine or LocalEngine()
        if getattr(engine, "name", "local") != "local":
            # A distributed engine (Ray): pairs and clusters stay partitioned, off the driver.
            from dedupkit.stages.fuzzy_partitioned import identify_partitioned

            return identify_partitioned(self, corpus, workdir, engine)
        work = Path(workdir)
        work.mkdir(parents=True, exist_ok=True)
        n = len(corpus)
        t0 = time.perf_counter()
        keys = self.priority(corpus)
        rank = priority_rank(keys, n)
        rank_path = str(work / "rank.npy")
        _save(rank_path, rank)
        # keep first: the rank is the index, which bucket_pairs uses without a rank file
        paths, offsets, nparts, btasks = self.bucket_tasks(corpus, work, rank_path if keys else "")
        nsh = np.concatenate([np.load(p) for p in paths("nsh")]) if n else np.zeros(0, np.int32)
        pairs = np.zeros((0, 2), np.int64)
        if n:
            engine.map(bucket_task, btasks, desc="fuzzy: buckets")
            pairs = _unique_pairs([t.out for t in btasks], n)
        t1 = time.perf_counter()
        n_candidates = len(pairs)

        vres: list[dict] = []
        edges = np.zeros((0, 3), np.int64)
        if len(pairs):
            # At least one chunk per worker (set verification is worth spreading), never tiny ones;
            # the decisions do not depend on the chunking.
            per = max(MIN_PAIRS_PER_TASK, min(PAIRS_PER_TASK, -(-len(pairs) // max(1, getattr(engine, "workers", 1)))))
            files = []
            for k, s in enumerate(range(0, len(pairs), per)):
                p = str(work / f"cand-{k:05d}.npy")
                _save(p, pairs[s:s + per])
                files.append(p)
            outs, vres = self.verify(corpus, files, paths, offsets, work, engine, "")
            parts = [np.load(f).reshape(-1, 3) for f in outs]
            edges = np.concatenate(parts) if parts else edges
        t2 = time.perf_counter()

        if self.config.cluster == "split":
            docs, centre, payload = split_clusters(n, edges, keys)
        else:
            docs, centre, payload = graph.centre_clusters(edges, rank)
        t3 = time.perf_counter()
        stats = self.base_stats(int((nsh == 0).sum()), nparts, n_candidates, vres)
        stats["timings"] = {"buckets_s": round(t1 - t0, 3), "verify_s": round(t2 - t1, 3),
                            "clusters_s": round(t3 - t2, 3)}
        return self.decisions(n, docs, centre, payload, stats)

    def _shingle_sets(self, corpus, docs: np.ndarray, work: Path, engine) -> tuple[str, ...]:
        """Char n-gram sets of ``docs`` (sorted global indices), one task per scan task holding some
        (word sets come from the scan)."""
        char = self.config.char_ngram
        t_of = np.searchsorted(corpus.task_offsets, docs, side="right") - 1
        tasks = []
        for ti in np.unique(t_of).tolist():
            w = str(work / f"wanted-{ti:05d}.npy")
            _save(w, docs[t_of == ti])
            tasks.append(ShingleSetTask(corpus.tasks[ti], int(corpus.task_offsets[ti]), w, self.config.minhash,
                                        str(work / f"sets-{ti:05d}"), False, char))
        engine.map(shingle_set_task, tasks, desc="fuzzy: shingle sets")
        return tuple(t.out for t in tasks)


def _unique_pairs(files: list[str], n: int) -> np.ndarray:
    """Union of the pair files, each pair once, sorted (deterministic for any worker count)."""
    codes = [np.load(f) for f in files]
    codes = [p[:, 0] * np.int64(n) + p[:, 1] for p in codes if len(p)]
    if not codes:
        return np.zeros((0, 2), np.int64)
    u = np.unique(np.concatenate(codes))
    return np.stack([u // n, u % n], 1)
