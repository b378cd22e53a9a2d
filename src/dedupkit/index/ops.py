"""Building an index from shards, and checking a new drop against one (the ``check`` stage).

The per-document keys are the exact stage's xxh3-128 hash of the normalized text
(:func:`dedupkit.stages.exact.hash128`) and the fuzzy stage's MinHash LSH band keys
(:mod:`dedupkit.minhash`), computed shard by shard by the usual scan (workers, bad-record
handling, resuming), so an index and ``dedupkit exact``/``fuzzy`` agree on what a duplicate is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from dedupkit import settings as _S
from dedupkit.engine import ProgressFactory, get_engine, no_progress
from dedupkit.engine.graph import component_roots
from dedupkit.errors import ConfigError, MissingExtraError
from dedupkit.index.base import IndexSettings, IndexStore, IndexStoreError, Segment
from dedupkit.index.faults import point
from dedupkit.io.read import Batch, ReadSpec
from dedupkit.io.shards import discover
from dedupkit.policy import KeepPolicy, choose_representatives
from dedupkit.scan import Corpus, plan_tasks, run_scan_task, task_rows
from dedupkit.stages.base import Decisions, Mapper, Stage
from dedupkit.stages.exact import group_labels, hash128, normalized_hash128


def _minhash_module():
    try:
        from dedupkit import minhash
    except ImportError as exc:  # pragma: no cover - present once the fuzzy stage is installed
        raise MissingExtraError(f"the fuzzy index needs dedupkit.minhash ({exc}); use --stages exact") from exc
    return minhash


def minhash_settings(options: dict[str, Any]) -> dict[str, Any]:
    """Resolve MinHash options (None = default) into the dict an index records, with bands and rows."""
    mh = _minhash_module()
    cfg = mh.MinHashConfig(**{k: v for k, v in options.items() if v is not None})
    bands, rows = cfg.resolved()
    d = dataclasses.asdict(cfg)
    d["bands"], d["rows"] = int(bands), int(rows)
    return d


def make_settings(config: _S.IndexConfig) -> IndexSettings:
    """The IndexSettings of an :class:`dedupkit.settings.IndexConfig` (MinHash bands and rows resolved)."""
    st = tuple(s.strip() for s in config.stages.split(","))
    mh = minhash_settings({k: getattr(config, k) for k in config.MINHASH}) if "fuzzy" in st else None
    return IndexSettings(stages=st, normalize=config.normalize, minhash=mh)


class IndexMapper(Mapper):
    """Per batch: the exact hash and/or the LSH band keys, as the index's settings say."""

    def __init__(self, settings: IndexSettings):
        self.settings = settings

    def map_batch(self, batch: Batch) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        s = self.settings
        if s.exact:
            out["hash"] = normalized_hash128(batch.text, s.normalize)
        if s.fuzzy:
            mh = _minhash_module()
            cfg = mh.MinHashConfig(**{k: v for k, v in s.minhash.items()})
            sigs = mh.signatures(batch.text, cfg)
            out["bands"] = np.ascontiguousarray(mh.band_keys(sigs, s.bands, s.rows), dtype=np.uint64)
        return out

    def empty(self) -> dict[str, np.ndarray]:
        out = {}
        if self.settings.exact:
            out["hash"] = np.zeros((0, 2), np.uint64)
        if self.settings.fuzzy:
            out["bands"] = np.zeros((0, self.settings.bands), np.uint64)
        return out


def _features(corpus: Corpus, settings: IndexSettings) -> tuple[np.ndarray | None, np.ndarray | None]:
    n = len(corpus)
    h = corpus.feature("hash").reshape(n, 2).astype(np.uint64, copy=False) if settings.exact else None
    k = corpus.feature("bands").reshape(n, settings.bands).astype(np.uint64, copy=False) if settings.fuzzy else None
    return h, k


def _segment(corpus: Corpus, settings: IndexSettings, idx: np.ndarray | None = None) -> Segment:
    h, k = _features(corpus, settings)
    if idx is None:
        idx = np.arange(len(corpus), dtype=np.int64)
    return Segment(
        doc_ids=corpus.doc_ids(idx),
        shard_names=[s.shard.name for s in corpus.shards],
        shard_index=corpus.shard_index[idx].astype(np.int32),
        exact=h[idx] if h is not None else None,
        bands=k[idx] if k is not None else None,
    )


def content_key(kind: str, doc_ids: pa.Array, features: Sequence[np.ndarray | None], extra: Any = None) -> str:
    """What a write appends, as a digest: its kind, every doc_id, every key (hash, bands) and options.

    An interrupted ``index add`` or ``check --update`` that had already committed is recognised by
    it when rerun (see :meth:`IndexStore.find_commit`), so its documents are not added twice.
    """
    h = hashlib.sha256(json.dumps({"kind": kind, "extra": extra}, sort_keys=True, default=str).encode())
    ids = doc_ids if isinstance(doc_ids, pa.Array) else pa.array(doc_ids, pa.string())
    h.update(np.ascontiguousarray(hash128(ids)).tobytes())  # per value: the same however the ids are chunked
    h.update(str(len(ids)).encode())
    for f in features:
        if f is not None:
            h.update(np.ascontiguousarray(f).tobytes())
    return h.hexdigest()


@dataclass
class AddResult:
    """What ``index add`` (or ``create --from``) did.

    ``already_indexed``: documents of these inputs found committed by an earlier run of the same
    command (interrupted after its commit), and so not added again.
    """

    location: str
    added: int
    first_doc: int
    documents: int
    bad_records: int
    shards: int
    seconds: float
    already_indexed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def add_inputs(store: IndexStore, inputs: Sequence[str], spec: ReadSpec, workers: int = _S.RunConfig.workers,
               progress: ProgressFactory = no_progress, engine: str = _S.RunConfig.engine) -> AddResult:
    """Scan ``inputs`` with the index's settings and append every good document to ``store``."""
    t0 = time.perf_counter()
    shards = discover(inputs)
    with tempfile.TemporaryDirectory(prefix="dedupkit-index-") as work:
        tasks = plan_tasks(shards, spec, IndexMapper(store.settings), work, "index", workers=workers)
        with get_engine(engine, workers, progress) as eng:
            results = eng.map(run_scan_task, tasks, desc="index: scan", sizes=[task_rows(t) for t in tasks])
        corpus = Corpus(tasks, results, shards)
        corpus.check_unique_ids()
        seg = _segment(corpus, store.settings)
        key = content_key("add", seg.doc_ids, (seg.exact, seg.bands), store.settings.to_dict())
        store.acquire_writer("dedupkit index add")
        try:
            prior = store.find_commit(key)
            first = int(prior["base"]) if prior else store.append(seg, key=key)
        finally:
            store.release_writer()
        bad = corpus.n_bad
    return AddResult(location=store.location, added=0 if prior else len(seg), first_doc=first,
                     documents=store.count, bad_records=bad, shards=len(shards),
                     seconds=round(time.perf_counter() - t0, 3), already_indexed=int(prior["n"]) if prior else 0)


# -- check ----------------------------------------------------------------------------------------

def _group_edges(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges joining every row to the first row of its group of equal keys ((n, k) uint64)."""
    labels = group_labels(keys)
    member = np.flatnonzero(labels >= 0)
    if len(member) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    lab = labels[member]
    order = np.argsort(lab, kind="stable")
    m, lab = member[order], lab[order]
    first = np.r_[True, lab[1:] != lab[:-1]]
    heads = m[first][np.cumsum(first) - 1]
    return m, heads


def band_jaccard(n_bands_shared: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """Jaccard estimate from the share f of LSH bands two documents share: a band agrees with
    probability s**rows, so s ~ f**(1/rows). Coarse (it moves in steps of 1/bands) but monotone."""
    f = np.asarray(n_bands_shared, np.float64) / max(bands, 1)
    return np.power(f, 1.0 / max(rows, 1)).astype(np.float32)


class CheckStage(Stage):
    """Mark the documents of a new drop that duplicate the index, or each other.

    A document whose exact hash is in the index, or that shares LSH bands with an indexed document,
    is dropped and names that document (``matched_doc_id``, ``matched_shard``, ``duplicate_of``).
    The remaining documents are deduplicated among themselves with the same keys (exact hash
    groups, and documents sharing any band), keeping one per group by ``policy``.

    With ``update``, :meth:`identify` takes the index's writer lock before its lookups, and
    :meth:`before_publish` appends the kept documents and lets go, before the output is published
    (the caller calls :meth:`release` too, for a run that fails in between). So a check and its
    update are one step with respect to other writers, and a finished output means a committed
    update.
    """

    name = "check"
    reusable = False  # the index it checks against changes (check --update, index add)

    def __init__(self, store: IndexStore, policy: KeepPolicy = KeepPolicy(), max_dup_rate: float | None = None,
                 update: bool = False):
        self.store = store
        self.settings = store.settings
        self.policy = policy
        self.max_dup_rate = max_dup_rate
        self.update = update
        self.pending: Segment | None = None
        self.commit_key: str | None = None
        self.prior: dict[str, Any] | None = None
        self.lock_wait_s = self.lock_held_s = 0.0
        self._locked_at: float | None = None

    def mapper(self) -> Mapper:
        return IndexMapper(self.settings)

    def read_columns(self) -> tuple[str, ...]:
        return (self.policy.keep_by,) if self.policy.keep_by else ()

    def key(self) -> str:
        import json

        return "check:" + json.dumps(self.settings.to_dict(), sort_keys=True)

    def config_dict(self) -> dict:
        return {"index": self.store.location, "index_documents": self.store.count,
                "index_settings": self.settings.to_dict(), "max_dup_rate": self.max_dup_rate,
                "seed": (self.settings.minhash or {}).get("seed"), **dataclasses.asdict(self.policy)}

    def identify(self, corpus, workdir: str) -> Decisions:
        n = len(corpus)
        s = self.settings
        h, k = _features(corpus, s)
        idx = np.arange(n, dtype=np.int64)
        if self.update:
            # From here to the commit, no other writer changes the index: the lookups below see
            # every earlier commit, and later writers see ours.
            self.commit_key = content_key("check", corpus.doc_ids(), (h, k),
                                          {"settings": s.to_dict(), "policy": dataclasses.asdict(self.policy)})
            t0 = time.perf_counter()
            self.store.acquire_writer("dedupkit check --update")
            self._locked_at = time.perf_counter()
            self.lock_wait_s = self._locked_at - t0
            self.prior = self.store.find_commit(self.commit_key)
            if self.prior is not None:
                # This very check committed in an earlier, interrupted run: decide again against
                # the index as it was then, which gives the same manifest.
                self.store.view_before(self.prior)
        # 1. Against the index: an exact hit wins over a fuzzy one.
        match = np.full(n, -1, np.int64)
        kind = np.zeros(n, np.int8)  # 1 index-exact, 2 index-fuzzy, 3 drop-exact, 4 drop-fuzzy
        score = np.full(n, np.nan, np.float32)
        if n and s.exact:
            match = self.store.lookup_exact(h)
            kind[match >= 0] = 1
            score[match >= 0] = 1.0
        if n and s.fuzzy:
            bm = self.store.lookup_bands(k)
            fz = (match < 0) & (bm.doc >= 0)
            match[fz] = bm.doc[fz]
            kind[fz] = 2
            score[fz] = band_jaccard(bm.n_bands[fz], s.bands, s.rows)
        hit = match >= 0
        # 2. Within the drop, among the documents the index did not match.
        rest = np.flatnonzero(~hit)
        ea, eb = [], []
        if len(rest) and s.exact:
            a, b = _group_edges(h[rest])
            ea.append(a), eb.append(b)
        if len(rest) and s.fuzzy:
            for j in range(s.bands):
                a, b = _group_edges(k[rest, j:j + 1])
                ea.append(a), eb.append(b)
        comp = component_roots(len(rest), np.concatenate(ea) if ea else np.zeros(0, np.int64),
                               np.concatenate(eb) if eb else np.zeros(0, np.int64))
        sizes = np.bincount(comp, minlength=len(rest))
        labels = np.full(n, -1, np.int64)
        in_group = sizes[comp] > 1
        labels[rest[in_group]] = comp[in_group]
        keys = self.policy.priority(n, corpus.lengths,
                                    corpus.extra.get(self.policy.keep_by) if self.policy.keep_by else None)
        rep = choose_representatives(labels, keys)
        dup = (labels >= 0) & (rep != idx)
        if dup.any():
            same = np.all(h[dup] == h[rep[dup]], axis=1) if s.exact else np.zeros(int(dup.sum()), bool)
            kind[np.flatnonzero(dup)[same]] = 3
            kind[np.flatnonzero(dup)[~same]] = 4
            sc = np.ones(int(dup.sum()), np.float32)
            if s.fuzzy and (~same).any():
                shared = (k[dup][~same] == k[rep[dup]][~same]).sum(axis=1)
                sc[~same] = band_jaccard(shared, s.bands, s.rows)
            score[dup] = sc
        score[(labels >= 0) & (rep == idx)] = 1.0
        # Index matches form one cluster per matched indexed document (labels above any drop label).
        labels[hit] = n + match[hit]
        keep = (rep == idx) & ~hit
        # 3. Extra columns: what each drop was matched to.
        m_ids: list[str | None] = [None] * n
        m_shards: list[str | None] = [None] * n
        where = np.flatnonzero(hit)
        if len(where):
            ids, shards = self.store.resolve(match[where])
            for w, i_, sh in zip(where.tolist(), ids, shards):
                m_ids[w], m_shards[w] = i_, sh
        kinds = np.array([None, "index-exact", "index-fuzzy", "drop-exact", "drop-fuzzy"], dtype=object)[kind]
        matched = pa.array(m_ids, pa.string())
        extra = {
            "duplicate_of": matched,  # the runner fills the within-drop ones from the representative
            "matched_doc_id": matched,
            "matched_shard": pa.array(m_shards, pa.string()),
            "match": pa.array(kinds.tolist(), pa.string()),
        }
        considered = n + corpus.n_bad
        dropped = int(n - keep.sum())
        rate = dropped / considered if considered else 0.0
        stats = {
            "index": self.store.location,
            "index_documents": self.store.count,
            "duplicates": dropped,
            "dup_rate": rate,
            "max_dup_rate": self.max_dup_rate,
            "passed": self.max_dup_rate is None or rate <= self.max_dup_rate,
            "index_exact": int((kind == 1).sum()),
            "index_fuzzy": int((kind == 2).sum()),
            "drop_exact": int((kind == 3).sum()),
            "drop_fuzzy": int((kind == 4).sum()),
        }
        self.pending = _segment(corpus, s, np.flatnonzero(keep))
        return Decisions(representative=rep, labels=labels, score=score, extra=extra, keep=keep, stats=stats)

    def before_publish(self, summary: dict[str, Any]) -> None:
        """With ``update`` and a passed check, append the kept documents (once); record the verdict."""
        st = summary["stats"]
        passed = bool(st["passed"])
        added, after, resumed = 0, self.store.count, False
        if self.update and passed and self.pending is not None:
            if self.prior is not None:
                if int(self.prior["n"]) != len(self.pending):
                    raise IndexStoreError(
                        f"{self.store.location}: an earlier run of this check committed {self.prior['n']} documents, "
                        f"this one keeps {len(self.pending)}; the index holds an inconsistent commit: rebuild it")
                added, after, resumed = int(self.prior["n"]), int(self.prior["base"]) + int(self.prior["n"]), True
            elif len(self.pending):
                self.store.append(self.pending, key=self.commit_key)
                point("check: committed, output not yet published")
                added, after = len(self.pending), self.store.count
        self.release()  # committed: other writers may go on while the output is published
        summary["check"] = {"index": self.store.location, "dup_rate": st["dup_rate"],
                            "max_dup_rate": self.max_dup_rate, "passed": passed, "update": self.update,
                            "added_to_index": added, "index_documents_after": after}
        if self.update:
            summary["check"]["lock_wait_s"] = round(self.lock_wait_s, 3)
            summary["check"]["lock_held_s"] = round(self.lock_held_s, 3)
        if resumed:
            summary["check"]["committed_by_an_earlier_run"] = True

    def release(self) -> None:
        """Let go of the index's writer lock (taken by :meth:`identify` with ``update``); idempotent."""
        if self._locked_at is not None:
            self.lock_held_s = time.perf_counter() - self._locked_at
            self._locked_at = None
        self.store.release_writer()


def requested_differences(cur: IndexSettings, stages=None, normalize=None,
                          minhash: dict[str, Any] | None = None) -> list[str]:
    """How explicitly requested settings differ from an index's (None = not requested)."""
    from dedupkit.normalize import parse_steps

    out = []
    if stages is not None:
        want = IndexSettings(stages=tuple(stages.split(",")) if isinstance(stages, str) else tuple(stages),
                             normalize=cur.normalize, minhash=cur.minhash or {"bands": 0}).stages
        if want != cur.stages:
            out.append(f"stages: index has {','.join(cur.stages)}, asked for {','.join(want)}")
    if normalize is not None and parse_steps(normalize) != cur.normalize:
        out.append(f"normalize: index has {','.join(cur.normalize) or 'none'}, asked for "
                   f"{','.join(parse_steps(normalize)) or 'none'}")
    for k, v in (minhash or {}).items():
        if v is None:
            continue
        have = (cur.minhash or {}).get(k)
        if have != v:
            out.append(f"{k.replace('_', '-')}: index has {have!r}, asked for {v!r}")
    return out


@dataclass
class CheckResult:
    """A finished check: the output folder, its summary, the verdict and what --update added."""

    out: Any
    summary: dict[str, Any]
    passed: bool
    dup_rate: float
    added: int = 0

    @property
    def check(self) -> dict[str, Any]:
        return self.summary.get("check", {})


def run_check(store: IndexStore, inputs: Sequence[str], out: str, spec: ReadSpec, *,
              policy: KeepPolicy = KeepPolicy(), max_dup_rate: float | None = None, update: bool = False,
              options=None, progress: ProgressFactory = no_progress,
              requested: dict[str, Any] | None = None) -> CheckResult:
    """Check a drop against ``store``: write OUT/manifest and OUT/summary.json, then (``update`` and
    passed) add the kept documents to the index.

    Args:
        requested: ``stages``, ``normalize``, ``minhash`` the caller asked for explicitly (None = the
            index's); refused when they differ from the index's settings.

    Raises:
        ConfigError: ``requested`` differs from the index's settings.
        CheckFailed: the duplicate rate is above ``max_dup_rate`` (after the manifest is written);
            its ``result`` attribute holds the CheckResult.
    """
    from dedupkit.errors import CheckFailed
    from dedupkit.runner import RunOptions, run_stage

    diff = requested_differences(store.settings, **(requested or {}))
    if diff:
        raise ConfigError(
            f"{store.location} was built with other settings ({'; '.join(diff)}); a check must use the "
            "index's settings: drop those options (the check reads them from the index), or build a "
            "new index with `dedupkit index create --overwrite`")
    if max_dup_rate is not None and not 0.0 <= max_dup_rate <= 1.0:
        raise ConfigError(f"max_dup_rate must be between 0 and 1, got {max_dup_rate}")
    stage = CheckStage(store, policy, max_dup_rate, update=update)
    try:
        res = run_stage(stage, inputs, out, spec, options or RunOptions(), progress)
    finally:
        stage.release()
    st = res.summary["stats"]
    passed = bool(st["passed"])
    added = res.summary["check"]["added_to_index"]
    result = CheckResult(out=res.out, summary=res.summary, passed=passed, dup_rate=st["dup_rate"], added=added)
    if not passed:
        exc = CheckFailed(
            f"the drop's duplicate rate {st['dup_rate']:.2%} ({st['duplicates']} duplicates) is above "
            f"--max-dup-rate {max_dup_rate:g}; the manifest is in {res.out}"
            + ("; the index was not updated" if update else ""))
        exc.result = result  # type: ignore[attr-defined]
        raise exc
    return result
