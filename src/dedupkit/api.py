"""Public entry points: the same calls the command line makes.

Example:
    >>> from dedupkit import api  # doctest: +SKIP
    >>> res = api.exact(["data/"], "out/exact", id_column="id")
    >>> api.apply(["data/"], ["out/exact"], "out/clean")
"""

from __future__ import annotations

import os

from typing import TYPE_CHECKING, Sequence

from dedupkit.engine.local import no_progress
from dedupkit.io.read import ReadSpec
from dedupkit.policy import KeepPolicy
from dedupkit.runner import RunOptions, RunResult, run_stage

if TYPE_CHECKING:  # apply pulls in pyarrow.dataset; stage runs do not need it
    from dedupkit.apply import ApplyResult


def read_spec(text_column: str = "text", id_column: str | None = None, batch_size: int = 8192,
              on_bad_record: str = "fail") -> ReadSpec:
    return ReadSpec(text_column=text_column, id_column=id_column, batch_size=batch_size,
                    on_bad_record=on_bad_record)


def exact(inputs: Sequence[str], out: str, *, text_column: str = "text", id_column: str | None = None,
          batch_size: int = 8192, on_bad_record: str = "fail", normalize: str | Sequence[str] = "lower,whitespace",
          keep: str = "first", keep_by: str | None = None, keep_order: str = "desc", workers: int = 1,
          overwrite: bool = False, skip: Sequence[str] = (), max_drop_rate: float | None = None,
          engine: str = "local", ray_address: str | None = None, progress=no_progress) -> RunResult:
    """Run the exact stage. See ``dedupkit exact --help`` for the meaning of each argument."""
    from dedupkit.stages.exact import ExactConfig, ExactStage

    stage = ExactStage(ExactConfig(normalize=normalize, policy=KeepPolicy(keep, keep_by, keep_order)))
    opts = RunOptions(workers=workers, engine=engine, ray_address=ray_address, skip=tuple(skip),
                      overwrite=overwrite, max_drop_rate=max_drop_rate)
    return run_stage(stage, inputs, out, read_spec(text_column, id_column, batch_size, on_bad_record),
                     opts, progress)


def fuzzy(inputs: Sequence[str], out: str, *, text_column: str = "text", id_column: str | None = None,
          batch_size: int = 8192, on_bad_record: str = "fail", keep: str = "first", keep_by: str | None = None,
          keep_order: str = "desc", workers: int = 1, overwrite: bool = False, skip: Sequence[str] = (),
          max_drop_rate: float | None = None, engine: str = "local", ray_address: str | None = None,
          progress=no_progress, **options) -> RunResult:
    """Run the fuzzy (MinHash-LSH) stage. See ``dedupkit fuzzy --help`` for each argument.

    ``options`` are the fuzzy settings of :meth:`dedupkit.stages.fuzzy.FuzzyConfig.from_options`
    (shingle, ngram, num_perm, seed, threshold, candidate_threshold, bands, rows, scheme, verify,
    measure, containment_threshold, containment_min, char_threshold, char_ngram, cluster); the
    defaults are those of ``dedupkit fuzzy``.

    Raises:
        ConfigError: an unknown or invalid option.

    Example:
        >>> api.fuzzy(["data/"], "out/fuzzy", id_column="id", threshold=0.8)  # doctest: +SKIP
    """
    from dedupkit.pipeline import build_fuzzy

    stage = build_fuzzy(keep=keep, keep_by=keep_by, keep_order=keep_order, **options)
    opts = RunOptions(workers=workers, engine=engine, ray_address=ray_address, skip=tuple(skip),
                      overwrite=overwrite, max_drop_rate=max_drop_rate)
    return run_stage(stage, inputs, out, read_spec(text_column, id_column, batch_size, on_bad_record),
                     opts, progress)


def substring(inputs: Sequence[str], out: str, *, text_column: str = "text", id_column: str | None = None,
              batch_size: int = 8192, on_bad_record: str = "fail", unit: str = "span",
              min_tokens: int | None = None, keep: str = "first", min_length: int = 0, min_docs: int = 2,
              protect: float = 0.8, partitions: int = 0, keep_by: str | None = None, keep_order: str = "desc",
              workers: int = 1, overwrite: bool = False, skip: Sequence[str] = (),
              max_drop_rate: float | None = None, engine: str = "local", ray_address: str | None = None,
              progress=no_progress) -> RunResult:
    """Cut repeated passages (``unit="span"``), lines or paragraphs out of documents.

    Writes ``out/manifest`` (documents dropped when cut below ``min_length``), ``out/spans`` (the cut
    spans) and ``out/summary.json`` (with the audit figures for spans). See ``dedupkit substring --help``.

    Example:
        >>> api.substring(["data/"], "out/substring", min_tokens=50)  # doctest: +SKIP
        >>> api.apply(["data/"], ["out/substring"], "out/clean")  # doctest: +SKIP
    """
    from dedupkit.stages.substring import SubstringConfig, SubstringStage

    cfg = SubstringConfig(unit=unit, min_tokens=min_tokens, keep=keep, min_length=min_length, min_docs=min_docs,
                          protect=protect, partitions=partitions, policy=KeepPolicy("first", keep_by, keep_order))
    opts = RunOptions(workers=workers, engine=engine, ray_address=ray_address, skip=tuple(skip),
                      overwrite=overwrite, max_drop_rate=max_drop_rate)
    return run_stage(SubstringStage(cfg), inputs, out, read_spec(text_column, id_column, batch_size, on_bad_record),
                     opts, progress)


def audit(inputs: Sequence[str], *, text_column: str = "text", id_column: str | None = None,
          batch_size: int = 8192, on_bad_record: str = "fail", min_tokens: int = 50, partitions: int = 0,
          workers: int = 1, skip: Sequence[str] = (), engine: str = "local", ray_address: str | None = None,
          work_dir: str | None = None, progress=no_progress) -> dict:
    """The memorisation-risk profile of a corpus (see ``dedupkit audit --help``).

    Returns:
        A dict: ``tokens``, ``share`` of tokens inside passages of at least ``min_tokens`` tokens
        repeated at least 2, 10 and 100 times, the same per shard, and the ``top_spans``.

    Example:
        >>> api.audit(["data/"], min_tokens=50)["share"]["repeated_2x"]  # doctest: +SKIP
        0.031
    """
    import shutil
    import tempfile

    from dedupkit.stages.substring import SubstringConfig, SubstringStage

    tmp = tempfile.mkdtemp(prefix="dedupkit-audit-", dir=work_dir)
    try:
        stage = SubstringStage(SubstringConfig(unit="span", min_tokens=min_tokens, partitions=partitions),
                               write_spans=False)
        opts = RunOptions(workers=workers, engine=engine, ray_address=ray_address, skip=tuple(skip))
        res = run_stage(stage, inputs, tmp, read_spec(text_column, id_column, batch_size, on_bad_record), opts,
                        progress)
        return {"inputs": [s["name"] for s in res.summary["inputs"]], **res.summary["stats"]["audit"]}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def apply(inputs: Sequence[str], manifests: Sequence[str], out: str, overwrite: bool = False) -> ApplyResult:
    """Write the rows every manifest keeps. See :func:`dedupkit.apply.apply_manifests`."""
    from dedupkit.apply import apply_manifests

    return apply_manifests(inputs, manifests, out, overwrite=overwrite)


def report(out: str, html_path: str, *, largest: int = 20, sample: int = 30, max_members: int = 8,
           max_chars: int = 2000, seed: int = 0, title: str | None = None, max_bytes: int = 4_000_000,
           overwrite: bool = False):
    """Write the HTML report of a finished run. See :func:`dedupkit.report.html.build_report`."""
    from dedupkit.report.html import ReportOptions, build_report

    return build_report(out, html_path, ReportOptions(largest=largest, sample=sample, max_members=max_members,
                                                      max_chars=max_chars, seed=seed, title=title,
                                                      max_bytes=max_bytes), overwrite=overwrite)


def inspect(out: str, *, cluster: int | None = None, doc: str | None = None, largest: int | None = None,
            stage: str | None = None, max_members: int = 20, max_chars: int = 1500):
    """Clusters of a finished run with texts and diffs. See :func:`dedupkit.report.inspect.inspect_run`."""
    from dedupkit.report.inspect import inspect_run

    return inspect_run(out, cluster=cluster, doc=doc, largest=largest, stage=stage,
                       max_members=max_members, max_chars=max_chars)

def run(inputs: Sequence[str], out: str, *, config: str | None = None, stages: str | Sequence[str] | None = None,
        sets: Sequence[str] = (), text_column: str | None = None, id_column: str | None = None,
        batch_size: int | None = None, on_bad_record: str | None = None, workers: int | None = None,
        engine: str | None = None, ray_address: str | None = None, max_drop_rate: float | None = None,
        clean: str | None = None, dry_run: bool = False, overwrite: bool = False, env=None,
        progress=no_progress, log=lambda msg: None):
    """Run several stages in order and combine their manifests (``dedupkit run``).

    Arguments left as None come from the environment (``DEDUPKIT_*``), then ``config`` (a TOML
    file), then the defaults; see :func:`dedupkit.config.resolve`. ``sets`` are ``STAGE.KEY=VALUE``
    overrides of stage settings.

    Returns:
        :class:`dedupkit.pipeline.PipelineResult`.

    Example:
        >>> api.run(["data/"], "out/run", config="configs/default.toml", id_column="id")  # doctest: +SKIP
    """
    from dedupkit.config import resolve
    from dedupkit.pipeline import run_pipeline

    if isinstance(stages, (list, tuple)):
        stages = ",".join(stages)
    flags = {"stages": stages, "text_column": text_column, "id_column": id_column, "batch_size": batch_size,
             "on_bad_record": on_bad_record, "workers": workers, "engine": engine, "ray_address": ray_address,
             "max_drop_rate": max_drop_rate, "clean": clean}
    cfg = resolve(config, flags=flags, sets=sets, env=env)
    return run_pipeline(inputs, out, cfg, overwrite=overwrite, dry_run=dry_run, progress=progress, log=log)


def stats(out: str) -> dict:
    """Per-stage counts of a finished run. See :func:`dedupkit.pipeline.stats`."""
    from dedupkit.pipeline import stats as _stats

    return _stats(out)

def semantic(inputs: Sequence[str], out: str, *, text_column: str = "text", id_column: str | None = None,
             batch_size: int = 8192, on_bad_record: str = "fail", model: str = "minilm",
             device: str = "auto", embed_batch_size: int = 64, max_tokens: int = 128, backend: str = "auto",
             eps: float | str | Sequence[float] = 0.07, clusters: int | None = None,
             fit_sample: int | None = None, niter: int = 20, keep: str = "hard", keep_by: str | None = None,
             keep_order: str = "desc", seed: int = 42, analyze: bool = False, cache_dir: str | None = None,
             use_cache: bool = True, workers: int = 1, overwrite: bool = False, skip: Sequence[str] = (),
             max_drop_rate: float | None = None, engine: str = "local", ray_address: str | None = None,
             progress=no_progress) -> RunResult:
    """Run the semantic (SemDeDup) stage. See ``dedupkit semantic --help`` for each argument.

    With ``analyze=True`` nothing is dropped: the manifest keeps every row (with the
    ``nearest_sim``/``nearest_doc`` columns) and ``OUT/analysis.json`` holds, per eps, the number of
    documents that would be dropped and sample pairs just above and below each threshold.

    Example:
        >>> api.semantic(["data/"], "out/sem", eps="0.02,0.05,0.1", analyze=True)  # doctest: +SKIP
    """
    import json
    import os

    from dedupkit.embed import EmbedConfig
    from dedupkit.stages.semantic import SemanticConfig, SemanticStage

    cfg = SemanticConfig(
        embed=EmbedConfig(model=model, device=device, batch_size=embed_batch_size, max_tokens=max_tokens,
                          backend=backend),
        eps=eps, clusters=clusters, fit_sample=fit_sample, niter=niter, keep=keep, keep_by=keep_by,
        order=keep_order, seed=seed, analyze=analyze, cache_dir=cache_dir, use_cache=use_cache,
    )
    stage = SemanticStage(cfg)
    opts = RunOptions(workers=workers, engine=engine, ray_address=ray_address, skip=tuple(skip),
                      overwrite=overwrite, max_drop_rate=None if analyze else max_drop_rate)
    result = run_stage(stage, inputs, out, read_spec(text_column, id_column, batch_size, on_bad_record),
                       opts, progress)
    if analyze and stage.analysis is not None:
        from pathlib import Path

        path = Path(out) / "analysis.json"
        tmp = path.with_name(f".analysis.json.tmp{os.getpid()}")
        tmp.write_text(json.dumps(stage.analysis, indent=2, ensure_ascii=False))
        os.replace(tmp, path)
    return result

def index_create(location: str, inputs: Sequence[str] = (), *, stages: str | Sequence[str] = "exact",
                 normalize: str | Sequence[str] | None = None, minhash: dict | None = None,
                 overwrite: bool = False, text_column: str = "text", id_column: str | None = None,
                 batch_size: int = 8192, on_bad_record: str = "fail", workers: int = 1, progress=no_progress):
    """Create an index (a folder, or ``redis://HOST:PORT/DB``) and add ``inputs`` to it.

    Returns:
        :class:`dedupkit.index.ops.AddResult`.

    Example:
        >>> api.index_create("corpus.idx", ["data/"], stages="exact,fuzzy", id_column="id")  # doctest: +SKIP
    """
    from dedupkit.index import create_index
    from dedupkit.index.ops import AddResult, add_inputs, make_settings
    from dedupkit.index.redis_store import is_redis_url

    settings = make_settings(stages, normalize, minhash)  # normalize None: the exact stage's default
    if inputs:
        discover_inputs_first(inputs)
    spec = read_spec(text_column, id_column, batch_size, on_bad_record)
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
    import fcntl
    import shutil
    from pathlib import Path

    from dedupkit.index import IndexStoreError, create_index
    from dedupkit.index.ops import AddResult, add_inputs
    from dedupkit.index.local import FORMAT as INDEX_FORMAT
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
        old = root.with_name(f".{root.name}.dedupkit-old")
        with open(root / ".lock", "a+") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                shutil.rmtree(build, ignore_errors=True)
                raise IndexStoreError(f"{root} is being written by another process; retry when it has "
                                      "finished") from None
            os.replace(root, old)  # one step each: INDEX is always the old or the new index
            os.replace(build, root)
        (old / "index.json").unlink(missing_ok=True)
        shutil.rmtree(old / "segments", ignore_errors=True)
        (old / ".lock").unlink(missing_ok=True)
        try:
            old.rmdir()
        except OSError:
            pass
    return dataclasses.replace(result, location=str(root))


def discover_inputs_first(inputs: Sequence[str]) -> None:
    """Fail on missing inputs before touching an index."""
    from dedupkit.io.shards import discover

    discover(inputs)


def index_add(location: str, inputs: Sequence[str], *, text_column: str = "text", id_column: str | None = None,
              batch_size: int = 8192, on_bad_record: str = "fail", workers: int = 1, progress=no_progress):
    """Add the documents of ``inputs`` to an existing index, with the index's own settings."""
    from dedupkit.index import open_index
    from dedupkit.index.ops import add_inputs

    discover_inputs_first(inputs)
    with open_index(location) as store:
        return add_inputs(store, inputs, read_spec(text_column, id_column, batch_size, on_bad_record),
                          workers=workers, progress=progress)


def index_info(location: str) -> dict:
    """Settings, document count, segments and size of an index (verifies it on the way)."""
    from dedupkit.index import open_index

    with open_index(location) as store:
        return store.info().to_dict()


def check(inputs: Sequence[str], out: str, against: str, *, max_dup_rate: float | None = None,
          update: bool = False, text_column: str = "text", id_column: str | None = None,
          batch_size: int = 8192, on_bad_record: str = "fail", keep: str = "first", keep_by: str | None = None,
          keep_order: str = "desc", stages: str | None = None, normalize: str | None = None,
          minhash: dict | None = None, workers: int = 1, overwrite: bool = False, engine: str = "local",
          ray_address: str | None = None, progress=no_progress):
    """Check a new drop against an index; see ``dedupkit check --help``.

    ``stages``, ``normalize`` and ``minhash`` are optional: left out, the index's settings are used;
    given, they must equal the index's (a mismatch raises ConfigError).

    Raises:
        CheckFailed: the duplicate rate is above ``max_dup_rate`` (the manifest is written first).
    """
    from dedupkit.index import open_index
    from dedupkit.index.ops import run_check

    opts = RunOptions(workers=workers, engine=engine, ray_address=ray_address, overwrite=overwrite)
    with open_index(against) as store:
        return run_check(store, inputs, out, read_spec(text_column, id_column, batch_size, on_bad_record),
                         policy=KeepPolicy(keep, keep_by, keep_order), max_dup_rate=max_dup_rate,
                         update=update, options=opts, progress=progress,
                         requested={"stages": stages, "normalize": normalize, "minhash": minhash})


def decontaminate(inputs: Sequence[str], out: str, against: Sequence[str], *, eval_fields: str | Sequence[str] | None = None,
                  eval_id: str | None = None, ngram: int = 13, min_tokens: int = 5, min_overlap: float = 0.5,
                  mode: str = "drop", margin: int = 200, max_pieces: int = 8, max_cut_fraction: float = 0.5,
                  text_column: str = "text", id_column: str | None = None, batch_size: int = 8192,
                  on_bad_record: str = "fail", workers: int = 1, overwrite: bool = False, skip: Sequence[str] = (),
                  max_drop_rate: float | None = None, engine: str = "local", ray_address: str | None = None,
                  progress=no_progress) -> RunResult:
    """Find eval-set items in ``inputs``; drop (or cut) the documents that hold them.

    See ``dedupkit decontaminate --help`` and :mod:`dedupkit.decontaminate` for the method. In
    ``cut`` mode, ``OUT/spans/`` lists the cut spans.

    Example:
        >>> api.decontaminate(["data/"], "out/decon", ["quiz=evals/quiz.jsonl"],
        ...                   eval_fields="question,answer")  # doctest: +SKIP
    """
    from pathlib import Path

    from dedupkit.decontaminate import DecontaminateConfig, DecontaminateStage, load_eval_sets

    if isinstance(eval_fields, str):
        eval_fields = [f.strip() for f in eval_fields.split(",") if f.strip()] or None
    cfg = DecontaminateConfig(ngram=ngram, min_tokens=min_tokens, min_overlap=min_overlap, mode=mode, margin=margin,
                              max_pieces=max_pieces, max_cut_fraction=max_cut_fraction)
    items = load_eval_sets(against, eval_fields, eval_id)
    stage = DecontaminateStage(items, cfg, str(Path(out) / ".work" / "decontaminate-index"))
    opts = RunOptions(workers=workers, engine=engine, ray_address=ray_address, skip=tuple(skip),
                      overwrite=overwrite, max_drop_rate=max_drop_rate)
    return run_stage(stage, inputs, out, read_spec(text_column, id_column, batch_size, on_bad_record), opts, progress)


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
