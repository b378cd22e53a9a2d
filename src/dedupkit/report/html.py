"""``dedupkit report``: one self-contained HTML page (no CDN, no server) about a finished run.

The page embeds its data as one JSON block, Chart.js (vendored, MIT) for the plots, and a small
script that renders the cluster views and the doc_id search. Its size is bounded by the number
of clusters it lists and the characters per text, not by the size of the corpus.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from dedupkit import __version__
from dedupkit import settings as _S
from dedupkit.atomic import atomic_open
from dedupkit.errors import OutputError
from dedupkit.redact import redact_obj
from dedupkit.report.model import (
    RunInfo, attach_texts, clip_diff, build_cluster, cluster_dict, load_run, lsh_curve, lsh_params,
    score_histogram, select_clusters, size_histogram, stage_table, stage_threshold,
)


@dataclass(frozen=True)
class ReportOptions:
    """How much the page shows.

    Attributes:
        largest: the largest clusters listed per stage.
        sample: further clusters listed per stage, drawn at random (seeded).
        max_members: duplicates listed per cluster (the least similar first).
        max_chars: characters of each text shown (the diff is computed on up to ``diff_chars``).
        diff_chars: characters of each text the diff looks at.
        doc_index_limit: list every clustered doc_id for the search box when a stage has at most
            this many; above it, the search covers only the listed clusters (the page says so).
        seed: seed of the cluster sample.
        title: page title (default: the output folder).
        max_bytes: budget for the page's embedded data; texts are cut shorter (and the search
            index shrunk to the listed clusters) until it fits, and the page says so. Long
            texts in several stages, or multi-byte scripts, could otherwise pass a few MB.
    """

    largest: int = _S.ReportConfig.largest
    sample: int = _S.ReportConfig.sample
    max_members: int = _S.ReportConfig.max_members
    max_chars: int = _S.ReportConfig.max_chars
    diff_chars: int = 20000
    doc_index_limit: int = 20000
    seed: int = _S.ReportConfig.seed
    title: str | None = None
    max_bytes: int = int(_S.ReportConfig.max_mb * 1e6)


@dataclass
class ReportResult:
    """The written page: its path, size in bytes and what it left out."""

    path: Path
    bytes: int
    clusters_listed: int
    clusters_total: int
    sampled: bool
    notes: list[str] = field(default_factory=list)


def _counts(summary: dict) -> dict[str, Any]:
    """The labelled counts of a summary (:func:`dedupkit.explain.stage_counts`) and its run time."""
    from dedupkit.explain import stage_counts

    t = summary.get("timings") if isinstance(summary.get("timings"), dict) else {}
    total_s = t.get("total_s")
    if total_s is None and t:
        nums = [v for v in t.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        total_s = sum(nums) if nums else None
    return {**stage_counts(summary), "time_s": total_s}


def build_data(run: RunInfo, opts: ReportOptions) -> tuple[dict[str, Any], ReportResult]:
    """Everything the page shows, as JSON-ready data."""
    stages_out: list[dict[str, Any]] = []
    clusters_out: dict[str, Any] = {}
    doc_index: dict[str, list] = {}
    notes: list[str] = []
    listed = total = 0
    sampled = False
    for si, sr in enumerate(run.stages):
        st = stage_table(sr)
        thr = stage_threshold(sr.summary)
        lsh = lsh_params(sr.summary)
        dropped_scores = st.score[(~st.keep) & (st.cid >= 0)]
        largest, sample, complete = select_clusters(st, opts.largest, opts.sample, seed=opts.seed)
        clusters = [c for c in (build_cluster(st, cid, opts.max_members) for cid in largest + sample) if c]
        notes.extend(attach_texts(clusters, sr.summary, opts.max_chars, opts.diff_chars))
        for c in clusters:
            d = cluster_dict(c)
            for m in d["dups"]:
                if "diff" in m:
                    m.pop("text")  # the diff spells the text out
            d["stage_index"] = si
            clusters_out[c.key] = d
        n_clusters = len(st.cluster_values)
        listed += len(clusters)
        total += n_clusters
        clipped = any(c.hidden for c in clusters)
        sampled = sampled or not complete or clipped
        n_clustered = int(len(st.order))
        index_complete = n_clustered <= opts.doc_index_limit
        if index_complete:
            ids = st.doc_id.take(st.order).to_pylist()
            cids = st.cid[st.order]
            size_of = dict(zip(st.cluster_values.tolist(), st.cluster_sizes.tolist()))
            for doc, cid in zip(ids, cids.tolist()):
                doc_index.setdefault(doc, []).append([si, cid, size_of[cid]])
        else:
            for c in clusters:
                for m in [c.representative, *c.duplicates]:
                    doc_index.setdefault(m.doc_id, []).append([si, c.cluster_id, c.size])
        stages_out.append({
            "index": si, "name": sr.name, "label": sr.label, "path": str(sr.path),
            "counts": _counts(sr.summary),
            "config": (sr.summary.get("config") or {}).get("stage", {}),
            "read": (sr.summary.get("config") or {}).get("read", {}),
            "stats": sr.summary.get("stats") or {},
            "threshold": thr,
            "lsh": ({"bands": lsh[0], "rows": lsh[1], "curve": lsh_curve(*lsh),
                     "s_half": round((1.0 / lsh[0]) ** (1.0 / lsh[1]), 4)} if lsh else None),
            "size_hist": size_histogram(st.cluster_sizes),
            "score_hist": score_histogram(dropped_scores.astype(np.float64), thr),
            "largest": [f"{sr.name}:{c}" for c in largest if f"{sr.name}:{c}" in clusters_out],
            "sample": [f"{sr.name}:{c}" for c in sample if f"{sr.name}:{c}" in clusters_out],
            "n_clusters": n_clusters,
            "complete": complete,
            "clipped_members": clipped,
            "index_complete": index_complete,
            "n_clustered_docs": n_clustered,
            "spans": _spans_section(sr, opts, notes),
        })
    if not run.complete:
        notes.insert(0, f"{run.root} holds no summary.json: the run did not finish; this page shows its "
                        f"{len(run.stages)} finished stage(s) only")
    from dedupkit.explain import LABELS, ORDER

    combined = _counts(run.summary) if run.pipeline and run.summary else None
    data = {
        "title": opts.title or f"dedupkit report: {run.root.name}",
        "root": str(run.root),
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dedupkit": __version__,
        "run_created": run.summary.get("created"),
        "pipeline": run.pipeline,
        "combined": combined,
        "count_order": list(ORDER),
        "count_labels": LABELS,
        "stages": stages_out,
        "clusters": clusters_out,
        "doc_index": doc_index,
        "options": {"largest": opts.largest, "sample": opts.sample, "max_members": opts.max_members,
                    "max_chars": opts.max_chars, "seed": opts.seed},
        "sampled": sampled,
        "notes": notes,
    }
    _fit(data, opts.max_bytes)
    return data, ReportResult(path=Path(), bytes=0, clusters_listed=listed, clusters_total=total,
                              sampled=data["sampled"], notes=data["notes"])


def _spans_section(sr, opts: ReportOptions, notes: list[str]) -> dict[str, Any] | None:
    """For a stage that cut spans: its counts, its audit profile and the most-cut documents."""
    from dedupkit.report.spans_view import cut_doc_dict, cut_documents
    from dedupkit.spans import has_spans

    if not has_spans(sr.path):
        return None
    view = cut_documents(sr.path, largest=min(opts.largest, 10), max_chars=opts.max_chars)
    notes.extend(view.notes)
    c = sr.summary.get("counts") or {}
    return {"spans": c.get("spans"), "bytes_cut": c.get("bytes_cut"), "documents_cut": c.get("documents_cut"),
            "audit": (sr.summary.get("stats") or {}).get("audit"),
            "docs": [cut_doc_dict(d) for d in view.docs]}


def _data_bytes(data: dict[str, Any]) -> int:
    return len(_json_for_script(data).encode("utf-8"))


def _fit(data: dict[str, Any], budget: int) -> None:
    """Cut texts (then the search index) until the embedded data is at most ``budget`` bytes."""
    size = _data_bytes(data)
    if size <= budget:
        return
    if data["doc_index"]:
        listed = {m["doc_id"] for c in data["clusters"].values() for m in [c["rep"], *c["dups"]]}
        if any(d not in listed for d in data["doc_index"]):
            data["doc_index"] = {k: v for k, v in data["doc_index"].items() if k in listed}
            for s in data["stages"]:
                s["index_complete"] = False
            data["notes"].append("the search covers only the listed clusters, to keep the page small")
            size = _data_bytes(data)
    limit = data["options"]["max_chars"]
    while size > budget and limit > 100:
        limit //= 2
        for c in data["clusters"].values():
            for m in [c["rep"], *c["dups"]]:
                if m.get("text") is not None and len(m["text"]) > limit:
                    m["text"], m["truncated"] = m["text"][:limit], True
                if m.get("diff") is not None:
                    clipped, cut = clip_diff([tuple(x) for x in m["diff"]], limit)
                    m["diff"] = [list(x) for x in clipped]
                    m["truncated"] = m["truncated"] or cut
        size = _data_bytes(data)
    if limit != data["options"]["max_chars"]:
        data["options"]["max_chars"] = limit
        data["notes"].append(f"texts are cut to {limit} characters to keep the page under "
                             f"{budget / 1e6:.1f} MB")
    data["sampled"] = True


def _asset(name: str) -> str:
    return resources.files("dedupkit.report").joinpath(name).read_text(encoding="utf-8")


def _json_for_script(data: Any) -> str:
    """JSON safe inside a <script> element: no '<', '>' or '&' that could end or confuse it."""
    s = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026") \
        .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def render_html(data: dict[str, Any]) -> str:
    """The page for ``data`` (from :func:`build_data`)."""
    from dedupkit.errors import require

    jinja2 = require("jinja2", "report")
    data = redact_obj(data)  # summaries written before redaction existed may hold an index password
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["num"] = _fmt_num
    env.filters["pct"] = lambda v: "" if v is None else f"{100 * v:.2f}%"
    env.filters["secs"] = lambda v: "" if v is None else f"{v:.2f} s"
    tpl = env.from_string(_asset("report.html"))
    return tpl.render(
        d=data,
        data_json=_markup(_json_for_script(data)),
        css=_markup(_asset("report.css")),
        chart_js=_markup(_asset("chart.umd.min.js")),
        app_js=_markup(_asset("report.js")),
        settings_json={s["label"]: json.dumps({"stage": s["config"], "read": s["read"], "stats": s["stats"]},
                                              indent=2, sort_keys=True, default=str)
                       for s in data["stages"]},
    )


def _markup(s: str):
    from markupsafe import Markup

    return Markup(s)


def _fmt_num(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and not v.is_integer():
        return f"{v:,.3f}"
    return f"{int(v):,}"


def _protected(run) -> list[str]:
    """What a report must never overwrite: the run's summaries and manifests, and its inputs."""
    paths: list[str] = []
    for folder, summary in [(run.root, run.summary)] + [(s.path, s.summary) for s in run.stages]:
        paths += [str(Path(folder) / "summary.json"), str(Path(folder) / "manifest")]
        for entry in summary.get("inputs", []) if isinstance(summary, dict) else []:
            if isinstance(entry, dict) and isinstance(entry.get("path"), str):
                paths.append(entry["path"])
    return paths


def build_report(out: str | os.PathLike, html_path: str | os.PathLike,
                 options: ReportOptions = ReportOptions(), overwrite: bool = False) -> ReportResult:
    """Write the HTML report of the finished run in ``out`` to ``html_path``.

    Args:
        out: a stage's output folder, or a ``dedupkit run`` folder with one sub-folder per stage.
        html_path: the page to write (written to a temporary name, then renamed: an interrupted
            call never leaves a partial page under that name).
        options: how many clusters and characters the page shows.
        overwrite: replace an existing page that dedupkit wrote (any other file is never replaced).

    Returns:
        The path and size of the page, and how many clusters it lists.

    Raises:
        ManifestError: ``out`` is not a finished run.
        OutputError: the page cannot be written, or ``html_path`` is a file dedupkit may not
            replace (see :func:`dedupkit.ownership.check_replace_file`).

    Example:
        >>> import dedupkit
        >>> from dedupkit.report.html import build_report
        >>> res = dedupkit.exact([str(data)], str(tmp / "exact"))
        >>> build_report(res.out, tmp / "report.html").clusters_total
        1
    """
    from dedupkit.ownership import check_creatable, check_replace_file, made_dirs, remove_made_dirs

    run = load_run(out)
    path = Path(html_path)
    check_replace_file(path, overwrite, _protected(run))  # before the work, and again before the rename
    check_creatable(path)
    data, result = build_data(run, options)
    page = render_html(data).encode("utf-8")
    made: list[Path] = []
    try:
        made = made_dirs(path.parent)
        with atomic_open(path, hidden=True, sync=False) as fh:
            fh.write(page)
            check_replace_file(path, overwrite, _protected(run))
    except OutputError:
        remove_made_dirs(made)
        raise
    except OSError as exc:
        remove_made_dirs(made)
        raise OutputError(f"cannot write {path} ({exc.strerror}); pass -o with a writable path") from exc
    result.path = path
    result.bytes = len(page)
    return result
