"""Run several stages in order and combine their manifests (``dedupkit run``).

Layout of a pipeline output folder ``OUT/``::

    OUT/01-exact/      the exact stage's output (manifest/ + summary.json), over all input rows
    OUT/02-fuzzy/      the fuzzy stage's output; it saw only the rows exact kept (--skip 01-exact)
    OUT/manifest/      the combined manifest: one row per input row (see combine_manifests)
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
import re
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from dedupkit import __version__
from dedupkit.config import PipelineConfig, build_pipeline_stage
from dedupkit.errors import ConfigError, GuardrailError, ManifestError, OutputError
from dedupkit.explain import count_line, stage_counts
from dedupkit.io.shards import discover, fingerprint
from dedupkit.ownership import LOCK, RECORD, Claim, is_output_folder, read_json

# numpy, pyarrow.compute/dataset, the runner and the stages are imported where they are used: a
# rerun with nothing changed only reads summaries and fingerprints the inputs, and should cost
# little more than starting Python.

SUMMARY = "summary.json"  # = dedupkit.manifest.SUMMARY
MANIFEST_DIR = "manifest"  # = dedupkit.manifest.MANIFEST_DIR
STATE = "pipeline.json"
_STAGE_DIR = re.compile(r"^\d{2}-[A-Za-z0-9_]+$")
_OURS = {LOCK, RECORD, STATE, SUMMARY, MANIFEST_DIR, ".manifest.tmp", ".manifest.old"}


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


class _RunDir(Claim):
    """The ``dedupkit run`` output folder, held for one run (see :class:`dedupkit.ownership.Claim`).

    Only a new, an empty or an earlier ``dedupkit run`` folder is used, and nothing in it but
    dedupkit's own names (the stage folders among them only when they hold dedupkit output) is
    ever touched.
    """

    kind = "run"

    def ours(self, name: str) -> bool:
        if name in _OURS or name.startswith((SUMMARY + ".tmp", STATE + ".tmp")):
            return True
        return bool(_STAGE_DIR.match(name)) and is_output_folder(self.path / name, kind="stage")

    def check(self, entries: set[str], locked: bool) -> None:
        foreign = sorted(e for e in entries if not self.ours(e))
        if foreign:
            raise OutputError(f"{self.path} already holds other files ({', '.join(foreign[:3])}); `dedupkit run` "
                              "only writes into a new folder or one it wrote before: choose another -o")
        if SUMMARY in entries:
            s = read_json(self.path / SUMMARY)
            if not (isinstance(s, dict) and s.get("pipeline")):
                stage = s.get("stage", "stage") if isinstance(s, dict) else "stage"
                raise OutputError(f"{self.path} holds the output of a single `dedupkit {stage}` "
                                  "run, not of `dedupkit run`; choose another -o")
        super().check(entries, locked)

    def prepare(self) -> None:
        # What a killed run left half-written (we hold the lock, nobody else writes here).
        for p in self.path.iterdir():
            if p.name.startswith((SUMMARY + ".tmp", STATE + ".tmp")):
                p.unlink(missing_ok=True)
        self.create(STATE)

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc is not None:
                shutil.rmtree(self.path / ".manifest.tmp", ignore_errors=True)
        finally:
            super().__exit__(exc_type, exc, tb)
        if isinstance(exc, OSError):  # disk full while combining: a clear error, not a traceback
            from dedupkit.outdir import write_error

            raise write_error(exc, self.path) from exc


def _check_out(root: Path) -> None:
    """Refuse an -o that `dedupkit run` must not write (before any work; creates nothing)."""
    if root.is_symlink() or (root.exists() and not root.is_dir()):
        raise OutputError(f"{root} exists and is not a folder; choose another -o")
    if root.exists():
        _RunDir(root).check({p.name for p in root.iterdir()}, locked=False)


def _read_state(root: Path) -> dict:
    try:
        return json.loads((root / STATE).read_text())
    except (OSError, ValueError):
        return {}


def _write_state(root: Path, state: dict) -> None:
    tmp = root / f"{STATE}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, root / STATE)


def _load_summary_light(d: Path) -> dict:
    """A finished stage's summary, read without importing pyarrow (see load_summary)."""
    try:
        s = json.loads((d / SUMMARY).read_text())
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{d}: unreadable summary ({exc})") from None
    if not (d / MANIFEST_DIR).is_dir() or not s.get("complete"):
        raise ManifestError(f"{d} holds no finished run")
    return s


def _discard_stale_stages(root: Path, wanted: set[str]) -> None:
    """Delete stage folders of an earlier configuration (only what dedupkit wrote in them)."""
    from dedupkit.outdir import discard_output

    for stale in sorted(p for p in root.iterdir() if _STAGE_DIR.match(p.name) and p.name not in wanted):
        discard_output(stale)


def _reusable_stage(state: dict, name: str, key: str, sdir: Path, fps: list) -> tuple[dict, str] | None:
    """(summary, summary sha) of a stage folder that is up to date for ``key`` and the inputs ``fps``."""
    rec = state.get("stages", {}).get(name)
    if not (rec and rec.get("key") == key and (sdir / SUMMARY).exists()):
        return None
    try:
        summary = _load_summary_light(sdir)
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
        >>> from dedupkit.config import resolve  # doctest: +SKIP
        >>> run_pipeline(["data/"], "out/run", resolve("configs/default.toml"))
    """
    t0 = time.perf_counter()
    root = Path(out)
    clean = Path(config.clean) if config.clean else None
    stages: list = [None] * len(config.stages)
    if rerun or not (root / STATE).exists():
        _build_all(config, stages, 0)
    _check_out(root)
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
    with _RunDir(root):
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
                                before_finish=lambda: (_invalidate(root), _discard_stale_stages(root, wanted)))
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
            _discard_stale_stages(root, wanted)
            # The state first: written after the summary, a kill between its temporary file and
            # the rename would leave that file in a complete-looking folder. Recorded early it is
            # harmless: "up to date" also needs the summary, which comes last.
            new_state["combined"] = {"stages": stage_shas}
            _write_state(root, new_state)
            summary = _write_combined(root, runs, config, t0)
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


def _write_combined(root: Path, runs: list[StageRun], config: PipelineConfig, t0: float) -> dict:
    from dedupkit.manifest import PARTS_KEY, part_records, write_summary
    from dedupkit.runner import versions

    t1 = time.perf_counter()
    from dedupkit.outdir import swap_manifest

    tmp = root / ".manifest.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    counts = combine_manifests([root / r.dir for r in runs], tmp)
    swap_manifest(root, tmp)
    t2 = time.perf_counter()
    last = runs[-1].summary
    first = runs[0].summary
    counts["bad_records"] = int(first["counts"].get("bad_records", 0))
    summary = {
        "dedupkit": __version__,
        "complete": True,
        "pipeline": True,
        "stage": "run",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "config": config.to_dict(),
        "inputs": last.get("inputs", []),
        "stages": [{"name": r.name, "dir": r.dir, "reused": r.reused, "counts": r.summary.get("counts", {}),
                    "timings": r.summary.get("timings", {})} for r in runs],
        "counts": counts,
        "timings": {"stages_s": {r.name: (0.0 if r.reused else r.summary.get("timings", {}).get("total_s", 0.0))
                                 for r in runs},
                    "combine_s": round(t2 - t1, 3), "total_s": round(time.perf_counter() - t0, 3)},
        PARTS_KEY: part_records(root / MANIFEST_DIR),
    }
    write_summary(root, summary)
    return summary


# --------------------------------------------------------------------------------------------
# Combining


def _sorted_manifest(d: Path):
    from dedupkit.manifest import read_manifest

    t = read_manifest(d)
    return t.sort_by([("shard", "ascending"), ("row", "ascending")])


def _np_int(col, fill: int = -1):
    import numpy as np
    import pyarrow.compute as pc

    return np.asarray(pc.fill_null(col, fill).to_numpy(zero_copy_only=False), dtype=np.int64)


def combine_manifests(stage_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike) -> dict:
    """Combine the manifests of chained stages into one, written as ``out_dir/part-NNNNN.parquet``.

    The stages must have run in this order, each with ``--skip`` of the one before (as
    ``dedupkit run`` and the shell chain ``dedupkit exact ... | dedupkit fuzzy ... --skip -`` do).
    Per input row: ``keep`` is true when every stage kept it. For a dropped row, ``duplicate_of``,
    ``stage``, ``score`` (and ``measure``, when the stage wrote one) come from the one comparison
    that decided it: the stage that dropped it and its similarity to the document it names. A row
    dropped as *identical* (score 1.0, e.g. by the exact stage) to a document that a later stage
    dropped takes that document's decision: A exact copy of B, B fuzzy duplicate of C, then A says
    ``stage`` fuzzy, ``duplicate_of`` C and B's score, which holds for A as it holds for B (their
    texts are the same to every later stage). Any other link is never followed: a row's
    ``duplicate_of`` names a document it was compared with, even when a later stage dropped that
    one (only when stages beyond exact + fuzzy are chained); ``kept_duplicate_of`` names the kept
    document at the end of the chain and ``direct_duplicate_of`` the match the dropping stage made.
    ``cluster_id`` joins the clusters of all stages that share a document (the smallest global row
    number of the joined cluster).

    Args:
        stage_dirs: the stages' output folders, in the order they ran.
        out_dir: an existing folder to write the parts into.

    Returns:
        Counts: rows, kept, dropped, clusters, largest_cluster, drop_rate, dropped_by_stage.

    Raises:
        ManifestError: a folder is unfinished, or the manifests do not cover the same rows.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from dedupkit.manifest import output_root, write_table_atomic

    dirs = [output_root(d) for d in stage_dirs]
    if not dirs:
        raise ManifestError("no stage output to combine")
    tables = [_sorted_manifest(d) for d in dirs]
    base = tables[-1]
    n = len(base)
    shard_col = base.column("shard")
    rows_col = base.column("row")
    for d, t in zip(dirs, tables):
        if len(t) != n or not t.column("shard").equals(shard_col) or not t.column("row").equals(rows_col):
            raise ManifestError(f"{d} does not cover the same input rows as {dirs[-1]}; the stages must run "
                                "over the same inputs, each with --skip of the stage before")
    keeps = [np.asarray(t.column("keep").to_numpy(zero_copy_only=False), dtype=bool) for t in tables]
    keep = np.logical_and.reduce(keeps)
    doc_ids = base.column("doc_id").combine_chunks()
    # The last manifest carries every earlier stage's dropped rows unchanged (--skip), so its
    # duplicate_of / score / stage / reason columns are those of the stage that dropped each row.
    direct = base.column("duplicate_of").combine_chunks()
    tgt = _np_int(pc.index_in(direct, value_set=doc_ids))
    tgt[keep] = -1
    idx = np.arange(n, dtype=np.int64)
    score_all = base.column("score").combine_chunks()
    for t in reversed(tables[:-1]):
        score_all = pc.if_else(pc.is_null(score_all), t.column("score").combine_chunks(), score_all)
    score_np = np.asarray(score_all.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False))
    # The comparison that decided each dropped row: its own, or, through identity links (score 1.0)
    # to a row a later stage dropped, that row's (pointer jumping; stages form no cycles).
    safe = np.where(tgt >= 0, tgt, 0)
    decider = np.where((tgt >= 0) & ~keep[safe] & (score_np == 1.0), safe, idx)
    for _ in range(64):
        nxt = decider[decider]
        if np.array_equal(nxt, decider):
            break
        decider = nxt
    else:
        raise ManifestError(f"duplicate_of links in {', '.join(map(str, dirs))} form a cycle; rerun the stages")
    dropped = ~keep & (tgt >= 0)
    final_tgt = np.where(dropped, tgt[decider], -1)
    dup_of = pc.if_else(pa.array(final_tgt >= 0), doc_ids.take(pa.array(np.where(final_tgt >= 0, final_tgt, 0))),
                        pa.scalar(None, pa.string()))
    # kept_duplicate_of: the kept document at the end of every link (the old resolution).
    resolved = tgt.copy()
    for _ in range(len(tables) + 2):
        r = np.where(resolved >= 0, resolved, 0)
        step = (resolved >= 0) & ~keep[r] & (tgt[r] >= 0) & (tgt[r] != r)
        if not step.any():
            break
        resolved[step] = tgt[r[step]]
    else:
        raise ManifestError(f"duplicate_of links in {', '.join(map(str, dirs))} form a cycle; rerun the stages")
    kept_dup_of = pc.if_else(pa.array(resolved >= 0), doc_ids.take(pa.array(np.where(resolved >= 0, resolved, 0))),
                             pa.scalar(None, pa.string()))
    pick = pa.array(np.where(dropped, decider, idx))
    stage_col = base.column("stage").combine_chunks().take(pick)
    measure = pa.nulls(n, pa.string())
    for t in tables:
        if "measure" in t.column_names:
            measure = pc.if_else(pc.is_null(measure), t.column("measure").combine_chunks().cast(pa.string()), measure)
    measure = pc.if_else(pa.array(dropped), measure.take(pick), pa.scalar(None, pa.string()))

    # Clusters joined across stages: min-label propagation over each stage's clusters and the
    # duplicate_of links; labels stay positions, so the result is the smallest global row.
    groups = []
    member = np.zeros(n, bool)
    for t in tables:
        cid = _np_int(t.column("cluster_id"))
        m = np.flatnonzero(cid >= 0)
        if len(m):
            _, inv = np.unique(cid[m], return_inverse=True)
            groups.append((m, inv, int(inv.max()) + 1))
            member[m] = True
    linked = np.flatnonzero(tgt >= 0)
    if len(linked):
        mem = np.concatenate([linked, tgt[linked]])
        _, inv = np.unique(np.concatenate([tgt[linked], tgt[linked]]), return_inverse=True)
        groups.append((mem, inv, int(inv.max()) + 1))
        member[mem] = True
    lab = idx.copy()
    while True:
        changed = False
        for mem, inv, g in groups:
            mins = np.full(g, n, dtype=np.int64)
            np.minimum.at(mins, inv, lab[mem])
            new = mins[inv]
            if (new < lab[mem]).any():
                lab[mem] = np.minimum(lab[mem], new)
                changed = True
        lab = lab[lab]
        if not changed:
            break
    cluster = np.where(member, lab, -1)
    sizes = np.bincount(lab[member]) if member.any() else np.zeros(0, np.int64)
    sizes = sizes[sizes > 0]

    score = pc.if_else(pa.array(member), score_all.take(pick), pa.scalar(None, score_all.type))

    table = pa.table({
        "shard": shard_col.combine_chunks(),
        "row": rows_col.combine_chunks(),
        "doc_id": doc_ids,
        "keep": pa.array(keep),
        "cluster_id": pa.array(cluster, pa.int64(), mask=cluster < 0),
        "duplicate_of": dup_of,
        "score": score.cast(pa.float32()),
        "stage": stage_col,
        "reason": base.column("reason").combine_chunks() if "reason" in base.column_names
        else pa.nulls(n, pa.string()),
        "direct_duplicate_of": pc.if_else(pa.array(keep), pa.scalar(None, pa.string()), direct),
        "kept_duplicate_of": kept_dup_of,
        "measure": measure,
    })
    names = shard_col.combine_chunks()
    out = Path(out_dir)
    if n:
        starts = np.flatnonzero(np.r_[True, np.asarray(pc.not_equal(names[1:], names[:-1]))]) \
            if n > 1 else np.array([0])
        ends = np.r_[starts[1:], n]
        for si, (a, b) in enumerate(zip(starts, ends)):
            write_table_atomic(table.slice(int(a), int(b - a)), out / f"part-{si:05d}.parquet")
    # counted under the stage that dropped the row (its own manifest's count), which for a row
    # decided through an identity link is not the stage named in the row's `stage` column
    dropped_stage = base.column("stage").combine_chunks().filter(pc.invert(table.column("keep")))
    vc = pc.value_counts(dropped_stage).to_pylist() if len(dropped_stage) else []
    return {
        "rows": int(n), "kept": int(keep.sum()), "dropped": int(n - keep.sum()),
        "clusters": int(len(sizes)), "largest_cluster": int(sizes.max()) if len(sizes) else 0,
        "drop_rate": float((n - keep.sum()) / n) if n else 0.0,
        # every dropped row once, under the stage that dropped it (bad records included)
        "dropped_by_stage": {v["values"]: int(v["counts"]) for v in vc},
    }


# --------------------------------------------------------------------------------------------
# Stats


def stats(path: str | os.PathLike) -> dict:
    """Per-stage counts of a finished ``dedupkit run`` folder (or of a single stage's folder).

    Returns:
        ``{"path", "kind": "run"|"stage", "stages": [row...], "total": row}`` where a row holds
        stage, dir, the labelled counts of :func:`dedupkit.explain.stage_counts` (rows = every
        input row, considered = the stage's own input, dropped_by_stage = its own drops, kept,
        dropped = every drop so far), clusters, largest_cluster, drop_rate (dropped_by_stage /
        considered) and time_s (the stage's run time when it last ran). The total row is all
        stages together: considered = rows, dropped_by_stage = dropped.

    Raises:
        ManifestError: the folder holds no finished run.
    """
    from dedupkit.manifest import open_manifest, output_root

    root = output_root(path)
    # The counts come from the summaries, but only after the manifests they describe passed the
    # contract check: stats must never disagree with what apply would write.
    summary = open_manifest(root).summary
    rows = []
    if summary.get("pipeline"):
        for entry in summary.get("stages", []):
            s = open_manifest(root / entry["dir"]).summary
            rows.append(_stats_row(entry["name"], entry["dir"], s))
        total = _stats_row("total", str(root), summary)
        total["time_s"] = round(sum(r["time_s"] for r in rows), 3)
        return {"path": str(root), "kind": "run", "stages": rows, "total": total}
    row = _stats_row(summary.get("stage", "stage"), ".", summary)
    total = _stats_row("total", str(root), {"pipeline": True, "counts": summary.get("counts", {}),
                                            "timings": summary.get("timings", {})})
    total["largest_cluster"], total["clusters"] = row["largest_cluster"], row["clusters"]
    return {"path": str(root), "kind": "stage", "stages": [row], "total": total}


def _stats_row(name: str, d: str, s: dict) -> dict:
    from dedupkit.explain import stage_counts

    return {"stage": name, "dir": d, **stage_counts(s),
            "time_s": float(s.get("timings", {}).get("total_s", 0.0))}
