"""Public entry points: the same calls the command line makes.

Every stage function takes the inputs, the output folder and the stage's config object
(:mod:`dedupkit.settings`); any setting may instead be given as a keyword (``threshold=0.8``,
``id_column="id"``, ``workers=4``): it goes to the stage config, the read config or the run config,
whichever has it. It returns a :class:`StageResult`.

Example:
    >>> import dedupkit
    >>> res = dedupkit.exact([str(data)], str(tmp / "exact"), id_column="id", workers=2)
    >>> res.counts["dropped"]
    1
    >>> dedupkit.apply([str(data)], [str(res.out)], str(tmp / "clean")).summary["kept"]
    3
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence, TypeVar

from dedupkit.errors import ConfigError
from dedupkit.settings import (
    AuditConfig, DecontaminateConfig, ExactConfig, FuzzyConfig, IndexConfig, InspectConfig, KeepConfig, ReadConfig, ReportConfig,
    RunConfig, SemanticConfig, SubstringConfig, specs,
)
from dedupkit.stages.builders import decontaminate_config, keep_policy, make_stage

if TYPE_CHECKING:  # apply pulls in pyarrow.dataset; stage runs do not need it
    from dedupkit.apply import ApplyResult
    from dedupkit.engine import ProgressFactory
    from dedupkit.io.read import ReadSpec
    from dedupkit.pipeline import PipelineResult

C = TypeVar("C")


@dataclass(frozen=True)
class StageResult:
    """What a stage run produced.

    Attributes:
        out: the output folder (``out/manifest/``, ``out/summary.json``).
        summary: the run's summary.json (counts, settings, timings, stage statistics).
        reused: the folder already held a finished run of the same stage, settings and inputs,
            which was kept as it was.
    """

    out: Path
    summary: dict[str, Any] = field(default_factory=dict)
    reused: bool = False

    @property
    def stage(self) -> str:
        """The stage name (``exact``, ``fuzzy``, ...)."""
        return self.summary.get("stage", "")

    @property
    def counts(self) -> dict[str, int]:
        """Rows, kept, dropped, ... of the manifest."""
        return dict(self.summary.get("counts") or {})

    @property
    def manifest(self) -> Path:
        """The manifest folder (one Parquet row per input row)."""
        return Path(self.out) / "manifest"

    @classmethod
    def _of(cls, res: Any) -> "StageResult":
        return cls(out=Path(res.out), summary=res.summary, reused=bool(getattr(res, "reused", False)))


def _sort_settings(name: str, configs: Sequence[tuple[type, Any]], settings: Mapping[str, Any]) -> list[Any]:
    """Sort keyword settings into configs: each ``(class, object or None)`` pair gives the class whose
    fields it takes and the base object (None: the defaults); returns the objects, in order."""
    known = [specs(cls) for cls, _ in configs]
    parts: list[dict[str, Any]] = [{} for _ in configs]
    for key, value in settings.items():
        for i, k in enumerate(known):
            if key in k:
                parts[i][key] = value
                break
        else:
            from dedupkit.stages.registry import did_you_mean

            valid = sorted(set().union(*known))
            raise ConfigError(f"{name} has no setting {key!r}{did_you_mean(key, valid)}; settings are: "
                              f"{', '.join(valid)}")
    out = []
    for (cls, obj), part in zip(configs, parts):
        obj = cls() if obj is None else obj
        out.append(dataclasses.replace(obj, **part) if part else obj)
    return out


def _configs(name: str, cls: type[C], config: C | None, read: ReadConfig | None, runtime: RunConfig | None,
             settings: Mapping[str, Any]) -> tuple[C, ReadConfig, RunConfig]:
    """Sort keyword settings into the stage, read and run configs (given objects are the base)."""
    config, read, runtime = _sort_settings(name, [(cls, config), (ReadConfig, read), (RunConfig, runtime)],
                                           settings)
    return config, read, runtime


@dataclass(frozen=True)
class _NoSettings:
    """The stage config of a command that has none of its own."""


def _read_run(name: str, read: ReadConfig | None, runtime: RunConfig | None,
              settings: Mapping[str, Any]) -> tuple[ReadConfig, RunConfig]:
    _, read, runtime = _configs(name, _NoSettings, None, read, runtime, settings)
    return read, runtime


def read_spec(read: ReadConfig | None = None, **settings: Any) -> "ReadSpec":
    """The :class:`dedupkit.io.read.ReadSpec` of a read config (or of keyword settings)."""
    from dedupkit.io.read import ReadSpec

    read = dataclasses.replace(read or ReadConfig(), **settings)
    return ReadSpec(text_column=read.text_column, id_column=read.id_column, batch_size=read.batch_size,
                    on_bad_record=read.on_bad_record)


def _progress(progress: Callable | None) -> Callable:
    if progress is not None:
        return progress
    from dedupkit.engine.local import no_progress

    return no_progress


def _run(stage: Any, inputs: Sequence[str], out: str | os.PathLike, read: ReadConfig, runtime: RunConfig,
         skip: Sequence[str], overwrite: bool, max_drop_rate: float | None, progress: Callable | None):
    from dedupkit.runner import RunOptions, run_stage

    opts = RunOptions(workers=runtime.workers, engine=runtime.engine, ray_address=runtime.ray_address,
                      skip=tuple(str(s) for s in skip), overwrite=overwrite, max_drop_rate=max_drop_rate)
    return run_stage(stage, [str(i) for i in inputs], str(out), read_spec(read), opts, _progress(progress))


def exact(inputs: Sequence[str], out: str | os.PathLike, config: ExactConfig | None = None, *,
          read: ReadConfig | None = None, runtime: RunConfig | None = None, skip: Sequence[str] = (),
          overwrite: bool = False, max_drop_rate: float | None = None, progress: Callable | None = None,
          **settings: Any) -> StageResult:
    """Drop exact duplicates: documents whose normalized text has the same xxh3-128 hash.

    Args:
        inputs: files, folders (recursive) or globs of Parquet / JSONL shards.
        out: the output folder (``manifest/`` and ``summary.json``).
        config: the stage's settings (``dedupkit exact --help``).
        read, runtime: how shards are read; where the work runs.
        skip: manifest folders of earlier stages whose dropped rows are left out.
        overwrite: replace a finished run made otherwise.
        max_drop_rate: abort (GuardrailError) when more than this share would be dropped.
        settings: any field of ``config``, ``read`` or ``runtime`` as a keyword.

    Example:
        >>> import dedupkit
        >>> res = dedupkit.exact([str(data)], str(tmp / "exact-lower"), dedupkit.ExactConfig(normalize="lower"))
        >>> res.counts["dropped"]
        1
    """
    config, read, runtime = _configs("exact", ExactConfig, config, read, runtime, settings)
    return StageResult._of(_run(make_stage(config), inputs, out, read, runtime, skip, overwrite, max_drop_rate,
                                progress))


def fuzzy(inputs: Sequence[str], out: str | os.PathLike, config: FuzzyConfig | None = None, *,
          read: ReadConfig | None = None, runtime: RunConfig | None = None, skip: Sequence[str] = (),
          overwrite: bool = False, max_drop_rate: float | None = None, progress: Callable | None = None,
          **settings: Any) -> StageResult:
    """Drop near-duplicates: MinHash signatures of shingle sets, LSH band buckets, verified pairs.

    Arguments as :func:`exact`; ``config`` is a :class:`dedupkit.FuzzyConfig` (``dedupkit fuzzy --help``).

    Raises:
        ConfigError: an unknown or invalid setting.

    Example:
        >>> import dedupkit
        >>> res = dedupkit.fuzzy([str(data)], str(tmp / "fuzzy-0.7"), threshold=0.7, id_column="id")
        >>> res.stage, res.counts["rows"]
        ('fuzzy', 4)
    """
    config, read, runtime = _configs("fuzzy", FuzzyConfig, config, read, runtime, settings)
    return StageResult._of(_run(make_stage(config), inputs, out, read, runtime, skip, overwrite, max_drop_rate,
                                progress))


def substring(inputs: Sequence[str], out: str | os.PathLike, config: SubstringConfig | None = None, *,
              read: ReadConfig | None = None, runtime: RunConfig | None = None, skip: Sequence[str] = (),
              overwrite: bool = False, max_drop_rate: float | None = None, progress: Callable | None = None,
              **settings: Any) -> StageResult:
    """Cut repeated passages (``unit="span"``), lines or paragraphs out of documents.

    Writes ``out/manifest`` (documents dropped when cut below ``min_length``), ``out/spans`` (the cut
    spans) and ``out/summary.json`` (with the audit figures for spans). Arguments as :func:`exact`.

    Example:
        >>> import dedupkit
        >>> res = dedupkit.substring([str(data)], str(tmp / "substring"), min_tokens=5)
        >>> res.counts["documents_cut"]
        1
        >>> dedupkit.apply([str(data)], [str(res.out)], str(tmp / "clean")).summary["kept"]
        4
    """
    config, read, runtime = _configs("substring", SubstringConfig, config, read, runtime, settings)
    return StageResult._of(_run(make_stage(config), inputs, out, read, runtime, skip, overwrite, max_drop_rate,
                                progress))


@dataclass(frozen=True)
class AuditResult:
    """The memorisation-risk profile of a corpus (:func:`audit`; ``dedupkit audit`` prints
    :meth:`to_dict` as JSON).

    Attributes:
        inputs: the shard names read.
        min_tokens: the passage length (tokens) whose repeats were counted.
        tokens: the corpus's tokens.
        tokens_in_repeats: ``{"2x": n, "10x": n, "100x": n}``: tokens inside a passage of at least
            ``min_tokens`` tokens that occurs at least that many times.
        share: the same as shares of ``tokens`` (``repeated_2x``, ``repeated_10x``, ``repeated_100x``).
        shards: per shard, ``{"shard", "tokens", "share"}``.
        top_spans: the most repeated passages, with their counts and two example locations.
    """

    inputs: list[str]
    min_tokens: int
    tokens: int
    tokens_in_repeats: dict[str, int]
    share: dict[str, float]
    shards: list[dict[str, Any]]
    top_spans: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """The profile as a JSON-ready dict, in field order."""
        return dataclasses.asdict(self)


def audit(inputs: Sequence[str], config: AuditConfig | None = None, *, read: ReadConfig | None = None,
          runtime: RunConfig | None = None, skip: Sequence[str] = (), progress: Callable | None = None,
          **settings: Any) -> AuditResult:
    """The memorisation-risk profile of a corpus (see ``dedupkit audit --help``).

    Returns:
        An :class:`AuditResult`: the ``share`` of tokens inside passages of at least ``min_tokens``
        tokens repeated at least 2, 10 and 100 times, the same per shard, and the ``top_spans``.

    Example:
        >>> import dedupkit
        >>> profile = dedupkit.audit([str(data)], min_tokens=5)
        >>> profile.tokens, profile.share["repeated_2x"] > 0
        (52, True)
    """
    import shutil
    import tempfile

    from dedupkit.stages.substring import SubstringConfig as _Substring, SubstringStage

    config, read, runtime = _configs("audit", AuditConfig, config, read, runtime, settings)
    tmp = tempfile.mkdtemp(prefix="dedupkit-audit-", dir=config.work_dir)
    try:
        stage = SubstringStage(_Substring(unit="span", min_tokens=config.min_tokens, partitions=config.partitions),
                               write_spans=False)
        res = _run(stage, inputs, tmp, read, runtime, skip, False, None, progress)
        return AuditResult(inputs=[s["name"] for s in res.summary["inputs"]], **res.summary["stats"]["audit"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def apply(inputs: Sequence[str], manifests: Sequence[str], out: str, overwrite: bool = False, *,
          workers: int = RunConfig.workers, engine: str | None = None, ray_address: str | None = None,
          progress: ProgressFactory | None = None) -> ApplyResult:
    """Write the rows every manifest keeps (``workers``/``engine``: one task per shard). See
    :func:`dedupkit.apply.apply_manifests`."""
    from dedupkit.apply import apply_manifests

    return apply_manifests([str(i) for i in inputs], [str(m) for m in manifests], str(out), overwrite=overwrite,
                           workers=workers, engine=engine, ray_address=ray_address, progress=progress)


def report(out: str | os.PathLike, html_path: str | os.PathLike, config: ReportConfig | None = None, *,
           overwrite: bool = False, **settings: Any):
    """Write the HTML report of a finished run (``dedupkit report --help``); ``settings`` are fields
    of :class:`dedupkit.settings.ReportConfig`. See :func:`dedupkit.report.html.build_report`."""
    from dedupkit.report.html import ReportOptions, build_report

    c = dataclasses.replace(config or ReportConfig(), **settings)
    return build_report(out, html_path, ReportOptions(largest=c.largest, sample=c.sample, max_members=c.max_members,
                                                      max_chars=c.max_chars, seed=c.seed, title=c.title,
                                                      max_bytes=int(c.max_mb * 1e6)), overwrite=overwrite)


def inspect(out: str | os.PathLike, *, cluster: int | None = None, doc: str | None = None,
            largest: int | None = None, stage: str | None = None, config: InspectConfig | None = None,
            **settings: Any):
    """Clusters of a finished run with texts and diffs (``dedupkit inspect --help``); ``settings``
    are fields of :class:`dedupkit.settings.InspectConfig`. See :func:`dedupkit.report.inspect.inspect_run`."""
    from dedupkit.report.inspect import inspect_run

    c = dataclasses.replace(config or InspectConfig(), **settings)
    return inspect_run(out, cluster=cluster, doc=doc, largest=largest, stage=stage,
                       max_members=c.max_members, max_chars=c.max_chars)


def run(inputs: Sequence[str], out: str, *, config: str | None = None, stages: str | Sequence[str] | None = None,
        sets: Sequence[str] = (), text_column: str | None = None, id_column: str | None = None,
        batch_size: int | None = None, on_bad_record: str | None = None, workers: int | None = None,
        engine: str | None = None, ray_address: str | None = None, max_drop_rate: float | None = None,
        clean: str | None = None, dry_run: bool = False, overwrite: bool = False, env=None,
        progress: Callable | None = None, log: Callable[[str], None] = lambda msg: None) -> "PipelineResult":
    """Run several stages in order and combine their manifests (``dedupkit run``).

    Arguments left as None come from the environment (``DEDUPKIT_*``), then ``config`` (a TOML
    file), then the defaults; see :func:`dedupkit.config.resolve`. ``sets`` are ``STAGE.KEY=VALUE``
    overrides of stage settings.

    Returns:
        :class:`dedupkit.pipeline.PipelineResult`.

    Example:
        >>> import dedupkit
        >>> res = dedupkit.run([str(data)], str(tmp / "run"), stages="exact,fuzzy", id_column="id")
        >>> res.summary["counts"]["kept"], res.summary["counts"]["dropped_by_stage"]
        (3, {'exact': 1})
    """
    from dedupkit.config import resolve
    from dedupkit.pipeline import run_pipeline

    if isinstance(stages, (list, tuple)):
        stages = ",".join(stages)
    flags = {"stages": stages, "text_column": text_column, "id_column": id_column, "batch_size": batch_size,
             "on_bad_record": on_bad_record, "workers": workers, "engine": engine, "ray_address": ray_address,
             "max_drop_rate": max_drop_rate, "clean": clean}
    cfg = resolve(config, flags=flags, sets=sets, env=env)
    return run_pipeline(inputs, out, cfg, overwrite=overwrite, dry_run=dry_run, progress=_progress(progress), log=log)


def stats(out: str) -> dict:
    """Per-stage counts of a finished run. See :func:`dedupkit.manifest.stats.stats`."""
    from dedupkit.manifest.stats import stats as _stats

    return _stats(out)

def semantic(inputs: Sequence[str], out: str | os.PathLike, config: SemanticConfig | None = None, *,
             read: ReadConfig | None = None, runtime: RunConfig | None = None, skip: Sequence[str] = (),
             overwrite: bool = False, max_drop_rate: float | None = None, progress: Callable | None = None,
             **settings: Any) -> StageResult:
    """Drop semantic duplicates with SemDeDup (``dedupkit semantic --help``). Arguments as :func:`exact`.

    With ``analyze=True`` nothing is dropped: the manifest keeps every row (with the
    ``nearest_sim``/``nearest_doc`` columns) and ``OUT/analysis.json`` holds, per eps, the number of
    documents that would be dropped and sample pairs just above and below each threshold.

    Example:
        >>> import dedupkit
        >>> res = dedupkit.semantic([str(data)], str(tmp / "sem"), eps="0.02,0.05,0.1", analyze=True,
        ...                         cache_dir=str(tmp / "cache"))
        >>> res.counts["rows"], res.counts["dropped"]  # analyze: every row kept, counts per eps in the summary
        (4, 0)
    """
    import json

    if isinstance(settings.get("eps"), (list, tuple)):  # eps=[0.02, 0.05]: the list --eps takes
        settings["eps"] = ",".join(map(str, settings["eps"]))
    config, read, runtime = _configs("semantic", SemanticConfig, config, read, runtime, settings)
    stage = make_stage(config)
    result = _run(stage, inputs, out, read, runtime, skip, overwrite, None if config.analyze else max_drop_rate,
                  progress)
    if config.analyze and stage.analysis is not None:
        path = Path(out) / "analysis.json"
        from dedupkit.atomic import atomic_write

        atomic_write(path, json.dumps(stage.analysis, indent=2, ensure_ascii=False), hidden=True, sync=False)
    return StageResult._of(result)

def index_create(location: str, inputs: Sequence[str] = (), config: IndexConfig | None = None, *,
                 overwrite: bool = False, read: ReadConfig | None = None, runtime: RunConfig | None = None,
                 progress: Callable | None = None, **settings: Any):
    """Create an index (a folder, or ``redis://HOST:PORT/DB``) and add ``inputs`` to it.

    Args:
        location: the index folder, or ``redis://HOST:PORT/DB``.
        inputs: shards, folders or globs to index (none: the index starts empty).
        config: what the index keeps (``dedupkit index create --help``).
        overwrite: replace an existing index at ``location``.
        read, runtime: how shards are read; where the work runs.
        settings: any field of ``config``, ``read`` or ``runtime`` as a keyword.

    Returns:
        :class:`dedupkit.index.ops.AddResult`.

    Example:
        >>> import dedupkit
        >>> dedupkit.index_create(str(tmp / "corpus.idx"), [str(data)], stages="exact,fuzzy", id_column="id").added
        4
    """
    from dedupkit.index import create_index
    from dedupkit.index.ops import AddResult, add_inputs, make_settings
    from dedupkit.index.redis_store import is_redis_url

    config, read, runtime = _configs("index create", IndexConfig, config, read, runtime, settings)
    workers, progress = runtime.workers, _progress(progress)
    settings = make_settings(config)
    if inputs:
        discover_inputs_first(inputs)
    spec = read_spec(read)
    from dedupkit.io import fs

    if fs.is_remote(location) and not is_redis_url(location):
        # built locally, then uploaded with index.json (its completion mark) last
        return fs.remote_output(location, ("index.json", "segments"), lambda local: _create_local_index(
            str(local), settings, inputs, spec, False, workers, progress), markers=("index.json",), pull=False,
            overwrite=overwrite)
    if not is_redis_url(location):
        return _create_local_index(location, settings, inputs, spec, overwrite, workers, progress)
    with create_index(location, settings, overwrite=overwrite) as store:
        if not inputs:
            return AddResult(location=store.location, added=0, first_doc=0, documents=0, bad_records=0,
                             shards=0, seconds=0.0)
        try:
            return add_inputs(store, inputs, spec, workers=workers, progress=progress)
        except BaseException:
            store.discard()  # a failed create leaves no empty index behind
            raise


_INDEX_NAMES = {"index.json", "segments", ".lock"}  # what dedupkit.index.local writes in INDEX


def _create_local_index(location, settings, inputs, spec, overwrite, workers, progress):
    """Create a folder index; on --overwrite the new one is built beside the old and swapped in.

    Nothing is deleted before the new index is complete, and only the index's own files are ever
    deleted: an INDEX folder holding anything else is refused. A failed create leaves the tree as
    it was (no index folder, no parent folders it made).
    """
    import dataclasses
    import shutil
    from pathlib import Path

    from dedupkit.index import IndexStoreError, create_index
    from dedupkit.index.ops import AddResult, add_inputs
    from dedupkit.index.local import FORMAT as INDEX_FORMAT
    from dedupkit.locks import LockFile
    from dedupkit.outdir import swap_folder
    from dedupkit.ownership import check_creatable, check_separate, made_dirs, read_json, remove_made_dirs

    root = Path(location)
    check_separate(root, [("--from", i) for i in inputs if os.path.exists(i)], contain_ok=True, out_option="INDEX")
    if root.is_symlink() or (root.exists() and not root.is_dir()):
        raise IndexStoreError(f"{root} exists and is not a folder; choose another index path")
    names = {p.name for p in root.iterdir()} if root.exists() else set()
    build = root
    if names:
        meta = read_json(root / "index.json")
        if not (isinstance(meta, dict) and meta.get("format") == INDEX_FORMAT):
            raise IndexStoreError(f"{root} holds other files and is not a dedupkit index; choose another path")
        if not overwrite:
            raise IndexStoreError(f"{root} already holds an index; use `dedupkit index add` to grow it, "
                                  "or pass --overwrite to replace it")
        foreign = sorted(names - _INDEX_NAMES)
        if foreign:
            raise IndexStoreError(f"{root} holds {', '.join(foreign[:3])}, which is not part of the index; "
                                  "--overwrite never deletes it: move it away, or choose another path")
        build = root.with_name(f".{root.name}.dedupkit-new")  # dedupkit's own name: a killed create's leftovers
        if build.exists():
            shutil.rmtree(build)
    else:
        check_creatable(root, "INDEX")
    existed = root.exists()
    made = made_dirs(root.parent)
    try:
        with create_index(str(build), settings) as store:
            if not inputs:
                result = AddResult(location=str(root), added=0, first_doc=0, documents=0, bad_records=0,
                                   shards=0, seconds=0.0)
            else:
                try:
                    result = add_inputs(store, inputs, spec, workers=workers, progress=progress)
                except BaseException:
                    store.discard()  # a failed create leaves no index behind
                    raise
    except BaseException:
        if existed and not root.exists():
            root.mkdir()  # it was an empty folder before
        remove_made_dirs(made)
        raise
    if build != root:
        lock = LockFile(root / ".lock")
        if not lock.try_acquire():
            shutil.rmtree(build, ignore_errors=True)
            raise IndexStoreError(f"{root} is being written by another process; retry when it has finished")
        try:  # INDEX is always the old or the new index
            swap_folder(build, root, root.with_name(f".{root.name}.dedupkit-old"), _remove_index_files)
        finally:
            lock.release()
    return dataclasses.replace(result, location=str(root))


def _remove_index_files(folder: Path) -> None:
    """Delete a folder index's own files (``_INDEX_NAMES``), then the folder if that emptied it."""
    import shutil

    (folder / "index.json").unlink(missing_ok=True)
    shutil.rmtree(folder / "segments", ignore_errors=True)
    (folder / ".lock").unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass


def _no_remote_writes(location: str, what: str) -> None:
    """Object stores have no lock and no rename: growing an index there could lose a writer's update."""
    from dedupkit.index import IndexStoreError
    from dedupkit.index.redis_store import is_redis_url
    from dedupkit.io import fs

    if fs.is_remote(location) and not is_redis_url(location):
        raise IndexStoreError(
            f"`dedupkit {what}` cannot grow an index on an object store ({fs.clean(location)}): a store "
            "has no lock, so two writers could lose each other's documents. Use a local or shared-disk "
            "index folder, or a Redis index (redis://...), and `index create` a new store copy from it")


def discover_inputs_first(inputs: Sequence[str]) -> None:
    """Fail on missing inputs before touching an index."""
    from dedupkit.io.shards import discover

    discover(inputs)


def index_add(location: str, inputs: Sequence[str], *, read: ReadConfig | None = None,
              runtime: RunConfig | None = None, progress: Callable | None = None, **settings: Any):
    """Add the documents of ``inputs`` to an existing index, with the index's own settings.

    ``settings`` are fields of the read and run configs as keywords (``id_column="id"``).
    """
    from dedupkit.index import open_index
    from dedupkit.index.ops import add_inputs

    _no_remote_writes(location, "index add")
    read, runtime = _read_run("index add", read, runtime, settings)
    discover_inputs_first(inputs)
    with open_index(location) as store:
        return add_inputs(store, inputs, read_spec(read), workers=runtime.workers, progress=_progress(progress))


def index_info(location: str) -> dict:
    """Settings, document count, segments and size of an index (verifies it on the way)."""
    from dedupkit.index import open_index

    with open_index(location) as store:
        return store.info().to_dict()


def check(inputs: Sequence[str], out: str, against: str, config: IndexConfig | None = None, *,
          max_dup_rate: float | None = None, update: bool = False, policy: KeepConfig | None = None,
          overwrite: bool = False, read: ReadConfig | None = None, runtime: RunConfig | None = None,
          progress: Callable | None = None, **settings: Any):
    """Check a new drop against an index; see ``dedupkit check --help``.

    The keys are computed with the index's own settings. ``config`` (an :class:`IndexConfig`) and
    IndexConfig fields given as keywords (``stages="exact"``, ``num_perm=256``) are requirements: each
    must equal the index's (a mismatch raises ConfigError); with neither, any index is accepted.
    ``settings`` are fields of the index config, the keep policy (:class:`KeepConfig`), the read and
    the run configs as keywords.

    Returns:
        :class:`dedupkit.index.ops.CheckResult`.

    Raises:
        CheckFailed: the duplicate rate is above ``max_dup_rate`` (the manifest is written first).

    Example:
        >>> import dedupkit
        >>> idx = str(tmp / "corpus.idx")
        >>> _ = dedupkit.index_create(idx, [str(data)], stages="exact", id_column="id")
        >>> res = dedupkit.check([str(data)], str(tmp / "check"), idx, id_column="id")
        >>> res.summary["counts"]["dropped"]  # every row is in the index already
        4
    """
    from dedupkit.index import open_index
    from dedupkit.index.ops import run_check
    from dedupkit.runner import RunOptions

    if update:
        _no_remote_writes(against, "check --update")
    asked = set(specs(IndexConfig)) if config is not None else set(settings) & set(specs(IndexConfig))
    config, policy, read, runtime = _sort_settings(
        "check", [(IndexConfig, config), (KeepConfig, policy), (ReadConfig, read), (RunConfig, runtime)], settings)
    requested = {k: getattr(config, k) if k in asked else None for k in ("stages", "normalize")}
    requested["minhash"] = {k: getattr(config, k) for k in IndexConfig.MINHASH if k in asked}
    opts = RunOptions(workers=runtime.workers, engine=runtime.engine, ray_address=runtime.ray_address,
                      overwrite=overwrite)
    with open_index(against) as store:
        return run_check(store, inputs, out, read_spec(read), policy=keep_policy(policy), max_dup_rate=max_dup_rate,
                         update=update, options=opts, progress=_progress(progress), requested=requested)


def decontaminate(inputs: Sequence[str], out: str | os.PathLike, against: Sequence[str],
                  config: DecontaminateConfig | None = None, *, read: ReadConfig | None = None,
                  runtime: RunConfig | None = None, skip: Sequence[str] = (), overwrite: bool = False,
                  max_drop_rate: float | None = None, progress: Callable | None = None,
                  **settings: Any) -> StageResult:
    """Find eval-set items in ``inputs``; drop (or cut) the documents that hold them.

    ``against`` are eval sets (files, folders, ``NAME=PATH``). See ``dedupkit decontaminate --help``
    and :mod:`dedupkit.decontaminate` for the method. In ``cut`` mode, ``OUT/spans/`` lists the cut
    spans. Other arguments as :func:`exact`.

    Example:
        >>> import json, dedupkit
        >>> item = {"question": "What is the weather in the mountains", "answer": "today"}
        >>> _ = (tmp / "quiz.jsonl").write_text(json.dumps(item))
        >>> res = dedupkit.decontaminate([str(data)], str(tmp / "decon"), [f"quiz={tmp / 'quiz.jsonl'}"],
        ...                              eval_fields="question,answer", ngram=5, min_tokens=5)
        >>> res.counts["dropped"]
        1
    """
    from dedupkit.decontaminate import DecontaminateStage, load_eval_sets

    config, read, runtime = _configs("decontaminate", DecontaminateConfig, config, read, runtime, settings)
    items = load_eval_sets(against, config.fields_list(), config.eval_id)
    from dedupkit.io import fs

    root = fs.staging_dir(out) if fs.is_remote(out) else Path(fs.local(out))  # where the run is built
    stage = DecontaminateStage(items, decontaminate_config(config), str(root / ".work" / "decontaminate-index"))
    return StageResult._of(_run(stage, inputs, out, read, runtime, skip, overwrite, max_drop_rate, progress))


def check_evals(inputs: Sequence[str], out: str, evals: Sequence[str], **kwargs):
    """The eval-set part of ``dedupkit check --against``: decontaminate ``inputs`` into ``out`` and
    raise CheckFailed (exit code 3), naming each document and item, when any eval item is found.

    ``kwargs`` are those of :func:`decontaminate` (mode is always drop).

    Raises:
        CheckFailed: some document holds an eval item; its ``result`` attribute holds the RunResult.
    """
    from dedupkit.decontaminate import contamination_failure
    from dedupkit.errors import CheckFailed

    res = decontaminate(inputs, out, evals, mode="drop", **kwargs)
    msg = contamination_failure(res.summary, out)
    if msg:
        exc = CheckFailed(msg)
        exc.result = res  # type: ignore[attr-defined]
        raise exc
    return res
