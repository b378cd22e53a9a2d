"""Run several stages in order and combine their manifests (``dedupkit run``).

Layout of a pipeline output folder ``OUT/``::

    OUT/01-exact/      the exact stage's output (manifest/ + summary.json), over all input rows
    OUT/02-fuzzy/      the fuzzy stage's output; it saw only the rows exact kept (--skip 01-exact)
    OUT/manifest/      the combined manifest: one row per input row (see dedupkit.manifest.combine)
    OUT/summary.json   written last: the resolved config, per-stage counts and timings
    OUT/pipeline.json  what produced each stage folder, so a rerun reuses up-to-date stages

A stage is reused when its folder holds a finished run made with the same stage settings, read
options, input fingerprints and the same output of the stage before it; otherwise it runs again
(and so does every stage after it). A stage interrupted half-way resumes its finished scan tasks.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from dedupkit import __version__
from dedupkit.config import PipelineConfig, build_pipeline_stage
from dedupkit.errors import ConfigError, GuardrailError, ManifestError, OutputError
from dedupkit.explain import count_line, stage_counts
from dedupkit.io.shards import discover, fingerprint
from dedupkit.manifest import SUMMARY, load_summary
from dedupkit.outdir import RUN_STATE, RunDir

# numpy, pyarrow.compute/dataset, the runner and the stages are imported where they are used: a
# rerun with nothing changed only reads summaries and fingerprints the inputs, and should cost
# little more than starting Python.


# --------------------------------------------------------------------------------------------
# Results


@dataclass
class StageRun:
    name: str
    dir: str
    reused: bool
    summary: dict


@dataclass
class PipelineResult:
    """What :func:`run_pipeline` produced.

    Attributes:
        out: the output folder.
        summary: the combined summary (OUT/summary.json).
        stages: per stage: its folder, whether it was reused, its summary.
        clean: the clean corpus folder, if written (or already up to date).
        up_to_date: nothing had to run.
        elapsed_s: wall time of this call.
    """

    out: Path
    summary: dict
    stages: list[StageRun] = field(default_factory=list)
    clean: Path | None = None
    up_to_date: bool = False
    elapsed_s: float = 0.0


# --------------------------------------------------------------------------------------------
# Helpers


def _sha_file(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def _stage_key(settings, spec: dict, inputs: list[tuple[str, str]], prev_sha: str | None) -> str:
    # Built from the resolved options (the builders are deterministic) and the dedupkit version,
    # not from the stage object: checking that nothing changed must not import the stages'
    # dependencies (scipy for the LSH parameters, torch for the embedder).
    src = json.dumps({"name": settings.name, "options": dict(settings.options), "dedupkit": __version__,
                      "read": spec, "inputs": inputs, "prev": prev_sha}, sort_keys=True, default=str)
    return hashlib.sha1(src.encode()).hexdigest()


def _build_all(config: PipelineConfig, stages: list, start: int) -> None:
    """Build the stages from ``start`` on (those that will run), so a bad setting fails before any
    of them starts."""
    for j in range(start, len(config.stages)):
        if stages[j] is None:
            s = config.stages[j]
            try:
                stages[j] = build_pipeline_stage(s.name, s.options)
            except ConfigError as exc:
                where = f"{config.source}: [{s.name}]" if config.source else f"stage {s.name}"
                raise ConfigError(f"{where}: {exc}") from None


def _read_state(root: Path) -> dict:
    try:
        return json.loads((root / RUN_STATE).read_text())
    except (OSError, ValueError):
        return {}


def _write_state(root: Path, state: dict) -> None:
    from dedupkit.atomic import atomic_write

    atomic_write(root / RUN_STATE, json.dumps(state, indent=2), sync=False)


def _discard_stale_stages(od: RunDir, wanted: set[str]) -> None:
    """Delete stage folders of an earlier configuration (only what dedupkit wrote in them)."""
    from dedupkit.outdir import discard_output

    for stale in od.stage_dirs():
        if stale.name not in wanted:
            discard_output(stale)


def _reusable_stage(state: dict, name: str, key: str, sdir: Path, fps: list) -> tuple[dict, str] | None:
    """(summary, summary sha) of a stage folder that is up to date for ``key`` and the inputs ``fps``."""
    rec = state.get("stages", {}).get(name)
    if not (rec and rec.get("key") == key and (sdir / SUMMARY).exists()):
        return None
    try:
        summary = load_summary(sdir)
        if not summary.get("complete"):
            return None
        sha = _sha_file(sdir / SUMMARY)
    except ManifestError:
        return None
    same_inputs = [(x["name"], x["fingerprint"]) for x in summary.get("inputs", [])] == fps
    return (summary, sha) if rec.get("summary_sha") == sha and same_inputs else None


def _what_changed(root: Path, state: dict, config: PipelineConfig, read: dict, fps: list) -> str | None:
    """What keeps a finished run folder from being reused as it is (None: nothing, reuse it).

    The rerun rule of :func:`dedupkit.runner.reusable_run`, for a whole pipeline: every stage
    up to date, and the same list of stages.
    """
    try:
        top = json.loads((root / SUMMARY).read_text())
    except (OSError, ValueError):
        return None  # damaged: treated as unfinished, rebuilt
    if [(x.get("name"), x.get("fingerprint")) for x in top.get("inputs", [])] != fps:
        return "other input files"
    names = [f"{i + 1:02d}-{s.name}" for i, s in enumerate(config.stages)]
    if [e.get("dir") for e in top.get("stages", [])] != names:
        return f"other stages ({', '.join(e.get('name', '?') for e in top.get('stages', []))})"
    prev_sha = None
    for name, settings in zip(names, config.stages):
        found = _reusable_stage(state, name, _stage_key(settings, read, fps, prev_sha), root / name, fps)
        if found is None:
            return f"other settings for stage {settings.name}"
        prev_sha = found[1]
    return None


def _invalidate(root: Path) -> None:
    """Make the combined output look unfinished before anything it depends on changes."""
    p = root / SUMMARY
    if p.exists():
        p.unlink()


# --------------------------------------------------------------------------------------------
# Running


def run_pipeline(
    inputs: Sequence[str],
    out: str | os.PathLike,
    config: PipelineConfig,
    *,
    rerun: bool = False,
    overwrite: bool = False,
    dry_run: bool = False,
    progress=None,
    log: Callable[[str], None] = lambda msg: None,
) -> PipelineResult:
    """Run ``config.stages`` in order over ``inputs`` and write ``out/manifest`` (combined).

    Each stage runs over the rows every earlier stage kept (its ``--skip`` is the stage before it),
    so each later, slower stage sees fewer rows.

    Args:
        inputs: files, folders and globs of shards.
        out: the output folder (see the module docstring for its layout).
        config: the resolved settings (:func:`dedupkit.config.resolve`).
        rerun: run every stage again even if its folder is up to date.
        overwrite: replace a finished run made with other inputs, stages or settings (rerunning
            the stages that changed and those after them). Without it such a folder is refused;
            a finished run of the same inputs and settings is reused either way.
        dry_run: write the manifests but never the clean corpus (``config.clean``).
        progress: progress-bar factory for the stages' scans.
        log: receives one line per stage (the CLI sends them to stderr).

    Returns:
        The combined summary and per-stage results.

    Raises:
        GuardrailError: a stage would drop more than its ``max_drop_rate`` (nothing final written:
            OUT/summary.json is absent, so OUT does not look complete).
        ConfigError, InputError, ManifestError, OutputError: see their docs.

    Example:
        >>> from dedupkit.config import resolve
        >>> from dedupkit.pipeline import run_pipeline
        >>> res = run_pipeline([str(data)], tmp / "run", resolve(flags={"stages": "exact,fuzzy"}))
        >>> res.summary["counts"]["dropped_by_stage"]
        {'exact': 1}
    """
    from dedupkit.io import fs

    if fs.is_remote(out):
        # built in a local staging folder, published with the top summary.json last
        return fs.remote_output(str(out), None, lambda local: run_pipeline(
            inputs, local, config, rerun=rerun, overwrite=overwrite, dry_run=dry_run, progress=progress, log=log))
    t0 = time.perf_counter()
    root = Path(fs.local(out))
    clean = Path(config.clean) if config.clean else None
    stages: list = [None] * len(config.stages)
    if rerun or not (root / RUN_STATE).exists():
        _build_all(config, stages, 0)
    RunDir(root).check_early()
    if clean is not None:
        rc, rr = Path(os.path.realpath(clean)), Path(os.path.realpath(root))
        if rc == rr or rr in rc.parents or rc in rr.parents:
            raise ConfigError(f"--clean {clean} and -o {root} must be separate folders, neither inside the other")
        if not dry_run:  # refused before any stage runs: a refusal leaves everything as it was
            from dedupkit.apply import check_output

            check_output(clean, list(inputs), [str(root)], overwrite=True, manifest_option="-o",
                         out_option="--clean")
    exclude = [str(root)] + ([str(clean)] if clean else [])
    shards = discover(inputs, exclude=exclude)
    # Stages get the discovered files, not the raw INPUTs: a folder INPUT that contains OUT would
    # otherwise let a later stage read an earlier stage's manifest as data.
    shard_inputs = [s.name for s in shards]
    fps = [(s.name, fingerprint(s.path)) for s in shards]
    read = {"text_column": config.text_column, "id_column": config.id_column, "batch_size": config.batch_size,
            "on_bad_record": config.on_bad_record}
    with RunDir(root) as od:
        state = {} if rerun else _read_state(root)
        if not (rerun or overwrite) and (root / SUMMARY).exists():
            what = _what_changed(root, state, config, read, fps)
            if what:
                raise OutputError(
                    f"{root} already holds a finished `dedupkit run` made with {what}; pass --overwrite to rerun "
                    "what changed (stages still up to date are reused), or choose another -o. Rerunning the "
                    "same command on the same inputs reuses the finished run")
        new_state: dict[str, Any] = {"stages": {}, "combined": state.get("combined"), "clean": state.get("clean")}
        wanted = {f"{i + 1:02d}-{s.name}" for i, s in enumerate(config.stages)}
        runs: list[StageRun] = []
        prev_dir: Path | None = None
        prev_sha: str | None = None
        changed = rerun
        for i, settings in enumerate(config.stages):
            name = f"{i + 1:02d}-{settings.name}"
            sdir = root / name
            key = _stage_key(settings, read, fps, prev_sha)
            reused = False
            if not changed:
                found = _reusable_stage(state, name, key, sdir, fps)
                if found is not None:
                    reused = True
                    summary, sha = found
            if not reused:
                _build_all(config, stages, i)
            stage = stages[i]
            if reused:
                rate = summary["counts"].get("drop_rate", 0.0)
                if settings.max_drop_rate is not None and rate > settings.max_drop_rate:
                    _invalidate(root)
                    raise GuardrailError(
                        f"{settings.name} drops {summary['counts'].get('dropped_by_stage')} of "
                        f"{summary['counts'].get('considered')} rows ({rate:.1%}), more than max_drop_rate "
                        f"{settings.max_drop_rate:g}; nothing was written. Check the settings on a sample, "
                        "or raise max_drop_rate if this is expected")
                log(count_line(settings.name, stage_counts(summary), f"up to date, reused {sdir}"))
            else:
                if not changed:
                    changed = True
                from dedupkit.engine.local import no_progress
                from dedupkit.io.read import ReadSpec
                from dedupkit.runner import RunOptions, run_stage

                spec = ReadSpec(**read)
                opts = RunOptions(workers=config.workers, engine=config.engine, ray_address=config.ray_address,
                                  skip=(str(prev_dir),) if prev_dir is not None else (), overwrite=True,
                                  max_drop_rate=settings.max_drop_rate)
                # Nothing of the old run changes before this stage's new manifest is complete (a
                # mistyped --id-column with --overwrite leaves the old run as it was); then the
                # combined output is marked unfinished before the stage folder is swapped.
                res = run_stage(stage, shard_inputs, sdir, spec, opts, progress or no_progress,
                                before_finish=lambda: (_invalidate(root), _discard_stale_stages(od, wanted)))
                summary = res.summary
                sha = _sha_file(sdir / SUMMARY)
                log(count_line(stage.name, stage_counts(summary), f"{summary['timings']['total_s']:.1f}s"))
            new_state["stages"][name] = {"key": key, "summary_sha": sha}
            _write_state(root, {**state, **new_state, "stages": {**new_state["stages"]}})
            runs.append(StageRun(settings.name, name, reused, summary))
            prev_dir, prev_sha = sdir, sha

        stage_shas = [new_state["stages"][r.dir]["summary_sha"] for r in runs]
        top = root / SUMMARY
        up_to_date = False
        if not changed and top.exists() and (new_state.get("combined") or {}).get("stages") == stage_shas:
            try:
                summary = json.loads(top.read_text())
                up_to_date = bool(summary.get("complete"))
            except ValueError:
                up_to_date = False
        if not up_to_date:
            _invalidate(root)
            _discard_stale_stages(od, wanted)
            # The state first: written after the summary, a kill between its temporary file and
            # the rename would leave that file in a complete-looking folder. Recorded early it is
            # harmless: "up to date" also needs the summary, which comes last.
            new_state["combined"] = {"stages": stage_shas}
            _write_state(root, new_state)
            from dedupkit.manifest.combine import write_combined

            summary = write_combined(od, runs, config.to_dict(), t0)
        top_sha = _sha_file(top)

        clean_out = None
        if clean is not None and not dry_run:
            rec = new_state.get("clean") or {}
            if (up_to_date and rec.get("path") == os.path.realpath(clean) and rec.get("summary_sha") == top_sha
                    and (clean / "_dedupkit_apply.json").exists()):
                log(f"clean corpus: up to date, {clean}")
            else:
                from dedupkit.apply import apply_manifests

                res = apply_manifests(shard_inputs, [str(root)], clean, overwrite=True)
                log(f"clean corpus: wrote {res.summary['kept']} of {res.summary['rows']} rows to {clean}")
                new_state["clean"] = {"path": os.path.realpath(clean), "summary_sha": top_sha}
                _write_state(root, new_state)
            clean_out = clean
        elif clean is not None:
            log(f"dry run: the clean corpus ({clean}) was not written")
    return PipelineResult(out=root, summary=summary, stages=runs, clean=clean_out, up_to_date=up_to_date,
                          elapsed_s=time.perf_counter() - t0)
