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
