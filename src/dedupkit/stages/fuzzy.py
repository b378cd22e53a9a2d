"""Fuzzy deduplication: MinHash signatures, LSH band buckets, verification, connected components.

The work is split so that every step is a top-level function over a small task object that names
files under the work folder; :meth:`FuzzyStage.identify` runs them through ``self.engine.map``, so
the local process pool and the Ray engine execute the same code:

1. scan (runner): :class:`FuzzyMapper` writes per scan task ``sig`` (uint32 signature values),
   ``band`` (one uint64 key per LSH band) and ``nsh`` (shingles per document).
2. :func:`bucket_task` per (band, hash partition): sort the band keys, turn every bucket of two or
   more documents into candidate pairs, write them to ``pairs-*.npy``.
3. :func:`verify_task` per chunk of unique candidate pairs: keep the pairs whose signature estimate
   (``--verify signature``) or true shingle-set Jaccard (``--verify jaccard``, shingles recomputed
   by :func:`shingle_set_task` for candidate documents only) reaches the threshold.
4. connected components of the verified pairs with an array union-find, then the keep policy.

Memory of one process is bounded by the number of documents (8-16 bytes per document per task,
plus the candidate pairs), never by their text: signatures stay in memory-mapped files.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dedupkit.errors import ConfigError
from dedupkit.io.npy import load_npy
from dedupkit.io.read import Batch
from dedupkit.minhash import (
    MinHashConfig, band_keys, batch_shingle_hashes, detection_probability, signatures_from_hashes,
)
from dedupkit.policy import KeepPolicy, choose_representatives
from dedupkit.stages.base import Decisions, Mapper, Stage

VERIFY_MODES = ("none", "signature", "jaccard")
# A bucket with up to this many documents yields all its pairs; a bigger one (boilerplate shared by
# many documents) yields a star to its first member plus a chain through the others: n-1 + n-2
# pairs instead of n(n-1)/2, still connecting all of them before verification.
ALL_PAIRS_MAX = 16
# Documents per bucket task: more documents split a band by key hash into partitions.
DOCS_PER_PARTITION = 4_000_000
# Text bytes shingled at once by a scan worker (whole documents; one longer document is one slice).
SLICE_BYTES = 4 * 2**20
# Candidate pairs per verification task and per in-memory block inside it.
PAIRS_PER_TASK = 500_000
PAIRS_PER_BLOCK = 32_768


@dataclass(frozen=True)
class FuzzyConfig:
    """Settings of the fuzzy stage.

    Attributes:
        minhash: shingling, permutations, threshold and banding.
        verify: ``none`` keeps every candidate pair of a shared band, ``signature`` keeps pairs whose
            signature agreement (the Jaccard estimate) reaches the threshold, ``jaccard`` keeps pairs
            whose true shingle-set Jaccard does.
        policy: which member of a cluster survives.
    """

    minhash: MinHashConfig = MinHashConfig()
    verify: str = "signature"
    policy: KeepPolicy = KeepPolicy()

    def __post_init__(self) -> None:
        if self.verify not in VERIFY_MODES:
            raise ConfigError(f"verify must be one of {', '.join(VERIFY_MODES)}, got {self.verify!r}")


class FuzzyMapper(Mapper):
    """Signatures (uint32 values), band keys and shingle counts of a batch."""

    def __init__(self, cfg: MinHashConfig):
        self.cfg = cfg
        self.bands, self.rows = cfg.resolved()

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
        sig = signatures_from_hashes(hashes, counts, self.cfg)
        keys = band_keys(sig, self.bands, self.rows)
        # The low 32 bits of each value are enough to estimate Jaccard (a false agreement of two
        # different minima has probability 2**-32) and halve the disk space; legacy values are
        # 32-bit already.
        return {"sig": sig.astype(np.uint32), "band": keys, "nsh": np.minimum(counts, 2**31 - 1).astype(np.int32)}

    def empty(self) -> dict[str, np.ndarray]:
        return {"sig": np.zeros((0, self.cfg.num_perm), np.uint32), "band": np.zeros((0, self.bands), np.uint64),
                "nsh": np.zeros(0, np.int32)}


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


def bucket_pairs(keys: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Candidate pairs (i < j, int64 (m, 2)) of documents ``idx`` that share a key."""
    if len(keys) < 2:
        return np.zeros((0, 2), np.int64)
    order = np.argsort(keys, kind="stable")  # idx is ascending, so members stay in index order
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
    return np.concatenate(out).astype(np.int64, copy=False)


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
        pairs = bucket_pairs(np.concatenate(keys), np.concatenate(idx))
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
        self.parts = [load_npy(p) for p in paths]
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
    """Recompute sorted shingle-hash sets for the candidate documents of one scan task."""

    scan_task: object  # dedupkit.scan.ScanTask
    offset: int
    wanted: str  # .npy of global indices (sorted) in this scan task
    cfg: MinHashConfig
    out: str  # prefix: .idx.npy, .off.npy, .hash.npy


def shingle_set_task(task: ShingleSetTask) -> int:
    from dedupkit.io.read import ShardReader

    st = task.scan_task
    wanted = np.load(task.wanted) - task.offset
    reader = ShardReader(st.shard, st.spec, skip_rows=st.skip_rows, row_groups=st.row_groups)
    pos, hashes, counts = 0, [], []
    for batch in reader:
        lo, hi = np.searchsorted(wanted, [pos, pos + len(batch)])
        if hi > lo:
            local = wanted[lo:hi] - pos
            texts = batch.text.take(local).to_pylist()
            h, c = batch_shingle_hashes(texts, task.cfg)
            start = 0
            for n in c.tolist():
                u = np.unique(h[start:start + n])
                hashes.append(u)
                counts.append(len(u))
                start += n
        pos += len(batch)
    off = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(np.asarray(counts, np.int64), out=off[1:])
    _save(task.out + ".idx.npy", wanted + task.offset)
    _save(task.out + ".off.npy", off)
    _save(task.out + ".hash.npy", np.concatenate(hashes) if hashes else np.zeros(0, np.uint64))
    return len(counts)


class _Sets:
    def __init__(self, prefixes: tuple[str, ...]):
        self.idx = [np.load(p + ".idx.npy") for p in prefixes]
        self.off = [np.load(p + ".off.npy") for p in prefixes]
        self.hash = [load_npy(p + ".hash.npy") for p in prefixes]
        self.first = np.array([i[0] if len(i) else np.iinfo(np.int64).max for i in self.idx], np.int64)

    def get(self, g: int) -> np.ndarray:
        t = int(np.searchsorted(self.first, g, side="right")) - 1
        k = int(np.searchsorted(self.idx[t], g))
        return np.asarray(self.hash[t][self.off[t][k]:self.off[t][k + 1]])


@dataclass(frozen=True)
class VerifyTask:
    pairs: str  # .npy (m, 2) int64
    mode: str  # signature | jaccard
    threshold: float
    sig_paths: tuple[str, ...]
    offsets: tuple[int, ...]
    set_prefixes: tuple[str, ...] = ()
    out: str = ""


def verify_task(task: VerifyTask) -> int:
    """Keep the pairs of one chunk whose similarity reaches the threshold; saves ``task.out``."""
    pairs = np.load(task.pairs)
    if task.mode == "signature":
        sim = signature_agreement(_Gather(task.sig_paths, task.offsets), pairs)
    else:
        sets = _Sets(task.set_prefixes)
        sim = np.empty(len(pairs), dtype=np.float32)
        for k, (i, j) in enumerate(pairs.tolist()):
            a, b = sets.get(i), sets.get(j)
            inter = len(np.intersect1d(a, b, assume_unique=True))
            union = len(a) + len(b) - inter
            sim[k] = inter / union if union else 0.0
    # float32 estimates are k/num_perm; compare with a tolerance so 0.8 * 128 agreeing slots count.
    keep = sim >= np.float32(task.threshold) - np.float32(1e-6)
    _save(task.out, pairs[keep])
    return int(keep.sum())


# --- step 4: components -----------------------------------------------------------------------

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


def _save(path: str, arr: np.ndarray) -> None:
    tmp = f"{path}.tmp{os.getpid()}.npy"
    np.save(tmp, arr)
    os.replace(tmp, path)


class FuzzyStage(Stage):
    """Drop near-duplicates found by MinHash-LSH (see the module docstring for the steps).

    Example:
        >>> from dedupkit.runner import run_stage  # doctest: +SKIP
        >>> run_stage(FuzzyStage(FuzzyConfig(MinHashConfig(threshold=0.7))), ["data"], "out")
    """

    name = "fuzzy"

    def __init__(self, config: FuzzyConfig = FuzzyConfig()):
        self.config = config
        self.bands, self.rows = config.minhash.resolved()

    def mapper(self) -> Mapper:
        return FuzzyMapper(self.config.minhash)

    def read_columns(self) -> tuple[str, ...]:
        return (self.config.policy.keep_by,) if self.config.policy.keep_by else ()

    def key(self) -> str:
        c = self.config.minhash
        return (f"fuzzy:v2:{c.scheme}:{c.shingle}:{c.ngram}:{c.num_perm}:{c.seed}:"
                f"{self.bands}x{self.rows}")

    def config_dict(self) -> dict:
        c = self.config.minhash
        return {**asdict(c), "bands": self.bands, "rows": self.rows, "hash": "xxh3_64",
                "verify": self.config.verify, **asdict(self.config.policy)}

    def clusters(self, corpus, root: np.ndarray, paths, offsets) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cluster labels (-1 for singletons), representatives by the keep policy, and each
        member's signature agreement with its representative, from component roots.

        Shared by the local global step and the partitioned one (``fuzzy_partitioned``).
        """
        n = len(corpus)
        sizes = np.bincount(root, minlength=n) if n else np.zeros(0, np.int64)
        labels = np.where(sizes[root] > 1, root, -1).astype(np.int64)
        pol = self.config.policy
        keys = pol.priority(n, corpus.lengths, corpus.extra.get(pol.keep_by) if pol.keep_by else None)
        rep = choose_representatives(labels, keys)
        score = np.full(n, np.nan, dtype=np.float32)
        member = np.flatnonzero(labels >= 0)
        if len(member):
            score[member] = signature_agreement(_Gather(paths("sig"), offsets),
                                                np.stack([member, rep[member]], 1))
        return labels, rep, score

    def bucket_tasks(self, corpus, work: Path):
        """Feature-file paths, task offsets, document partitions and one BucketTask per (band, partition).

        Shared by the local global step and the partitioned one (``fuzzy_partitioned``).
        """

        def paths(name: str) -> tuple[str, ...]:
            return tuple(str(Path(t.workdir) / f"task-{t.index:05d}.{name}.npy") for t in corpus.tasks)

        offsets = tuple(int(x) for x in corpus.task_offsets[:-1])
        nparts = max(1, -(-len(corpus) // DOCS_PER_PARTITION))
        btasks = [BucketTask(b, p, nparts, paths("band"), paths("nsh"), offsets,
                             str(work / f"pairs-b{b:03d}-p{p:03d}.npy"))
                  for b in range(self.bands) for p in range(nparts)]
        return paths, offsets, nparts, btasks

    def identify(self, corpus, workdir: str) -> Decisions:
        from dedupkit.engine.local import LocalEngine

        engine = self.engine or LocalEngine()
        if getattr(engine, "name", "local") != "local":
            # A distributed engine (Ray): pairs and components stay partitioned, off the driver.
            from dedupkit.stages.fuzzy_partitioned import identify_partitioned

            return identify_partitioned(self, corpus, workdir, engine)
        cfg = self.config.minhash
        work = Path(workdir)
        work.mkdir(parents=True, exist_ok=True)
        n = len(corpus)
        t0 = time.perf_counter()
        paths, offsets, nparts, btasks = self.bucket_tasks(corpus, work)
        nsh = np.concatenate([np.load(p) for p in paths("nsh")]) if n else np.zeros(0, np.int32)
        pairs = np.zeros((0, 2), np.int64)
        if n:
            engine.map(bucket_task, btasks, desc="fuzzy: buckets")
            pairs = _unique_pairs([t.out for t in btasks], n)
        t1 = time.perf_counter()
        n_candidates = len(pairs)

        if self.config.verify != "none" and len(pairs):
            set_prefixes: tuple[str, ...] = ()
            if self.config.verify == "jaccard":
                set_prefixes = self._shingle_sets(corpus, pairs, work, engine)
            chunks = []
            for k, s in enumerate(range(0, len(pairs), PAIRS_PER_TASK)):
                p = str(work / f"cand-{k:05d}.npy")
                _save(p, pairs[s:s + PAIRS_PER_TASK])
                chunks.append(VerifyTask(p, self.config.verify, float(cfg.threshold), paths("sig"), offsets,
                                         set_prefixes, str(work / f"verified-{k:05d}.npy")))
            engine.map(verify_task, chunks, desc="fuzzy: verify")
            parts = [np.load(t.out) for t in chunks]
            pairs = np.concatenate(parts) if parts else np.zeros((0, 2), np.int64)
        t2 = time.perf_counter()

        root = connected_components(n, pairs)
        labels, rep, score = self.clusters(corpus, root, paths, offsets)
        t3 = time.perf_counter()
        stats = {
            "bands": self.bands, "rows": self.rows,
            "detection_probability": {str(s): round(detection_probability(s, self.bands, self.rows), 4)
                                      for s in (0.5, 0.7, 0.8, 0.9)},
            "documents_without_shingles": int((nsh == 0).sum()),
            "candidate_pairs": int(n_candidates), "verified_pairs": int(len(pairs)),
            "partitions_per_band": nparts,
            "timings": {"buckets_s": round(t1 - t0, 3), "verify_s": round(t2 - t1, 3),
                        "components_s": round(t3 - t2, 3)},
        }
        return Decisions(representative=rep, labels=labels, score=score, stats=stats)

    def _shingle_sets(self, corpus, pairs: np.ndarray, work: Path, engine) -> tuple[str, ...]:
        docs = np.unique(pairs)
        t_of = np.searchsorted(corpus.task_offsets, docs, side="right") - 1
        tasks = []
        for ti in np.unique(t_of).tolist():
            w = str(work / f"wanted-{ti:05d}.npy")
            _save(w, docs[t_of == ti])
            tasks.append(ShingleSetTask(corpus.tasks[ti], int(corpus.task_offsets[ti]), w, self.config.minhash,
                                        str(work / f"sets-{ti:05d}")))
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
