"""A driver that touches no rows: exact and fuzzy on a distributed engine (``--engine ray``).

On the local engine the driver process holds per-document arrays (rows, lengths, ids, the
decisions) and writes every manifest part: ~200 bytes a document. On a distributed engine this
module runs the whole stage so that the driver only plans tasks, collects their small results
(counts, file names), checks completion and writes the summary; every per-document step runs in
tasks that read and write files under ``OUT/.work`` and ``OUT/.manifest.tmp``:

1. scan (as always): per scan task, rows, ids and MinHash features;
2. ids are unique: ids hashed into partitions, one check per partition (``--id-column`` only);
3. buckets -> candidate pairs -> verification, the fuzzy stage's own partitioned tasks; the char
   measure's n-gram sets are recomputed for the documents each scan task holds, found by a
   task per pair file (not gathered on the driver);
4. components: large-star / small-star, roots kept in partition files
   (:func:`dedupkit.engine.graph.connected_components` with ``assemble=False``);
5. each verified pair joined with its component root (a shuffle by node, then by root), greedy
   centres per root partition, and the decisions written per shard: (document, centre, payload,
   smallest member) rows;
6. one manifest task per shard: its rows, ids, decisions, the doc ids of the centres its dropped
   rows point to (read from those centres' scan tables), cluster ids, reasons; it writes the part.

Exact replaces steps 3-5 with two: each scan task's (hash, global index) rows scattered by hash
partition (:func:`hash_split_task`), and one task per partition that keeps the smallest index of
each hash and writes the same decision rows by shard (:func:`hash_group_task`); step 6 is shared.

A keep policy other than first needs no global sort: each task that compares documents (a band
bucket's star, a hash group, a component's greedy centres) ranks only the documents it holds, from
their lengths and ``--keep-by`` values in the scan tables (:class:`Priority`); the policy's order
restricted to a subset is the subset's own order, so every comparison is the global rank's.

The manifest is the local engine's, byte for byte (tests/engine/test_driver.py). What runs here
(:func:`eligible`), on a distributed engine: exact, and fuzzy with ``cluster = "centre"``, with any
keep policy and no ``--skip``.

Stages that need every document in one process (:data:`ONE_TASK_STAGES`: semantic's neighbour
index, substring's suffix array, decontaminate's gathered details) run the classic identify and
manifest write in **one task** instead of the driver (:func:`run_in_task`, :func:`in_one_task`):
the task builds the corpus from the scan tables, runs the stage's own ``identify`` (its embed or
detail tasks nested on the same cluster) and writes every part and span file; the driver gets
counts and stats back. ``--skip`` still takes the classic path, where the driver reads the earlier
stages' dropped rows and holds per-document arrays. ``apply`` on an engine is in
:mod:`dedupkit.apply` (one task per shard).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from dedupkit.engine import graph

# Payload of a decision row that marks a cluster's centre (a kept row with score 1.0).
CENTRE = np.int64(-1)


def eligible(stage: Any, engine: Any, options: Any) -> bool:
    """True when :func:`run_rowless` can run this stage (see the module doc)."""
    from dedupkit.stages.exact import ExactStage
    from dedupkit.stages.fuzzy import FuzzyStage

    if not getattr(engine, "distributed", False) or not isinstance(stage, (FuzzyStage, ExactStage)):
        return False
    if type(stage).identify not in (FuzzyStage.identify, ExactStage.identify):
        return False  # a subclass that decides otherwise: only its own identify knows how
    if isinstance(stage, FuzzyStage) and stage.config.cluster != "centre":
        return False
    return not options.skip


#: Stages whose decisions need every document in one process: (module, class).
ONE_TASK_STAGES = (("dedupkit.stages.semantic", "SemanticStage"),  # one neighbour index over all embeddings
                   ("dedupkit.stages.substring", "SubstringStage"),  # one suffix array over the corpus
                   ("dedupkit.decontaminate", "DecontaminateStage"))  # per-document spans and details


def in_one_task(stage: Any, engine: Any, options: Any) -> bool:
    """True when the stage identifies in one task on a distributed engine (:func:`run_in_task`):
    one of :data:`ONE_TASK_STAGES` with its own ``identify``, and no ``--skip``."""
    import sys

    if not getattr(engine, "distributed", False) or options.skip:
        return False
    for module, name in ONE_TASK_STAGES:
        cls = getattr(sys.modules.get(module), name, None)  # imported if the stage is one of them
        if cls is not None and isinstance(stage, cls) and type(stage).identify is cls.identify:
            return True
    return False


class LightCorpus:
    """The scanned corpus as the driver sees it: tasks, their sizes and offsets; no rows.

    Enough for the fuzzy stage's task planning (``bucket_tasks``, ``verify_tasks``).
    """

    def __init__(self, tasks: list, results: list, shards: list) -> None:
        from dedupkit.scan import shard_infos

        self.tasks = tasks
        self.results = results
        self.shards, self.shard_offsets = shard_infos(tasks, results, shards)
        self.task_sizes = [int(r.n_good) for r in results]
        self.task_offsets = np.cumsum([0] + self.task_sizes).astype(np.int64)

    def __len__(self) -> int:
        return int(self.task_offsets[-1])

    @property
    def n_bad(self) -> int:
        from dedupkit.scan import Corpus

        return Corpus.n_bad.fget(self)  # the same counts as the classic corpus

    @property
    def bad_records(self) -> list[dict]:
        from dedupkit.scan import Corpus

        return Corpus.bad_records.fget(self)


# --- looking documents up by global index, from the scan tables -------------------------------

@dataclass(frozen=True)
class Lookup:
    """Where every document is: scan tables, their first global index, shard names and row offsets."""

    tables: tuple[str, ...]
    offsets: tuple[int, ...]  # len(tables) + 1
    task_shard: tuple[int, ...]
    shard_names: tuple[str, ...]
    shard_rows: tuple[int, ...]  # global row number of each shard's row 0
    ids: bool

    def find(self, g: np.ndarray, what: str = "doc_id") -> Any:
        """doc ids (pa.Array) or global rows (int64) of documents ``g`` (any order, repeats)."""
        import pyarrow as pa

        g = np.asarray(g, np.int64)
        t = np.searchsorted(np.asarray(self.offsets), g, side="right") - 1
        rows = np.zeros(len(g), np.int64)
        ids = [None] * len(g) if (what == "doc_id" and self.ids) else None
        for ti in np.unique(t).tolist():
            sel = np.flatnonzero(t == ti)
            table = _table(self.tables[ti])
            local = pa.array(g[sel] - self.offsets[ti])
            rows[sel] = table.column("row").take(local).to_numpy()
            if ids is not None:
                for k, v in zip(sel.tolist(), table.column("id").take(local).to_pylist()):
                    ids[k] = v
        shard = np.asarray(self.task_shard, np.int64)[t] if len(g) else np.zeros(0, np.int64)
        if what == "global_row":
            return np.asarray(self.shard_rows, np.int64)[shard] + rows
        if ids is not None:
            return pa.array(ids, pa.string())
        return _doc_ids(np.asarray(self.shard_names, dtype=object), shard, rows)


def _doc_ids(names: np.ndarray, shard: np.ndarray, rows: np.ndarray):
    import pyarrow as pa
    import pyarrow.compute as pc

    if not len(rows):
        return pa.array([], pa.string())
    prefixes = pa.array([n + ":" for n in names], pa.string()).take(pa.array(shard))
    return pc.binary_join_element_wise(prefixes, pc.cast(pa.array(rows), pa.string()), "")


def _table(path: str):
    import pyarrow as pa

    with pa.memory_map(path, "r") as src:
        return pa.ipc.open_file(src).read_all()


# --- keep priority, without a global sort ----------------------------------------------------

@dataclass(frozen=True)
class Priority:
    """Keep-priority ranks of any set of documents, read from the scan tables: no global sort.

    The classic path ranks every document once (:func:`dedupkit.policy.priority_rank`). A task only
    ever compares the documents it holds (a band bucket, a hash group, a component), and the
    policy's order restricted to a subset is the subset's own order: ranking the subset's lengths
    and ``--keep-by`` values among themselves (a dense rank of values is monotonic in them; ties go
    to the lower global index) compares every pair as the global rank does.
    """

    policy: Any  # dedupkit.policy.KeepPolicy
    tables: tuple[str, ...]
    offsets: tuple[int, ...]  # len(tables) + 1
    keep_by_type: Any = None  # the type the classic corpus casts the --keep-by column to

    def ranks(self, g: np.ndarray) -> np.ndarray:
        """int64 ranks of documents ``g`` (global indexes, any order, repeats): lower is kept first;
        only their order among ``g`` means anything."""
        import pyarrow as pa

        from dedupkit.policy import priority_rank

        u, inv = np.unique(np.asarray(g, np.int64), return_inverse=True)
        t = np.searchsorted(np.asarray(self.offsets), u, side="right") - 1
        lengths, values = [], []
        for ti in np.unique(t).tolist():  # ascending: the gathered values stay in the order of u
            table = _table(self.tables[ti])
            local = pa.array(u[t == ti] - self.offsets[ti])
            lengths.append(table.column("length").take(local).to_numpy())
            if self.policy.keep_by:
                values.append(table.column("x_" + self.policy.keep_by).take(local).combine_chunks()
                              .cast(self.keep_by_type))
        by = None
        if self.policy.keep_by:
            by = pa.concat_arrays(values) if values else pa.array([], self.keep_by_type)
        # u ascending: the local index order is the global one (keep last, ties)
        keys = self.policy.priority(len(u), np.concatenate(lengths) if lengths else np.zeros(0, np.int64), by)
        return priority_rank(keys, len(u))[inv.reshape(-1)]


@dataclass(frozen=True)
class CastCheckTask:
    table: str
    column: str
    type: Any
    types: str  # every type seen, for the message


def cast_check_task(task: CastCheckTask) -> int:
    """Refuse a ``--keep-by`` column whose values do not cast to the first shard's type (as the
    classic corpus does)."""
    import pyarrow as pa

    from dedupkit.errors import InputError

    col = _table(task.table).column("x_" + task.column)
    try:
        col.cast(task.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InputError(f"column {task.column!r} has different types in different shards "
                         f"({task.types}); use one type") from exc
    return len(col)


def _priority(stage: Any, corpus: "LightCorpus", tables: tuple[str, ...], engine: Any) -> Priority | None:
    """The stage's keep priority for tasks (None for keep first: the index is the rank)."""
    import pyarrow as pa

    pol = stage.config.policy
    if pol.keep == "first" and not pol.keep_by:
        return None
    typ = None
    if pol.keep_by:
        col = "x_" + pol.keep_by
        seen = []
        for path, r in zip(tables, corpus.results):
            if r.n_good:
                with pa.memory_map(path, "r") as src:
                    seen.append((path, pa.ipc.open_file(src).schema.field(col).type))
        typ = seen[0][1] if seen else pa.null()
        if len({t for _, t in seen}) > 1:
            names = ", ".join(map(str, {t for _, t in seen}))
            engine.map(cast_check_task, [CastCheckTask(p, pol.keep_by, typ, names) for p, t in seen if t != typ],
                       desc="keep-by: types")
        # an unorderable column is refused before any task ranks it, as the classic path does
        pol.priority(0, np.zeros(0, np.int64), pa.array([], typ))
    return Priority(pol, tables, tuple(int(x) for x in corpus.task_offsets), typ)


# --- unique ids ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class IdSplitTask:
    table: str
    offset: int
    prefix: str
    nparts: int


def id_split_task(task: IdSplitTask) -> int:
    """Write this scan task's (id hash, global index) rows by hash partition."""
    import xxhash

    ids = _table(task.table).column("id").to_pylist()
    h = np.fromiter((xxhash.xxh3_64_intdigest(s.encode()) for s in ids), np.uint64, len(ids))
    g = np.arange(len(ids), dtype=np.int64) + task.offset
    part = (h % np.uint64(task.nparts)).astype(np.int64)
    for q in range(task.nparts):
        sel = part == q
        graph._save(f"{task.prefix}-d{q:04d}.npy", np.stack([h[sel].view(np.int64), g[sel]], 1))
    return len(ids)


@dataclass(frozen=True)
class IdCheckTask:
    srcs: tuple[str, ...]
    lookup: Lookup


def id_check_task(task: IdCheckTask) -> list:
    """``[]``, or the global indexes of one duplicated id (equal strings, not just equal hashes)."""
    rows = [np.load(p) for p in task.srcs]
    rows = [r for r in rows if len(r)]
    if not rows:
        return []
    e = np.concatenate(rows)
    e = e[np.lexsort((e[:, 1], e[:, 0]))]
    same = np.flatnonzero(e[1:, 0] == e[:-1, 0])
    for k in same.tolist():
        a, b = int(e[k, 1]), int(e[k + 1, 1])
        ids = task.lookup.find(np.array([a, b])).to_pylist()
        if ids[0] == ids[1]:
            return [a, b]
    return []


# --- decisions: components, roots, greedy centres --------------------------------------------

@dataclass(frozen=True)
class RootJoinTask:
    srcs: tuple[str, ...]  # (i, j, payload) rows whose i is in node partition q
    roots: str  # (node, root) rows of partition q, sorted by node
    prefix: str
    nparts: int


def root_join_task(task: RootJoinTask) -> int:
    """Each edge's component root (the root of its first node); rows scattered by root."""
    e = [np.load(p).reshape(-1, 3) for p in task.srcs]
    e = [x for x in e if len(x)]
    e = np.concatenate(e) if e else np.zeros((0, 3), np.int64)
    nr = np.load(task.roots).reshape(-1, 2)
    root = e[:, 0].copy()
    if len(nr) and len(e):
        pos = np.minimum(np.searchsorted(nr[:, 0], e[:, 0]), len(nr) - 1)
        hit = nr[pos, 0] == e[:, 0]
        root[hit] = nr[pos[hit], 1]
    out = np.concatenate([e, root[:, None]], 1)
    graph._scatter(out, 3, task.prefix, task.nparts)
    return int(len(e))


@dataclass(frozen=True)
class CentreTask:
    srcs: tuple[str, ...]  # (i, j, payload, root) rows of this root partition
    prefix: str
    shard_starts: tuple[int, ...]  # first global index of each shard, and the end
    nshards: int
    priority: Priority | None = None  # None: keep first


def centre_task(task: CentreTask) -> dict:
    """Greedy centres (keep-priority order) of whole components; decision rows written by shard.

    Row: (document, centre, payload, smallest member of the cluster); the centre itself gets a
    row with payload ``CENTRE``.
    """
    from dedupkit.stages.fuzzy import unpack_payload

    e = [np.load(p).reshape(-1, 4) for p in task.srcs]
    e = [x for x in e if len(x)]
    e = np.concatenate(e)[:, :3] if e else np.zeros((0, 3), np.int64)
    if len(e):
        # relabel the nodes 0..k-1 (monotonic); keep first: rank = identity
        nodes, inv = np.unique(e[:, :2], return_inverse=True)
        local = np.concatenate([inv.reshape(-1, 2), e[:, 2:3]], 1)
        rank = task.priority.ranks(nodes) if task.priority is not None else np.arange(len(nodes), dtype=np.int64)
        d, c, pay = graph.centre_clusters(local, rank)
        docs, centre = nodes[d], nodes[c]
    else:
        docs = centre = pay = np.zeros(0, np.int64)
    cs, cinv, csize = np.unique(centre, return_inverse=True, return_counts=True)
    cmin = np.minimum(cs, np.minimum.reduceat(docs[np.argsort(cinv, kind="stable")],
                                              np.r_[0, np.cumsum(csize)[:-1]]) if len(cs) else cs)
    rows = np.concatenate([np.stack([docs, centre, pay, cmin[cinv]], 1),
                           np.stack([cs, cs, np.full(len(cs), CENTRE), cmin], 1)]) if len(cs) \
        else np.zeros((0, 4), np.int64)
    shard = np.searchsorted(np.asarray(task.shard_starts), rows[:, 0], side="right") - 1
    for s in range(task.nshards):
        graph._save(f"{task.prefix}-s{s:05d}.npy", rows[shard == s])
    code = unpack_payload(pay)[1] if len(pay) else np.zeros(0, np.int64)
    return {"dropped": int(len(docs)), "clusters": int(len(cs)),
            "largest": int(csize.max()) + 1 if len(cs) else 0,
            "codes": np.bincount(code[code >= 0], minlength=8).tolist() if len(code) else [0] * 8}


# --- char-measure documents, found by tasks --------------------------------------------------

@dataclass(frozen=True)
class WantedTask:
    src: str  # a pair file
    offsets: tuple[int, ...]
    prefix: str


def wanted_task(task: WantedTask) -> list[int]:
    """The distinct documents of one pair file, written per scan task; counts per scan task."""
    d = np.unique(np.load(task.src))
    t = np.searchsorted(np.asarray(task.offsets), d, side="right") - 1
    counts = []
    for ti in range(len(task.offsets) - 1):
        sel = d[t == ti]
        if len(sel):
            graph._save(f"{task.prefix}-t{ti:05d}.npy", sel)
        counts.append(int(len(sel)))
    return counts


@dataclass(frozen=True)
class MergeTask:
    srcs: tuple[str, ...]
    out: str


def merge_task(task: MergeTask) -> int:
    parts = [np.load(p) for p in task.srcs]
    d = np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
    graph._save(task.out, d)
    return int(len(d))


# --- exact: hash partitions -------------------------------------------------------------------

@dataclass(frozen=True)
class HashSplitTask:
    src: str  # a scan task's (n, 2) uint64 hash feature file
    offset: int  # global index of its first document
    prefix: str
    nparts: int


def hash_split_task(task: HashSplitTask) -> int:
    """Write this scan task's (hash hi, hash lo, global index) rows by hash partition."""
    from dedupkit.io.npy import load_npy

    h = np.asarray(load_npy(task.src, mmap=False)).reshape(-1, 2).astype(np.uint64, copy=False)
    rows = np.concatenate([h.view(np.int64), (np.arange(len(h), dtype=np.int64) + task.offset)[:, None]], 1)
    part = (h[:, 0] % np.uint64(task.nparts)).astype(np.int64) if len(h) else np.zeros(0, np.int64)
    for q in range(task.nparts):
        graph._save(f"{task.prefix}-d{q:04d}.npy", rows[part == q])
    return int(len(h))


@dataclass(frozen=True)
class HashGroupTask:
    srcs: tuple[str, ...]  # (hi, lo, index) rows of this hash partition
    prefix: str
    shard_starts: tuple[int, ...]  # first global index of each shard, and the end
    nshards: int
    priority: Priority | None = None  # None: keep first


def hash_group_task(task: HashGroupTask) -> dict:
    """Equal hashes: the copy the keep policy ranks first is kept; decision rows written by shard.

    Row: (document, kept copy, payload, smallest copy), the fuzzy centres' layout: the kept copy's
    own row has payload ``CENTRE`` (score 1.0), a dropped copy's 0 (score 1.0, no measure).
    """
    e = [np.load(p).reshape(-1, 3) for p in task.srcs]
    e = [x for x in e if len(x)]
    e = np.concatenate(e) if e else np.zeros((0, 3), np.int64)
    e = e[np.lexsort((e[:, 2], e[:, 1], e[:, 0]))]
    start = np.r_[True, (e[1:, 0] != e[:-1, 0]) | (e[1:, 1] != e[:-1, 1])] if len(e) else np.zeros(0, bool)
    group = np.cumsum(start) - 1
    size = np.bincount(group)[group] if len(e) else np.zeros(0, np.int64)
    member = size > 1
    # rows are sorted by index within a group: its first row is its smallest copy
    docs, smallest = e[member, 2], e[start, 2][group[member]]
    keep_at = smallest
    if task.priority is not None and len(docs):
        g = group[member]
        order = np.lexsort((task.priority.ranks(docs), g))
        best = np.r_[True, g[order][1:] != g[order][:-1]]
        keep_at = np.empty_like(docs)
        keep_at[order] = docs[order][best][np.cumsum(best) - 1]
    pay = np.where(docs == keep_at, CENTRE, np.int64(0))
    rows = np.stack([docs, keep_at, pay, smallest], 1)
    shard = np.searchsorted(np.asarray(task.shard_starts), docs, side="right") - 1
    for s in range(task.nshards):
        graph._save(f"{task.prefix}-s{s:05d}.npy", rows[shard == s])
    sizes = np.bincount(group[member]) if member.any() else np.zeros(0, np.int64)
    sizes = sizes[sizes > 0]
    return {"dropped": int(member.sum() - len(sizes)), "clusters": int(len(sizes)),
            "largest": int(sizes.max()) if len(sizes) else 0}


# --- manifest parts ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ManifestTask:
    shard_index: int
    info: Any  # dedupkit.scan.ShardInfo
    stage: str
    kind: str | None
    tables: tuple[str, ...]  # this shard's scan tables, in order
    first: int  # global index of the shard's first active document
    decisions: tuple[str, ...]  # decision rows of this shard, one file per centre partition
    lookup: Lookup
    out: str
    upload: str | None = None  # a remote output folder: the task uploads its part there itself
    measures: bool = True  # fuzzy: payloads hold the score and the measure; exact: score 1.0, no measure


def manifest_task(task: ManifestTask) -> dict:
    """Write one shard's manifest part from its scan tables and decision rows."""
    import pyarrow as pa

    from dedupkit.explain import drop_reasons
    from dedupkit.manifest import part_record, shard_table, write_table_atomic
    from dedupkit.stages.fuzzy import MEASURE_NAMES, unpack_payload

    tables = [_table(p) for p in task.tables]
    rows = np.concatenate([t.column("row").to_numpy() for t in tables]).astype(np.int64) if tables \
        else np.zeros(0, np.int64)
    n = len(rows)
    if task.lookup.ids:
        doc_ids = pa.chunked_array([c for t in tables for c in t.column("id").chunks], pa.string()).combine_chunks() \
            if tables else pa.array([], pa.string())
    else:
        doc_ids = _doc_ids(np.array([task.info.shard.name], dtype=object), np.zeros(n, np.int64), rows)
    d = [np.load(p).reshape(-1, 4) for p in task.decisions]
    d = [x for x in d if len(x)]
    d = np.concatenate(d) if d else np.zeros((0, 4), np.int64)
    keep = np.ones(n, bool)
    score = np.full(n, np.nan, np.float32)
    code = np.full(n, -1, np.int64)
    cid = np.full(n, -1, np.int64)
    at = d[:, 0] - task.first
    member_rows = task.lookup.find(d[:, 3], "global_row") if len(d) else np.zeros(0, np.int64)
    cid[at] = member_rows
    is_centre = d[:, 2] == CENTRE
    score[at[is_centre]] = 1.0
    dropped = ~is_centre
    keep[at[dropped]] = False
    if dropped.any() and task.measures:
        score[at[dropped]], code[at[dropped]] = unpack_payload(d[dropped, 2])
    elif dropped.any():
        score[at[dropped]] = 1.0
    # doc id of each dropped row's centre (another shard's, possibly): null for kept rows
    order = np.argsort(at[dropped], kind="stable")
    drop_at = at[dropped][order]
    centre_ids = task.lookup.find(d[dropped, 1][order]) if len(drop_at) else pa.array([], pa.string())
    slot = np.full(n, -1, np.int64)
    slot[drop_at] = np.arange(len(drop_at))
    dup_of = centre_ids.take(pa.array(np.where(slot >= 0, slot, 0), mask=slot < 0)) if n else pa.array([], pa.string())
    extra = {}
    if task.measures:
        names = np.array(MEASURE_NAMES, dtype=object)
        extra["measure"] = pa.array(np.where(code >= 0, names[np.maximum(code, 0)], None), pa.string())
    reasons = drop_reasons(task.stage, keep, dup_of, score, extra, task.kind)
    info = task.info
    table = shard_table(
        shard=info.shard.name, n_rows=info.n_rows, stage=task.stage, active_rows=rows, doc_ids=doc_ids,
        keep=keep, cluster_id=cid, duplicate_of=dup_of, score=score, bad=info.bad_table(), bad_doc_ids=None,
        prior=None, extra=extra, extra_types={c: pa.string() for c in extra}, reason=reasons,
    )
    write_table_atomic(table, Path(task.out))
    record = part_record(task.out, table.num_rows)
    if task.upload:
        from dedupkit.io import fs
        from dedupkit.manifest import MANIFEST_DIR

        fs.RemoteFolder(task.upload).upload(task.out, f"{MANIFEST_DIR}/{record['file']}")
    return {"active": n, "kept": int(keep.sum()), "part": record}


# --- the whole stage ----------------------------------------------------------------------------

def run_rowless(stage: Any, corpus: LightCorpus, work: Path, tmp_manifest: Path, engine: Any,
                kind: str | None, spec: Any, check_drop_rate,
                publish_to: str | None = None) -> tuple[dict, dict, list[dict]]:
    """Identify and write every manifest part on the engine; returns ``(counts, stats, parts)``.

    ``check_drop_rate(dropped_by_stage, considered)`` runs before any part is written (the
    ``--max-drop-rate`` guardrail). ``parts``: the parts' records (``summary.json``'s
    ``manifest_parts``), made by the tasks that wrote them. ``publish_to``: a remote output folder;
    its completion markers are deleted first, then every manifest task uploads its own part there
    (the driver never holds a part; publishing the staging folder skips them).
    """
    from dedupkit.stages.exact import ExactStage

    work.mkdir(parents=True, exist_ok=True)
    tasks = corpus.tasks
    tables = tuple(str(Path(t.workdir) / f"task-{t.index:05d}.arrow") for t in tasks)
    lookup = Lookup(tables, tuple(int(x) for x in corpus.task_offsets), tuple(t.shard_index for t in tasks),
                    tuple(s.shard.name for s in corpus.shards), tuple(int(x) for x in corpus.shard_offsets[:-1]),
                    bool(spec.id_column))
    if spec.id_column and len(corpus) > 1:
        _check_unique_ids(corpus, tables, lookup, work, engine, spec.id_column)
    # first global index of each shard's documents (and the end): decision rows go to their shard
    shard_starts = tuple(int(x) for x in np.searchsorted(
        np.asarray([t.shard_index for t in tasks]), np.arange(len(corpus.shards) + 1), side="left"))
    shard_first = tuple(int(corpus.task_offsets[min(i, len(tasks))]) for i in shard_starts)
    exact = isinstance(stage, ExactStage)
    decide = _exact_decisions if exact else _fuzzy_decisions
    priority = _priority(stage, corpus, tables, engine)
    prefixes, cres, stats = decide(stage, corpus, work, engine, shard_first, priority)
    dropped = sum(r["dropped"] for r in cres)
    n = len(corpus)
    check_drop_rate(dropped + corpus.n_bad, n + corpus.n_bad)

    if publish_to:
        from dedupkit.io import fs

        fs.RemoteFolder(publish_to).unfinish()  # before any new part lands there
    mtasks = [ManifestTask(si, corpus.shards[si], stage.name, kind,
                           tables[shard_starts[si]:shard_starts[si + 1]], shard_first[si],
                           tuple(f"{p}-s{si:05d}.npy" for p in prefixes), lookup,
                           str(tmp_manifest / f"part-{si:05d}.parquet"), publish_to, measures=not exact)
              for si in range(len(corpus.shards))]
    mres = engine.map(manifest_task, mtasks, desc=f"{stage.name}: manifest")
    counts = {"active": n, "kept": sum(r["kept"] for r in mres), "clusters": sum(r["clusters"] for r in cres),
              "largest_cluster": max((r["largest"] for r in cres), default=0)}
    return counts, stats, [r["part"] for r in mres]


def _check_unique_ids(corpus: LightCorpus, tables: tuple[str, ...], lookup: Lookup, work: Path, engine: Any,
                      id_column: str) -> None:
    """Refuse a duplicated ``--id-column`` value: ids hashed into partitions, one check each."""
    from dedupkit.errors import InputError

    q = graph.partitions_for(len(corpus), 8_000_000)
    split = [IdSplitTask(tables[i], int(corpus.task_offsets[i]), str(work / f"ids-t{i:05d}"), q)
             for i in range(len(corpus.tasks))]
    engine.map(id_split_task, split, desc="ids: partition")
    dups = engine.map(id_check_task, [IdCheckTask(tuple(f"{s.prefix}-d{k:04d}.npy" for s in split), lookup)
                                      for k in range(q)], desc="ids: check")
    dup = next((x for x in dups if x), None)
    if dup:
        value = lookup.find(np.array(dup[:1])).to_pylist()[0]
        rows = lookup.find(np.array(dup), "global_row")
        places = []
        for g in rows.tolist():
            s = int(np.searchsorted(np.asarray(corpus.shard_offsets), g, side="right") - 1)
            places.append(f"{corpus.shards[s].shard.name} row {g - int(corpus.shard_offsets[s])}")
        raise InputError(f"id {value!r} in column {id_column!r} occurs more than once "
                         f"({' and '.join(places)}); ids must be unique: fix the data, or drop "
                         "--id-column to use \"{shard}:{row}\" ids")


#: Hash rows (24 bytes each) per exact partition task.
HASHES_PER_PARTITION = 4_000_000


def _exact_decisions(stage: Any, corpus: LightCorpus, work: Path, engine: Any, shard_first: tuple[int, ...],
                     priority: Priority | None) -> tuple[list[str], list[dict], dict]:
    """Exact: hashes scattered by partition, one grouping task per partition."""
    import time

    t0 = time.perf_counter()
    tasks = corpus.tasks
    q = graph.partitions_for(len(corpus), HASHES_PER_PARTITION)
    split = [HashSplitTask(str(Path(t.workdir) / f"task-{t.index:05d}.hash.npy"), int(corpus.task_offsets[i]),
                           str(work / f"hashes-t{i:05d}"), q) for i, t in enumerate(tasks)]
    engine.map(hash_split_task, split, desc="exact: partition hashes")
    groups = [HashGroupTask(tuple(f"{s.prefix}-d{k:04d}.npy" for s in split), str(work / f"decisions-p{k:04d}"),
                            shard_first, len(corpus.shards), priority) for k in range(q)]
    cres = engine.map(hash_group_task, groups, desc="exact: group")
    stats = {"global_step": {"mode": "rowless", "hash_partitions": q},
             "timings": {"group_s": round(time.perf_counter() - t0, 3)}}
    return [g.prefix for g in groups], cres, stats


def _fuzzy_decisions(stage: Any, corpus: LightCorpus, work: Path, engine: Any, shard_first: tuple[int, ...],
                     priority: Priority | None) -> tuple[list[str], list[dict], dict]:
    """Fuzzy: buckets -> candidates -> verification -> components -> greedy centres."""
    import time

    from dedupkit.stages.fuzzy import partitioned as fp
    from dedupkit.stages.fuzzy import tasks as fz

    n = len(corpus)
    t0 = time.perf_counter()
    # buckets -> candidates -> verification: the stage's own partitioned tasks
    paths, offsets, nparts, btasks = stage.bucket_tasks(corpus, work, "")
    if priority is not None:  # a bucket's members in keep-priority order (the star's centre)
        btasks = (btasks[0], [replace(b, priority=priority) for b in btasks[1]])
    n_empty, bres, cand, n_candidates = fp.candidate_pairs(stage, n, paths, btasks, work, engine)
    t1 = time.perf_counter()
    verified, vres = _verify(stage, corpus, cand, paths, offsets, work, engine) if n_candidates else ([], [])
    t2 = time.perf_counter()

    # components (roots stay in files), root join, greedy centres -> decision rows by shard
    cres: list[dict] = []
    cc = {"partitions": 0, "rounds": 0}
    centre_prefixes: list[str] = []
    n_edges = sum(fp._rows(f) for f in verified)
    if n_edges:
        q = graph.partitions_for(2 * n_edges)
        roots, cc = graph.connected_components(n, verified, work / "components", engine, nparts=q, assemble=False)
        by_node = [graph.SplitTask(f, str(work / f"edges-s{i:05d}"), q, "first3") for i, f in enumerate(verified)]
        engine.map(_split3_task, by_node, desc="centres: partition by node")
        joins = [RootJoinTask(tuple(f"{s.prefix}-d{k:04d}.npy" for s in by_node), roots[k],
                              str(work / f"joined-p{k:04d}"), q) for k in range(q)]
        engine.map(root_join_task, joins, desc="centres: join roots")
        centres = [CentreTask(tuple(f"{j.prefix}-d{k:04d}.npy" for j in joins), str(work / f"decisions-p{k:04d}"),
                              shard_first, len(corpus.shards), priority) for k in range(q)]
        cres = engine.map(centre_task, centres, desc="centres: greedy")
        centre_prefixes = [c.prefix for c in centres]
    t3 = time.perf_counter()
    stats = stage.base_stats(n_empty, nparts, n_candidates, vres)
    stats["bucket_bytes_read_per_task"] = fz.bucket_bytes(bres)
    codes = np.sum([r["codes"] for r in cres], axis=0) if cres else np.zeros(8, np.int64)
    stats["decided_by"] = {fz.MEASURE_NAMES[c]: int(k) for c, k in enumerate(codes.tolist()) if k}
    stats["global_step"] = {"mode": "rowless", "pair_partitions": len(cand),
                            "component_partitions": cc["partitions"], "component_rounds": cc["rounds"]}
    stats["timings"] = {"buckets_s": round(t1 - t0, 3), "verify_s": round(t2 - t1, 3),
                        "clusters_s": round(t3 - t2, 3)}
    return centre_prefixes, cres, stats


def _split3_task(task: graph.SplitTask) -> int:
    """Scatter one verified-pair file's (i, j, payload) rows by the partition of i."""
    e = np.load(task.src)
    e = e.reshape(-1, 3) if len(e) else np.zeros((0, 3), np.int64)
    graph._scatter(e, 0, task.prefix, task.nparts)
    return int(len(e))


def _verify(stage: Any, corpus: LightCorpus, files: list[str], paths, offsets, work: Path, engine):
    """:meth:`FuzzyStage.verify` with the char measure's documents found by tasks, not the driver."""
    from dedupkit.stages.fuzzy import tasks as fz

    def char_sets(files: list[str]) -> tuple[str, ...]:
        offs = tuple(int(x) for x in corpus.task_offsets)
        wt = [WantedTask(f, offs, str(work / f"want-f{k:05d}")) for k, f in enumerate(files)]
        counts = engine.map(wanted_task, wt, desc="fuzzy: documents to re-read")
        merges = []
        for ti in range(len(corpus.tasks)):
            srcs = tuple(f"{w.prefix}-t{ti:05d}.npy" for w, c in zip(wt, counts) if c[ti])
            if srcs:
                merges.append((ti, MergeTask(srcs, str(work / f"wanted-{ti:05d}.npy"))))
        if not merges:
            return ()
        engine.map(merge_task, [m for _, m in merges], desc="fuzzy: documents to re-read")
        sets = [fz.ShingleSetTask(corpus.tasks[ti], int(corpus.task_offsets[ti]), m.out, stage.config.minhash,
                                  str(work / f"sets-{ti:05d}"), False, stage.config.char_ngram)
                for ti, m in merges]
        engine.map(fz.shingle_set_task, sets, desc="fuzzy: shingle sets")
        return tuple(t.out for t in sets)

    return stage.verify(corpus, files, paths, offsets, work, engine, "p", char_sets)


# --- a stage that needs every document in one process: one task, not the driver ------------------

@dataclass(frozen=True)
class StageTask:
    stage: Any
    tasks: list  # the scan tasks and their results: the task builds the corpus itself
    results: list
    shards: list
    options: Any  # dedupkit.runner.RunOptions
    work: str
    tmp: str  # the manifest staging folder the parts go to


def stage_task(task: StageTask) -> dict:
    """Build the corpus, identify (the stage's own ``identify``, its own per-shard steps as nested
    tasks on the same cluster) and write every manifest part: the classic path's per-document
    arrays live in this task, not on the driver. Returns counts, stats and the span counts."""
    from dedupkit.engine import get_engine
    from dedupkit.scan import Corpus
    from dedupkit.spans import read_spans, span_counts
    from dedupkit.stage_manifest import write_decisions

    corpus = Corpus(task.tasks, task.results, task.shards)
    corpus.check_unique_ids()
    stage = task.stage
    Path(task.work).mkdir(parents=True, exist_ok=True)
    # inside a task Ray is connected: the engine submits to the same cluster (this task's CPU is
    # lent back while it waits)
    with get_engine("ray", task.options.workers) as engine:
        stage.engine = engine
        decisions = stage.identify(corpus, task.work)
    stage.engine = None
    n, kept, clusters, largest = write_decisions(stage, corpus, decisions, {}, task.options, Path(task.tmp))
    spans = str(decisions.spans) if decisions.spans is not None else None
    return {"active": n, "kept": kept, "clusters": clusters, "largest_cluster": largest, "stats": decisions.stats,
            "spans": spans, "span_counts": span_counts(read_spans(spans)) if spans else None,
            "analysis": getattr(stage, "analysis", None)}


def run_in_task(stage: Any, corpus: LightCorpus, work: Path, tmp_manifest: Path, engine: Any,
                options: Any) -> dict:
    """:func:`stage_task` as one task of ``engine``; the driver gets counts and stats back."""
    res = engine.map(stage_task, [StageTask(stage, corpus.tasks, corpus.results, [s.shard for s in corpus.shards],
                                            options, str(work), str(tmp_manifest))],
                     desc=f"{stage.name}: identify")[0]
    if hasattr(stage, "analysis"):
        stage.analysis = res["analysis"]  # api.semantic writes it next to the output
    return res
