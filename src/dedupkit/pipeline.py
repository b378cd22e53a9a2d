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

import fcntl
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
from dedupkit.config import PipelineConfig, build_stage
from dedupkit.errors import ConfigError, GuardrailError, ManifestError, OutputError
from dedupkit.io.shards import discover, fingerprint

# numpy, pyarrow.compute/dataset, the runner and the stages are imported where they are used: a
# rerun with nothing changed only reads summaries and fingerprints the inputs, and should cost
# little more than starting Python.

SUMMARY = "summary.json"  # = dedupkit.manifest.SUMMARY
MANIFEST_DIR = "manifest"  # = dedupkit.manifest.MANIFEST_DIR
STATE = "pipeline.json"
LOCK = ".dedupkit.lock"
_STAGE_DIR = re.compile(r"^\d{2}-[A-Za-z0-9_]+$")
_OURS = {LOCK, STATE, SUMMARY, MANIFEST_DIR, ".manifest.tmp"}


# --------------------------------------------------------------------------------------------
# Stage builders named by the registry in dedupkit.config


def build_exact(normalize="lower,whitespace", keep="first", keep_by=None, keep_order="desc", **unknown):
    """The exact stage from its command's options."""
    from dedupkit.policy import KeepPolicy
    from dedupkit.stages.exact import ExactConfig, ExactStage

    _no_unknown("exact", unknown)
    return ExactStage(ExactConfig(normalize=normalize, policy=KeepPolicy(keep, keep_by, keep_order)))


def build_fuzzy(shingle="word", ngram=5, num_perm=128, seed=1, threshold=0.65, bands=None, rows=None,
                scheme="affine64", verify="signature", keep="first", keep_by=None, keep_order="desc", **unknown):
    """The fuzzy (MinHash-LSH) stage from its command's options."""
    from dedupkit.minhash import MinHashConfig
    from dedupkit.policy import KeepPolicy
    from dedupkit.stages.fuzzy import FuzzyConfig, FuzzyStage

    _no_unknown("fuzzy", unknown)
    if (bands is None) != (rows is None):
        raise ConfigError("give bands and rows together, or neither to derive them from threshold")
    mh = MinHashConfig(num_perm=num_perm, seed=seed, shingle=shingle, ngram=ngram, threshold=threshold,
                       bands=bands, rows=rows, scheme=scheme)
    return FuzzyStage(FuzzyConfig(minhash=mh, verify=verify, policy=KeepPolicy(keep, keep_by, keep_order)))


def build_semantic(model="minilm", device="auto", embed_batch_size=64, max_tokens=128, eps=0.07, clusters=None,
                   fit_sample=None, niter=20, keep="hard", keep_by=None, keep_order="desc", seed=42,
                   analyze=False, cache_dir=None, no_cache=False, **unknown):
    """The semantic (SemDeDup) stage from its command's options."""
    from dedupkit.embed import EmbedConfig
    from dedupkit.stages.semantic import SemanticConfig, SemanticStage

    _no_unknown("semantic", unknown)
    if analyze:
        raise ConfigError("analyze = true drops nothing, so it has no place in a pipeline; run "
                          "`dedupkit semantic --analyze --skip OUT/NN-stage` on the earlier stages' output")
    cfg = SemanticConfig(
        embed=EmbedConfig(model=model, device=device, batch_size=embed_batch_size, max_tokens=max_tokens),
        eps=eps, clusters=clusters, fit_sample=fit_sample, niter=niter, keep=keep, keep_by=keep_by,
        order=keep_order, seed=seed, analyze=False, cache_dir=cache_dir, use_cache=not no_cache,
    )
    return SemanticStage(cfg)


def _no_unknown(stage: str, unknown: dict) -> None:
    # Options of the stage command that change nothing the stage decides (progress, json, ...)
    # are not passed; anything else here is an option this builder does not know yet.
    if unknown:
        raise ConfigError(f"the {stage} stage has no setting {', '.join(sorted(unknown))}")


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
                stages[j] = build_stage(s.name, s.options)
            except ConfigError as exc:
                where = f"{config.source}: [{s.name}]" if config.source else f"stage {s.name}"
                raise ConfigError(f"{where}: {exc}") from None


class _Lock:
    def __init__(self, root: Path):
        self.root = root
        self.fh = None

    def __enter__(self):
        self.fh = open(self.root / LOCK, "a+")
        try:
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.fh.close()
            raise OutputError(f"{self.root} is being written by another dedupkit run; wait for it to "
                              "finish or choose another -o") from None
        # What a killed run left half-written (we hold the lock, nobody else writes here).
        for p in self.root.iterdir():
            if p.name.startswith((SUMMARY + ".tmp", STATE + ".tmp")):
                p.unlink(missing_ok=True)
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc is not None:
                shutil.rmtree(self.root / ".manifest.tmp", ignore_errors=True)
        finally:
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_UN)
            self.fh.close()
        if isinstance(exc, OSError):  # disk full while combining: a clear error, not a traceback
            from dedupkit.outdir import write_error

            raise write_error(exc, self.root) from exc


def _check_out(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise OutputError(f"{root} exists and is not a folder; choose another -o")
    if not root.exists():
        return
    entries = {p.name for p in root.iterdir()}
    foreign = sorted(e for e in entries - _OURS if not _STAGE_DIR.match(e)
                     and not e.startswith((SUMMARY + ".tmp", STATE + ".tmp")))
    if foreign:
        raise OutputError(f"{root} already holds other files ({', '.join(foreign[:3])}); `dedupkit run` "
                          "only writes into a new folder or one it wrote before: choose another -o")
    if SUMMARY in entries:
        try:
            s = json.loads((root / SUMMARY).read_text())
        except ValueError:
            s = {}
        if not s.get("pipeline"):
            raise OutputError(f"{root} holds the output of a single `dedupkit {s.get('stage', 'stage')}` "
                              "run, not of `dedupkit run`; choose another -o")


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
        rc, rr = clean.resolve(), root.resolve()
        if rc == rr or rr in rc.parents or rc in rr.parents:
            raise ConfigError(f"--clean {clean} and -o {root} must be separate folders, neither inside the other")
    exclude = [str(root)] + ([str(clean)] if clean else [])
    shards = discover(inputs, exclude=exclude)
    # Stages get the discovered files, not the raw INPUTs: a folder INPUT that contains OUT would
    # otherwise let a later stage read an earlier stage's manifest as data.
    shard_inputs = [s.name for s in shards]
    fps = [(s.name, fingerprint(s.path)) for s in shards]
    read = {"text_column": config.text_column, "id_column": config.id_column, "batch_size": config.batch_size,
            "on_bad_record": config.on_bad_record}
    root.mkdir(parents=True, exist_ok=True)
    with _Lock(root):
        _check_out(root)
        state = {} if rerun else _read_state(root)
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
                rec = state.get("stages", {}).get(name)
                if rec and rec.get("key") == key and (sdir / SUMMARY).exists():
                    try:
                        summary = _load_summary_light(sdir)
                        sha = _sha_file(sdir / SUMMARY)
                        same_inputs = [(x["name"], x["fingerprint"]) for x in summary.get("inputs", [])] == fps
                        reused = rec.get("summary_sha") == sha and same_inputs
                    except ManifestError:
                        reused = False
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
                log(f"{settings.name}: up to date, reused {sdir}")
            else:
                if not changed:
                    changed = True
                _invalidate(root)
                for stale in sorted(p for p in root.iterdir() if _STAGE_DIR.match(p.name) and p.name not in wanted):
                    shutil.rmtree(stale)
                from dedupkit.engine.local import no_progress
                from dedupkit.io.read import ReadSpec
                from dedupkit.runner import RunOptions, run_stage

                spec = ReadSpec(**read)
                opts = RunOptions(workers=config.workers, engine=config.engine, ray_address=config.ray_address,
                                  skip=(str(prev_dir),) if prev_dir is not None else (), overwrite=True,
                                  max_drop_rate=settings.max_drop_rate)
                res = run_stage(stage, shard_inputs, sdir, spec, opts, progress or no_progress)
                summary = res.summary
                sha = _sha_file(sdir / SUMMARY)
                c = summary["counts"]
                log(f"{stage.name}: {c['considered']} rows in, dropped {c['dropped_by_stage']} "
                    f"({c['drop_rate']:.1%}), {c['clusters']} clusters, {summary['timings']['total_s']:.1f}s")
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
            for stale in sorted(p for p in root.iterdir() if _STAGE_DIR.match(p.name) and p.name not in wanted):
                shutil.rmtree(stale)
            summary = _write_combined(root, runs, config, t0)
            new_state["combined"] = {"stages": stage_shas}
            _write_state(root, new_state)
        top_sha = _sha_file(top)

        clean_out = None
        if clean is not None and not dry_run:
            rec = new_state.get("clean") or {}
            if (up_to_date and rec.get("path") == str(clean.resolve()) and rec.get("summary_sha") == top_sha
                    and (clean / "_dedupkit_apply.json").exists()):
                log(f"clean corpus: up to date, {clean}")
            else:
                from dedupkit.apply import APPLY_SUMMARY, apply_manifests

                if clean.exists() and not (clean / APPLY_SUMMARY).exists():
                    raise OutputError(f"clean folder {clean} exists and was not written by dedupkit; "
                                      "choose another --clean folder")
                res = apply_manifests(shard_inputs, [str(root)], clean, overwrite=True)
                log(f"clean corpus: wrote {res.summary['kept']} of {res.summary['rows']} rows to {clean}")
                new_state["clean"] = {"path": str(clean.resolve()), "summary_sha": top_sha}
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
    tmp = root / ".manifest.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    counts = combine_manifests([root / r.dir for r in runs], tmp)
    final = root / MANIFEST_DIR
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
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
        PARTS_KEY: part_records(final),
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
    Per input row: ``keep`` is true when every stage kept it; ``stage`` names the stage that dropped
    it (the last stage for kept rows); ``duplicate_of`` is followed through the chain to the kept
    document at its end (A exact-duplicate of B, B fuzzy-duplicate of C: A's duplicate_of is C) and
    ``direct_duplicate_of`` keeps the match the dropping stage made; ``cluster_id`` joins the
    clusters of all stages that share a document (the smallest global row number of the joined
    cluster); ``score`` is the dropping stage's similarity to its direct match.

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
    resolved = tgt.copy()
    idx = np.arange(n, dtype=np.int64)
    for _ in range(len(tables) + 2):
        r = np.where(resolved >= 0, resolved, 0)
        step = (resolved >= 0) & ~keep[r] & (tgt[r] >= 0) & (tgt[r] != r)
        if not step.any():
            break
        resolved[step] = tgt[r[step]]
    else:
        raise ManifestError(f"duplicate_of links in {', '.join(map(str, dirs))} form a cycle; rerun the stages")
    dup_of = pc.if_else(pa.array(resolved >= 0), doc_ids.take(pa.array(np.where(resolved >= 0, resolved, 0))),
                        pa.scalar(None, pa.string()))

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

    score = base.column("score").combine_chunks()
    for t in reversed(tables[:-1]):
        score = pc.if_else(pc.and_(pc.is_null(score), pa.array(member)), t.column("score").combine_chunks(), score)

    table = pa.table({
        "shard": shard_col.combine_chunks(),
        "row": rows_col.combine_chunks(),
        "doc_id": doc_ids,
        "keep": pa.array(keep),
        "cluster_id": pa.array(cluster, pa.int64(), mask=cluster < 0),
        "duplicate_of": dup_of,
        "score": score.cast(pa.float32()),
        "stage": base.column("stage").combine_chunks(),
        "reason": base.column("reason").combine_chunks() if "reason" in base.column_names
        else pa.nulls(n, pa.string()),
        "direct_duplicate_of": pc.if_else(pa.array(keep), pa.scalar(None, pa.string()), direct),
    })
    names = shard_col.combine_chunks()
    out = Path(out_dir)
    if n:
        starts = np.flatnonzero(np.r_[True, np.asarray(pc.not_equal(names[1:], names[:-1]))]) \
            if n > 1 else np.array([0])
        ends = np.r_[starts[1:], n]
        for si, (a, b) in enumerate(zip(starts, ends)):
            write_table_atomic(table.slice(int(a), int(b - a)), out / f"part-{si:05d}.parquet")
    dropped_stage = table.column("stage").filter(pc.invert(table.column("keep")))
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
        stage, dir, rows (rows the stage considered), kept, dropped, clusters, largest_cluster,
        drop_rate and time_s (the stage's run time when it last ran).

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
        c = summary["counts"]
        total = {"stage": "total", "dir": str(root), "rows": c["rows"], "kept": c["kept"], "dropped": c["dropped"],
                 "clusters": c["clusters"], "largest_cluster": c["largest_cluster"], "drop_rate": c["drop_rate"],
                 "time_s": round(sum(r["time_s"] for r in rows), 3)}
        return {"path": str(root), "kind": "run", "stages": rows, "total": total}
    row = _stats_row(summary.get("stage", "stage"), ".", summary)
    c = summary["counts"]
    total = {**row, "stage": "total", "dir": str(root), "rows": c["rows"], "kept": c["kept"], "dropped": c["dropped"],
             "drop_rate": (c["dropped"] / c["rows"]) if c["rows"] else 0.0}
    return {"path": str(root), "kind": "stage", "stages": [row], "total": total}


def _stats_row(name: str, d: str, s: dict) -> dict:
    c = s.get("counts", {})
    considered = int(c.get("considered", c.get("rows", 0)))
    dropped = int(c.get("dropped_by_stage", c.get("dropped", 0)))
    return {"stage": name, "dir": d, "rows": considered, "kept": considered - dropped, "dropped": dropped,
            "clusters": int(c.get("clusters", 0)), "largest_cluster": int(c.get("largest_cluster", 0)),
            "drop_rate": float(c.get("drop_rate", 0.0)), "time_s": float(s.get("timings", {}).get("total_s", 0.0))}
