"""What a report shows, computed from a finished output folder: per-stage counts and settings,
pre-aggregated histograms, a bounded selection of clusters and their texts.

Everything here is sized independently of the corpus: histograms are binned in Python, clusters
are sampled (the largest ones plus a seeded random sample), member lists and texts are truncated.
A million-row run therefore gives a page of the same order of size as a thousand-row run.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dedupkit import settings as _S
from dedupkit.errors import DedupkitError, InputError, ManifestError
from dedupkit.manifest import MANIFEST_DIR, SUMMARY, load_summary, open_manifest, output_root, read_manifest
from dedupkit.report.diff import diff_stats, word_diff

_STAGE_DIR = re.compile(r"^(\d+)[-_](.+)$")
MANIFEST_COLUMNS = ["shard", "row", "doc_id", "keep", "cluster_id", "duplicate_of", "score", "stage"]


@dataclass
class StageRun:
    """One stage's finished output inside the folder given to the report.

    Attributes:
        name: the stage name (``exact``, ``fuzzy``, ...).
        label: how the page names it (the sub-folder name for a pipeline run).
        path: the stage's output folder (holding ``manifest/`` and ``summary.json``).
        summary: its ``summary.json``.
    """

    name: str
    label: str
    path: Path
    summary: dict[str, Any]


@dataclass
class RunInfo:
    """A stage output folder, or a pipeline run's folder with one sub-folder per stage."""

    root: Path
    summary: dict[str, Any]
    stages: list[StageRun]
    pipeline: bool
    complete: bool = True


def load_run(out: str | os.PathLike) -> RunInfo:
    """Find the stage outputs under ``out``.

    ``out`` is either one stage's output (``manifest/`` + ``summary.json``) or a ``dedupkit run``
    folder whose ``NN-stage/`` sub-folders each hold a finished stage output.

    Raises:
        ManifestError: ``out`` is not a finished dedupkit output.
    """
    root = output_root(out)
    if not root.is_dir():
        raise ManifestError(f"{root}: no such output folder; pass the -o folder of a finished run")
    stages: list[StageRun] = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in (MANIFEST_DIR,)
                      and not p.name.startswith(".")):
        if not ((sub / SUMMARY).is_file() and (sub / MANIFEST_DIR).is_dir()):
            continue
        s = load_summary(sub)
        m = _STAGE_DIR.match(sub.name)
        name = str(s.get("stage") or (m.group(2) if m else sub.name))
        stages.append(StageRun(name=name, label=sub.name, path=sub, summary=s))
    if stages:
        if (root / SUMMARY).is_file():
            # the combined manifest is checked too: the page's totals come from its summary
            return RunInfo(root=root, summary=open_manifest(root).summary, stages=stages, pipeline=True)
        # A pipeline that stopped part-way: its finished stages are still worth a look, and the
        # page says the run is incomplete.
        return RunInfo(root=root, summary={}, stages=stages, pipeline=True, complete=False)
    summary = load_summary(root)
    name = str(summary.get("stage") or root.name)
    return RunInfo(root=root, summary=summary, stages=[StageRun(name, name, root, summary)], pipeline=False)


# -- settings read defensively from summaries ----------------------------------------------------

def _dicts(summary: dict) -> list[dict]:
    """The places a stage may record its parameters: config.stage (and nested dicts), stats."""
    cfg = summary.get("config") if isinstance(summary.get("config"), dict) else {}
    out: list[dict] = []
    for d in (cfg.get("stage"), summary.get("stats"), cfg):
        if isinstance(d, dict):
            out.append(d)
            out.extend(v for v in d.values() if isinstance(v, dict))
    return out


def _num(v: Any) -> float | None:
    if isinstance(v, (list, tuple)) and len(v) == 1:  # e.g. SemDeDup's eps list with one value
        v = v[0]
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def stage_threshold(summary: dict) -> float | None:
    """The similarity threshold a stage used (fuzzy Jaccard, semantic cosine), if it recorded one."""
    for d in _dicts(summary):
        for key in ("threshold", "similarity_threshold", "jaccard_threshold", "min_similarity"):
            v = _num(d.get(key))
            if v is not None and 0.0 <= v <= 1.0:
                return v
    for d in _dicts(summary):
        v = _num(d.get("eps"))
        if v is not None and 0.0 <= v <= 1.0:
            return round(1.0 - v, 6)  # SemDeDup: a duplicate has cosine >= 1 - eps
    return None


def lsh_params(summary: dict) -> tuple[int, int] | None:
    """``(bands, rows)`` of a MinHash-LSH stage, if its summary records them."""
    for d in _dicts(summary):
        for kb, kr in (("bands", "rows"), ("num_bands", "rows_per_band"), ("lsh_bands", "lsh_rows"),
                       ("b", "r")):
            b, r = d.get(kb), d.get(kr)
            if isinstance(b, (int, np.integer)) and isinstance(r, (int, np.integer)) \
                    and not isinstance(b, bool) and not isinstance(r, bool) and b >= 1 and r >= 1:
                return int(b), int(r)
    return None


def lsh_curve(bands: int, rows: int, points: int = 101) -> list[list[float]]:
    """Probability that LSH makes two documents of Jaccard similarity s candidates.

    One band matches with probability s**rows (all its rows agree); the pair is a candidate when
    at least one of the ``bands`` bands matches: P(s) = 1 - (1 - s**rows)**bands.
    """
    s = np.linspace(0.0, 1.0, points)
    p = 1.0 - (1.0 - s ** rows) ** bands
    return [[round(float(a), 4), round(float(b), 5)] for a, b in zip(s, p)]


# -- histograms -----------------------------------------------------------------------------------

def _size_edges(max_size: int) -> list[int]:
    """Bin edges for cluster sizes: 2..10 one by one, then a 1-2-5 sequence."""
    edges = list(range(2, 12))
    step = 10
    while edges[-1] <= max_size:
        for m in (2, 5, 10):
            edges.append(step * m + 1)
        step *= 10
    return [e for i, e in enumerate(edges) if i == 0 or edges[i - 1] <= max_size]


def size_histogram(sizes: np.ndarray) -> dict[str, Any]:
    """Clusters (and documents in them) per cluster-size bin."""
    if len(sizes) == 0:
        return {"labels": [], "clusters": [], "docs": []}
    edges = _size_edges(int(sizes.max()))
    idx = np.searchsorted(edges, sizes, side="right") - 1
    labels, clusters, docs = [], [], []
    for i in range(len(edges) - 1):
        lo, hi = edges[i], edges[i + 1] - 1
        sel = idx == i
        labels.append(str(lo) if lo == hi else f"{lo}-{hi}")
        clusters.append(int(sel.sum()))
        docs.append(int(sizes[sel].sum()))
    while labels and clusters[-1] == 0:
        labels.pop(), clusters.pop(), docs.pop()
    return {"labels": labels, "clusters": clusters, "docs": docs}


def score_histogram(scores: np.ndarray, threshold: float | None, bins: int = 40) -> dict[str, Any]:
    """Dropped documents per similarity-score bin, over [lo, 1] where lo covers the threshold."""
    scores = scores[np.isfinite(scores)]
    if len(scores) == 0:
        return {"edges": [], "counts": [], "threshold": threshold, "n": 0}
    lo = float(min(scores.min(), threshold if threshold is not None else 1.0))
    lo = math.floor(lo * 20) / 20
    hi = max(1.0, float(scores.max()))
    if hi - lo < 0.05:
        lo = hi - 0.05
    counts, edges = np.histogram(scores, bins=bins, range=(lo, hi))
    return {"edges": [round(float(e), 5) for e in edges], "counts": counts.astype(int).tolist(),
            "threshold": threshold, "n": int(len(scores)), "min": float(scores.min()),
            "median": float(np.median(scores))}


# -- clusters ----------------------------------------------------------------------------------------

@dataclass
class Member:
    doc_id: str
    shard: str
    row: int
    keep: bool
    score: float | None
    text: str | None = None
    truncated: bool = False
    diff: list[tuple[str, str]] | None = None
    words: dict[str, Any] | None = None  # diff_stats of the whole diff, before clipping


@dataclass
class Cluster:
    stage: str
    cluster_id: int
    size: int
    representative: Member
    duplicates: list[Member]
    hidden: int = 0  # members not listed (beyond the per-cluster cap)
    kept_others: int = 0  # further kept members (stages that keep more than one per cluster)

    @property
    def key(self) -> str:
        return f"{self.stage}:{self.cluster_id}"


@dataclass
class StageTable:
    """A stage's own manifest rows as numpy arrays (rows another stage decided are left out)."""

    run: StageRun
    doc_id: pa.Array
    shard: pa.Array
    row: np.ndarray
    keep: np.ndarray
    cid: np.ndarray
    score: np.ndarray
    dup_of: pa.Array
    order: np.ndarray = field(init=False)
    starts: np.ndarray = field(init=False)
    cluster_values: np.ndarray = field(init=False)
    cluster_sizes: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        clustered = np.nonzero(self.cid >= 0)[0]
        order = clustered[np.argsort(self.cid[clustered], kind="stable")]
        vals = self.cid[order]
        if len(vals):
            change = np.concatenate([[True], vals[1:] != vals[:-1]])
            self.starts = np.concatenate([np.nonzero(change)[0], [len(vals)]])
            self.cluster_values = vals[change]
        else:
            self.starts = np.zeros(1, np.int64)
            self.cluster_values = np.zeros(0, np.int64)
        self.order = order
        self.cluster_sizes = np.diff(self.starts)

    def members(self, cluster_id: int) -> np.ndarray:
        """Manifest positions of one cluster's members, or an empty array."""
        i = int(np.searchsorted(self.cluster_values, cluster_id))
        if i >= len(self.cluster_values) or self.cluster_values[i] != cluster_id:
            return np.zeros(0, np.int64)
        return self.order[self.starts[i]:self.starts[i + 1]]


def stage_table(run: StageRun) -> StageTable:
    """Read the rows of ``run``'s manifest that its own stage decided."""
    t = read_manifest(run.path, columns=MANIFEST_COLUMNS)
    stages = t.column("stage")
    if pc.any(pc.not_equal(stages, run.name)).as_py():
        own = t.filter(pc.equal(stages, run.name))
        # A summary whose stage name the manifest does not use: show every row rather than none.
        if len(own):
            t = own
    return StageTable(
        run=run,
        doc_id=t.column("doc_id").combine_chunks(),
        shard=t.column("shard").combine_chunks(),
        row=t.column("row").to_numpy(),
        keep=t.column("keep").to_numpy(zero_copy_only=False).astype(bool),
        cid=t.column("cluster_id").fill_null(-1).to_numpy(),
        score=t.column("score").cast(pa.float64()).fill_null(np.nan).to_numpy(),
        dup_of=t.column("duplicate_of").combine_chunks(),
    )


def build_cluster(st: StageTable, cluster_id: int, max_members: int) -> Cluster | None:
    """One cluster with its representative and (up to ``max_members``) duplicates, texts not loaded.

    Duplicates are listed by ascending score: the least similar ones are those that tell whether
    the threshold is too aggressive.
    """
    pos = st.members(cluster_id)
    if len(pos) == 0:
        return None

    def member(i: int) -> Member:
        s = st.score[i]
        return Member(doc_id=st.doc_id[i].as_py(), shard=st.shard[i].as_py(), row=int(st.row[i]),
                      keep=bool(st.keep[i]), score=None if np.isnan(s) else float(s))

    pos = np.sort(pos)  # manifest order = (shard, row) order
    keep = st.keep[pos]
    kept, dropped = pos[keep], pos[~keep]
    rep_i = None
    if len(dropped):
        target = st.dup_of[int(dropped[0])].as_py()
        for i in kept[:1000].tolist():
            if st.doc_id[i].as_py() == target:
                rep_i = i
                break
    if rep_i is None:
        rep_i = int(kept[0]) if len(kept) else int(pos[0])
    others = pos[pos != rep_i]
    # Dropped before kept, then ascending score (no score last), then (shard, row).
    order = np.lexsort((others, np.nan_to_num(st.score[others], nan=2.0), st.keep[others]))
    shown = others[order[:max_members]]
    rep = member(rep_i)
    return Cluster(stage=st.run.name, cluster_id=int(cluster_id), size=len(pos), representative=rep,
                   duplicates=[member(int(i)) for i in shown], hidden=len(others) - len(shown),
                   kept_others=max(0, len(kept) - (1 if rep.keep else 0)))


def select_clusters(st: StageTable, largest: int, sample: int, seed: int = _S.ReportConfig.seed,
                    show_all_below: int = 0) -> tuple[list[int], list[int], bool]:
    """Pick the largest clusters and a seeded random sample of the others.

    Returns:
        ``(largest_ids, sample_ids, complete)``; ``complete`` is true when every cluster is listed.
    """
    vals, sizes = st.cluster_values, st.cluster_sizes
    n = len(vals)
    if n == 0:
        return [], [], True
    by_size = np.lexsort((vals, -sizes))
    if n <= max(show_all_below, largest):
        return [int(v) for v in vals[by_size]], [], True
    top = by_size[:largest]
    rest = np.setdiff1d(np.arange(n), top)
    rng = np.random.default_rng(seed)
    k = min(sample, len(rest))
    pick = np.sort(rng.choice(rest, size=k, replace=False)) if k else np.zeros(0, np.int64)
    return [int(v) for v in vals[top]], [int(v) for v in vals[pick]], k == len(rest)


# -- texts from the original shards ----------------------------------------------------------------

def _input_index(summary: dict) -> dict[str, dict]:
    out = {}
    for s in summary.get("inputs", []) or []:
        if isinstance(s, dict) and s.get("name"):
            out[str(s["name"])] = s
    return out


def _text_column(summary: dict) -> str:
    read = (summary.get("config") or {}).get("read") or {}
    return str(read.get("text_column") or "text")


def load_texts(summary: dict, wanted: Iterable[tuple[str, int]], max_chars: int,
               check_fingerprint: bool = True) -> tuple[dict[tuple[str, int], tuple[str, bool]], list[str]]:
    """Read the texts of ``(shard, row)`` pairs from the shards named in ``summary["inputs"]``.

    Only the Parquet row groups (or JSONL lines) that hold wanted rows are decoded. A shard that
    moved or changed since the run gives no texts and a note saying why.

    Returns:
        ``({(shard, row): (text, truncated)}, notes)``.
    """
    from dedupkit.io.read import ReadSpec, read_rows
    from dedupkit.io.shards import Shard, fingerprint

    by_shard: dict[str, set[int]] = {}
    for shard, row in wanted:
        by_shard.setdefault(shard, set()).add(int(row))
    inputs = _input_index(summary)
    col = _text_column(summary)
    # bad records are left out (not shown); small batches: reading stops at the last wanted row
    spec = ReadSpec(text_column=col, on_bad_record="skip", batch_size=256)
    texts: dict[tuple[str, int], tuple[str, bool]] = {}
    notes: list[str] = []

    def put(shard: str, row: int, value: Any) -> None:
        if not isinstance(value, str):
            return
        cut = len(value) > max_chars
        texts[(shard, row)] = (value[:max_chars] if cut else value, cut)

    for name, rows in sorted(by_shard.items()):
        info = inputs.get(name)
        if info is None or not info.get("path"):
            notes.append(f"texts of {name} unavailable: the summary does not name its file")
            continue
        path = str(info["path"])
        if not os.path.exists(path):
            notes.append(f"texts of {name} unavailable: {path} no longer exists")
            continue
        if not os.path.isfile(path):  # a FIFO or device named by a summary would block or never end
            notes.append(f"texts of {name} not shown: {path} is not a regular file")
            continue
        if info.get("size") is not None and os.path.getsize(path) != info.get("size"):
            notes.append(f"texts of {name} not shown: {path} changed size since the run")
            continue
        if check_fingerprint and info.get("fingerprint") and fingerprint(path) != info["fingerprint"]:
            notes.append(f"texts of {name} not shown: {path} changed since the run (fingerprint differs)")
            continue
        fmt = info.get("format") or ("parquet" if path.endswith((".parquet", ".pq")) else "jsonl")
        shard = Shard(name=name, path=path, format=fmt, compression=info.get("compression"))
        n_rows = info.get("rows") if isinstance(info.get("rows"), int) else max(rows) + 1
        try:
            found, values = read_rows(shard, spec, sorted(rows), n_rows)
        except (OSError, DedupkitError) as exc:
            notes.append(f"texts of {name} unavailable: cannot read {path} ({exc})")
            continue
        for r, v in zip(found.tolist(), values):
            put(name, r, v)
    return texts, notes


DIFF_CHARS = 20000


def attach_texts(clusters: list[Cluster], summary: dict, max_chars: int,
                 diff_chars: int = DIFF_CHARS) -> list[str]:
    """Load the texts of every listed member, diff each duplicate against its representative, and
    cut what is shown to ``max_chars``.

    The diff looks at up to ``diff_chars`` characters of each text, so cutting the display does
    not make two copies look different at the cut; word counts are those of the whole diff.
    """
    wanted = []
    for c in clusters:
        for m in [c.representative, *c.duplicates]:
            wanted.append((m.shard, m.row))
    texts, notes = load_texts(summary, wanted, max(max_chars, diff_chars))
    for c in clusters:
        for m in [c.representative, *c.duplicates]:
            got = texts.get((m.shard, m.row))
            if got is not None:
                m.text, m.truncated = got
        rep = c.representative.text
        for m in c.duplicates:
            if rep is not None and m.text is not None:
                m.diff = word_diff(rep, m.text)
                m.words = dict(diff_stats(m.diff))
                if m.words["removed"] or m.words["added"]:
                    m.words["same_ignoring_case"] = rep.lower().split() == m.text.lower().split()
        for m in [c.representative, *c.duplicates]:
            if m.text is not None and len(m.text) > max_chars:
                m.text, m.truncated = m.text[:max_chars], True
            if m.diff is not None:
                m.diff, cut = clip_diff(m.diff, max_chars)
                m.truncated = m.truncated or cut
    return notes


def clip_diff(diff: list[tuple[str, str]], limit: int) -> tuple[list[tuple[str, str]], bool]:
    """Keep the first ``limit`` characters of a diff (counting every segment shown)."""
    out, used = [], 0
    for tag, text in diff:
        if used + len(text) > limit:
            if limit > used:
                out.append((tag, text[: limit - used]))
            return out, True
        out.append((tag, text))
        used += len(text)
    return out, False


def cluster_dict(c: Cluster) -> dict[str, Any]:
    """A cluster as plain JSON data (what the page's script renders)."""

    def mem(m: Member, with_diff: bool) -> dict[str, Any]:
        d: dict[str, Any] = {"doc_id": m.doc_id, "shard": m.shard, "row": m.row, "keep": m.keep,
                             "score": None if m.score is None else round(m.score, 4),
                             "text": m.text, "truncated": m.truncated}
        if with_diff and m.diff is not None:
            d["diff"] = [[t, s] for t, s in m.diff]
            d["words"] = m.words
        return d

    return {"key": c.key, "stage": c.stage, "id": c.cluster_id, "size": c.size,
            "rep": mem(c.representative, False), "dups": [mem(m, True) for m in c.duplicates],
            "hidden": c.hidden, "kept_others": c.kept_others}


def find_doc(st: StageTable, doc_id: str) -> int | None:
    """Manifest position of ``doc_id`` in a stage table, or None."""
    hits = np.nonzero(pc.equal(st.doc_id, doc_id).to_numpy(zero_copy_only=False))[0]
    return int(hits[0]) if len(hits) else None


def require_stage(run: RunInfo, name: str | None) -> list[StageRun]:
    """The stages to look at: all, or the one named (by stage name or folder label)."""
    if name is None:
        return run.stages
    hits = [s for s in run.stages if name in (s.name, s.label)]
    if not hits:
        raise InputError(f"{run.root} has no stage {name!r}; stages are: "
                         f"{', '.join(s.label for s in run.stages)}; pass --stage with one of them")
    return hits


__all__ = [
    "Cluster", "Member", "RunInfo", "StageRun", "StageTable", "attach_texts", "build_cluster",
    "cluster_dict", "find_doc", "load_run", "load_texts", "lsh_curve", "lsh_params", "require_stage",
    "score_histogram", "select_clusters", "size_histogram", "stage_table", "stage_threshold",
]
