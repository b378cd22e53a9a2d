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

    settings = make_settings(stages, normalize, minhash)  # normalize None: the exact stage's default
    if inputs:
        discover_inputs_first(inputs)
    with create_index(location, settings, overwrite=overwrite) as store:
        if not inputs:
            return AddResult(location=store.location, added=0, first_doc=0, documents=0, bad_records=0,
                             shards=0, seconds=0.0)
        try:
            return add_inputs(store, inputs, read_spec(text_column, id_column, batch_size, on_bad_record),
                              workers=workers, progress=progress)
        except BaseException:
            store.discard()  # a failed create leaves no empty index behind
            raise


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
