"""Run one stage end to end: discover, scan, identify, guard, write the manifest and summary."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from dedupkit import __version__
from dedupkit import settings as _S
from dedupkit.engine import ProgressFactory, get_engine, no_progress
from dedupkit.errors import ConfigError, GuardrailError
from dedupkit.io import fs
from dedupkit.io.read import ReadSpec
from dedupkit.io.shards import discover
from dedupkit.manifest import (
    MANIFEST_DIR,
    PARTS_KEY,
    check_prior_fingerprints,
    part_records,
    load_prior,
    SUMMARY,
    output_root,
    summary_header,
    write_summary,
)
from dedupkit.outdir import OutputDir
from dedupkit.ownership import check_separate
from dedupkit.scan import MAX_LISTED_BAD, Corpus, plan_tasks, run_scan_task, task_rows
from dedupkit.spans import SPANS_DIR, read_spans, span_counts
from dedupkit.stages.base import Stage
from dedupkit.stage_manifest import check_drop_rate as _check_drop_rate, stage_kind as _kind, write_decisions



@dataclass(frozen=True)
class RunOptions:
    """How to run a stage (not what it decides).

    Attributes:
        workers: worker processes for the per-shard work; the manifest is the same for any value.
        engine: ``local`` or ``ray``.
        ray_address: Ray cluster address (``None`` starts a local instance).
        skip: manifest folders of earlier stages whose dropped rows this stage leaves out.
        overwrite: replace a finished run in the output folder.
        max_drop_rate: abort (exit code 4) when the stage would drop more than this share of the
            rows it considered.
        keep_work: keep per-shard intermediate files under ``OUT/.work`` after success.
        split_rows: at most this many rows per scan task (big shards are split).
        split_bytes: at most about this many bytes of text per scan task (Parquet: uncompressed).
        publish_to: set by :func:`run_stage` for a remote ``-o`` (the store folder the local
            staging folder is published to): on a distributed engine the manifest tasks upload
            their parts there themselves, and the publish step skips them.
    """

    workers: int = _S.RunConfig.workers
    engine: str = _S.RunConfig.engine
    ray_address: str | None = None
    skip: tuple[str, ...] = ()
    overwrite: bool = False
    max_drop_rate: float | None = None
    keep_work: bool = False
    split_rows: int = 1_000_000
    split_bytes: int = 256 * 2**20
    publish_to: str | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"workers must be at least 1, got {self.workers}")
        if self.split_rows < 1 or self.split_bytes < 1:
            raise ConfigError(f"split_rows and split_bytes must be positive, got {self.split_rows}, {self.split_bytes}")
        if self.max_drop_rate is not None and not 0.0 <= self.max_drop_rate <= 1.0:
            raise ConfigError(f"max_drop_rate must be between 0 and 1, got {self.max_drop_rate}")


@dataclass
class RunResult:
    """What a finished stage run produced.

    Attributes:
        out: the output folder.
        summary: its summary.json.
        reused: the folder already held a finished run of the same stage, settings and inputs,
            which was kept as it was (see :func:`reusable_run`).
        uploaded: files (paths relative to the output) that tasks already wrote to the remote
            output (``RunOptions.publish_to``); publishing skips them.
    """

    out: Path | str  # a str for a URL (s3://...)
    summary: dict[str, Any] = field(default_factory=dict)
    reused: bool = False
    uploaded: tuple[str, ...] = ()


#: What a stage's output folder holds besides its completion marker (published to object stores).
_PUBLISHED = ("manifest", "spans", "analysis.json")

#: Settings that change where or how fast a stage works, never its manifest (the embedding cache).
_NOT_DECIDING = frozenset({"cache_dir", "use_cache", "embed_cache_dir"})


def settings_key(stage: Stage, spec: ReadSpec, skip_rows: dict[str, np.ndarray]) -> str:
    """A digest of everything besides the input files that decides a stage's manifest.

    The stage's settings and mapper key, the read options, the rows earlier stages dropped
    (``--skip``) and the dedupkit version; not ``--workers``, ``--engine``, the batch size or the
    cache folder (the manifest does not depend on them).
    """
    config = {k: v for k, v in stage.config_dict().items() if k not in _NOT_DECIDING}
    src = json.dumps({"stage": stage.name, "key": stage.key(), "config": config,
                      "read": {**{k: v for k, v in asdict(spec).items() if k != "batch_size"},
                               "extra_columns": list(spec.extra_columns)},
                      "skip": {k: hashlib.sha1(v.tobytes()).hexdigest() for k, v in sorted(skip_rows.items())},
                      "dedupkit": __version__}, sort_keys=True, default=str)
    return hashlib.sha1(src.encode()).hexdigest()


def reusable_run(out: Path, stage: Stage, settings: str, shards) -> dict[str, Any] | None:
    """The summary of a finished run in ``out`` that rerunning would reproduce, else None.

    The rerun rule (the same for ``dedupkit run``): a finished folder made by the same stage with
    the same settings (:func:`settings_key`) from the same input files (names and content
    fingerprints) is reused as it is; a finished folder made otherwise is refused, naming what
    differs, until ``--overwrite``; a folder without a summary (an interrupted run) is resumed.
    A stage whose decisions depend on something outside its settings (``reusable = False``, e.g.
    ``check``, whose index grows) is never reused.

    Raises:
        OutputError: ``out`` holds a finished run made otherwise.
    """
    from dedupkit.errors import OutputError
    from dedupkit.io.shards import fingerprint
    from dedupkit.manifest import MANIFEST_DIR, SUMMARY

    path = Path(out) / SUMMARY
    if not path.is_file() or not (Path(out) / MANIFEST_DIR).is_dir():
        return None
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # OutputDir reports the damaged folder
    if not summary.get("complete") or summary.get("pipeline"):
        return None
    differs = []
    if summary.get("stage") != stage.name:
        differs.append(f"it was made by `dedupkit {summary.get('stage')}`")
    elif not getattr(stage, "reusable", True):
        differs.append(f"a {stage.name} run is never reused")
    elif summary.get("settings_key") != settings:
        differs.append("other settings, read options or --skip manifests")
    else:
        now = [(s.name, fingerprint(s.path)) for s in shards]
        then = [(x.get("name"), x.get("fingerprint")) for x in summary.get("inputs", [])]
        if now == then:
            return summary
        differs.append("other input files" if [n for n, _ in now] != [n for n, _ in then]
                       else "input files whose content changed")
    raise OutputError(f"{out} already holds a finished run ({'; '.join(differs)}); pass --overwrite to "
                      "replace it, or choose another -o. Rerunning the same command on the same inputs "
                      "reuses the finished run")


def run_stage(
    stage: Stage,
    inputs: Sequence[str],
    out: str | Path,
    spec: ReadSpec,
    options: RunOptions = RunOptions(),
    progress: ProgressFactory = no_progress,
    before_finish: Callable[[], None] | None = None,
) -> RunResult:
    """Run ``stage`` over ``inputs`` and write ``out/manifest`` and ``out/summary.json``.

    Args:
        stage: the stage (e.g. :class:`dedupkit.stages.exact.ExactStage`).
        inputs: files, folders and globs of shards.
        out: the output folder.
        spec: text and id columns, batch size, bad-record policy.
        options: workers, skip manifests, overwrite, guardrails.
        progress: a progress-bar factory (the CLI passes tqdm on stderr).
        before_finish: called once the new manifest is complete, just before an old run in
            ``out`` is replaced (``run`` marks its combined output unfinished there).

    Returns:
        The output folder and the summary written there.

    Raises:
        InputError, ManifestError, OutputError, GuardrailError: see their docs.

    Example:
        >>> from dedupkit.io.read import ReadSpec
        >>> from dedupkit.runner import run_stage
        >>> from dedupkit.stages.exact import ExactStage
        >>> res = run_stage(ExactStage(), [str(data)], tmp / "exact", ReadSpec(text_column="text", id_column="id"))
        >>> res.summary["counts"]["dropped"], (res.out / "manifest").is_dir()
        (1, True)
    """
    if fs.is_remote(out):
        # s3://, gs://, ...: built in a local staging folder, published with summary.json last
        opts = replace(options, skip=tuple(str(fs.fetch(s)) if fs.is_remote(s) else s for s in options.skip),
                       publish_to=str(out))
        return fs.remote_output(str(out), _PUBLISHED, lambda local: run_stage(
            stage, inputs, local, spec, opts, progress, before_finish))
    t0 = time.perf_counter()
    out = Path(fs.local(out))
    # Before anything else: an -o that is (or holds, or lies in) a --skip manifest would destroy
    # the manifest this run reads.
    check_separate(out, [("--skip", output_root(s)) for s in options.skip])
    shards = discover(inputs, exclude=[str(out)])
    extra_cols = tuple(c for c in stage.read_columns() if c not in (spec.text_column, spec.id_column))
    spec = ReadSpec(**{**asdict(spec), "extra_columns": tuple(dict.fromkeys(spec.extra_columns + extra_cols))})
    prior, prior_summaries = load_prior(options.skip, [s.name for s in shards])
    skip_rows = {name: np.sort(t.column("row").to_numpy()) for name, t in prior.items()}
    if not options.overwrite and (out / SUMMARY).is_file():
        # only for a finished folder: a stage's key() may write work files under OUT (decontaminate
        # builds its eval index there), which must wait for the lock in a new folder
        finished = reusable_run(out, stage, settings_key(stage, spec, skip_rows), shards)
        if finished is not None:
            c = finished.get("counts", {})
            if options.max_drop_rate is not None and c.get("drop_rate", 0.0) > options.max_drop_rate:
                raise GuardrailError(
                    f"the finished {stage.name} run in {out} drops {c.get('dropped_by_stage')} of "
                    f"{c.get('considered')} rows ({c['drop_rate']:.1%}), more than --max-drop-rate "
                    f"{options.max_drop_rate:g}; check the settings on a sample, or raise --max-drop-rate")
            # "reused" marks the returned copy only (the CLI says so; --json shows it)
            return RunResult(out=out, summary={**finished, "reused": True}, reused=True)
    with OutputDir(out, overwrite=options.overwrite, allowed=(SPANS_DIR,)) as od:
        settings = settings_key(stage, spec, skip_rows)
        key_src = json.dumps({"stage": stage.key(), "spec": asdict(spec), "skip": {
            k: hashlib.sha1(v.tobytes()).hexdigest() for k, v in skip_rows.items()}}, sort_keys=True)
        key = hashlib.sha1(key_src.encode()).hexdigest()
        scan_dir = od.work / f"{stage.name}-scan"
        scan_dir.mkdir(parents=True, exist_ok=True)
        tasks = plan_tasks(shards, spec, stage.mapper(), str(scan_dir), key, skip_rows, options.split_rows,
                           options.split_bytes, workers=options.workers)
        # the engine's workers serve the scan and the stage's global steps, and stop at the end
        with get_engine(options.engine, options.workers, progress, options.ray_address) as engine:
            from dedupkit.engine import driver

            rowless = driver.eligible(stage, engine, options)
            if rowless or driver.in_one_task(stage, engine, options):
                # A distributed engine: tasks identify and write every manifest part; the driver
                # plans, collects counts and writes the summary (dedupkit.engine.driver).
                results = engine.map(run_scan_task, tasks, desc=f"{stage.name}: scan",
                                     sizes=[task_rows(t) for t in tasks])
                t_scan = time.perf_counter()
                corpus = driver.LightCorpus(tasks, results, shards)
                shard_dicts = [s.to_dict() for s in corpus.shards]
                check_prior_fingerprints(prior_summaries, shard_dicts)
                tmp, parts, spans = od.manifest_tmp(), None, None
                if rowless:
                    c, stats, parts = driver.run_rowless(
                        stage, corpus, od.work / stage.name, tmp, engine, _kind(stage), spec,
                        lambda dropped, considered: _check_drop_rate(stage, options, dropped, considered),
                        options.publish_to)
                else:  # one task holds the per-document arrays (semantic's neighbour search)
                    c = driver.run_in_task(stage, corpus, od.work / stage.name, tmp, engine, options)
                    stats, spans = c["stats"], c["spans"]
                engine.close(wait=False)  # a Ray instance of this command alone stops while we finish
                t_ident = t_write = time.perf_counter()
                summary = _summary(stage, spec, options, settings, prior, prior_summaries, corpus, shard_dicts,
                                   c["active"], c["kept"], c["clusters"], c["largest_cluster"], stats)
                if spans is not None:
                    summary["counts"].update(c["span_counts"])
                summary["timings"] = _timings(t0, t_scan, t_ident, t_write, results)
                _publish(stage, od, summary, options, before_finish, Path(spans) if spans else None, tmp,
                         parts=parts)
                uploaded = tuple(f"{MANIFEST_DIR}/{p['file']}" for p in parts) if parts and options.publish_to else ()
                return RunResult(out=out, summary=summary, uploaded=uploaded)
            results = engine.map(run_scan_task, tasks, desc=f"{stage.name}: scan",
                                 sizes=[task_rows(t) for t in tasks])
            if not stage.uses_engine:
                engine.close(wait=False)  # idle workers exit while the driver groups
            t_scan = time.perf_counter()
            corpus = Corpus(tasks, results, shards)
            corpus.check_unique_ids()
            shard_dicts = [s.to_dict() for s in corpus.shards]
            check_prior_fingerprints(prior_summaries, shard_dicts)
            stage_work = od.work / stage.name
            stage_work.mkdir(parents=True, exist_ok=True)
            stage.engine = engine
            decisions = stage.identify(corpus, str(stage_work))
            t_ident = time.perf_counter()

        tmp = od.manifest_tmp()
        n, kept_total, n_clusters, largest = write_decisions(stage, corpus, decisions, prior, options, tmp)
        t_write = time.perf_counter()
        summary = _summary(stage, spec, options, settings, prior, prior_summaries, corpus, shard_dicts, n,
                           kept_total, n_clusters, largest, decisions.stats)
        if decisions.spans is not None:
            # validated before it is moved: a folder with broken spans never becomes OUT/spans
            summary["counts"].update(span_counts(read_spans(decisions.spans)))
        summary["timings"] = _timings(t0, t_scan, t_ident, t_write, results)
        _publish(stage, od, summary, options, before_finish,
                 Path(decisions.spans) if decisions.spans is not None else None, tmp)
    return RunResult(out=out, summary=summary)


def _timings(t0: float, t_scan: float, t_ident: float, t_write: float, results) -> dict:
    t_end = time.perf_counter()
    return {"scan_s": round(t_scan - t0, 3), "identify_s": round(t_ident - t_scan, 3),
            "write_s": round(t_write - t_ident, 3), "total_s": round(t_end - t0, 3),
            "scan_tasks": len(results), "reused_scan_tasks": int(sum(r.reused for r in results))}


def _summary(stage: Stage, spec: ReadSpec, options: RunOptions, settings: str, prior: dict, prior_summaries: list,
             corpus, shard_dicts: list, n: int, kept_total: int, clusters: int, largest: int, stats: dict) -> dict:
    """summary.json of a stage run (counts: see dedupkit.explain for the one meaning of each)."""
    n_rows = int(sum(s.n_rows for s in corpus.shards))
    n_bad = corpus.n_bad
    n_prior = int(sum(len(t) for t in prior.values()))
    # This stage's own input and drops (bad records included: this stage drops them)
    considered = n + n_bad
    dropped_here = int(n - kept_total) + n_bad
    bad_list = corpus.bad_records
    return {
        **summary_header(stage.name),
        "config": {"stage": stage.config_dict(), "read": {**asdict(spec), "extra_columns": list(spec.extra_columns)},
                   "workers": options.workers, "engine": options.engine,
                   "max_drop_rate": options.max_drop_rate},
        "seed": stage.config_dict().get("seed"),
        "skip": [e["path"] for e in prior_summaries],
        "inputs": shard_dicts,
        "counts": {
            "rows": n_rows,
            "considered": considered,
            "kept": kept_total,
            "dropped": n_rows - kept_total,
            "dropped_by_stage": dropped_here,
            "dropped_earlier": n_prior,
            "duplicates": dropped_here - n_bad,
            "bad_records": n_bad,
            "clusters": clusters,
            "largest_cluster": largest,
            "drop_rate": (dropped_here / considered) if considered else 0.0,
        },
        "bad_records": bad_list[:MAX_LISTED_BAD],
        "bad_records_listed": min(n_bad, MAX_LISTED_BAD),
        "stats": stats,
        "settings_key": settings,
        "timings": {},
    }


def _publish(stage: Stage, od: OutputDir, summary: dict, options: RunOptions, before_finish, spans: Path | None,
             tmp: Path | None = None, parts: list[dict] | None = None) -> None:
    """Swap the finished manifest in and write the summary last (OutputDir.finish).

    ``parts``: the manifest parts' records (:func:`part_records`) when the tasks that wrote them
    made them (the driver then reads no part)."""
    stage.before_publish(summary)
    if before_finish is not None:
        before_finish()

    def finish(root: Path) -> None:
        summary[PARTS_KEY] = parts if parts is not None else part_records(root / MANIFEST_DIR)
        write_summary(root, summary)

    # OUT/spans is swapped in by finish() with the manifest, after the old summary is gone
    od.finish(tmp if tmp is not None else od.path / ".manifest.tmp", finish, keep_work=options.keep_work, spans=spans)
