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
          batch_size: int = 8192, on_bad_record: str = "fail", normalize: str | Sequence[str] = "whitespace",
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


def semantic(inputs: Sequence[str], out: str, *, text_column: str = "text", id_column: str | None = None,
             batch_size: int = 8192, on_bad_record: str = "fail", model: str = "minilm",
             device: str = "auto", embed_batch_size: int = 64, max_tokens: int = 128,
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
        embed=EmbedConfig(model=model, device=device, batch_size=embed_batch_size, max_tokens=max_tokens),
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
