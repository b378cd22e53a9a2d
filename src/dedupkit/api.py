"""Public entry points: the same calls the command line makes.

Example:
    >>> from dedupkit import api  # doctest: +SKIP
    >>> res = api.exact(["data/"], "out/exact", id_column="id")
    >>> api.apply(["data/"], ["out/exact"], "out/clean")
"""

from __future__ import annotations

from typing import Sequence

from dedupkit.apply import ApplyResult, apply_manifests
from dedupkit.engine.local import no_progress
from dedupkit.io.read import ReadSpec
from dedupkit.policy import KeepPolicy
from dedupkit.runner import RunOptions, RunResult, run_stage


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


def apply(inputs: Sequence[str], manifests: Sequence[str], out: str, overwrite: bool = False) -> ApplyResult:
    """Write the rows every manifest keeps. See :func:`dedupkit.apply.apply_manifests`."""
    return apply_manifests(inputs, manifests, out, overwrite=overwrite)


def report(out: str, html_path: str, *, largest: int = 20, sample: int = 30, max_members: int = 8,
           max_chars: int = 2000, seed: int = 0, title: str | None = None):
    """Write the HTML report of a finished run. See :func:`dedupkit.report.html.build_report`."""
    from dedupkit.report.html import ReportOptions, build_report

    return build_report(out, html_path, ReportOptions(largest=largest, sample=sample, max_members=max_members,
                                                      max_chars=max_chars, seed=seed, title=title))


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
    return run_pipeline(inputs, out, cfg, rerun=overwrite, dry_run=dry_run, progress=progress, log=log)


def stats(out: str) -> dict:
    """Per-stage counts of a finished run. See :func:`dedupkit.pipeline.stats`."""
    from dedupkit.pipeline import stats as _stats

    return _stats(out)
