"""Option bundles shared by the stage commands, and turning library errors into Click errors."""

from __future__ import annotations

import functools
import json
import os
import sys
from typing import Any, Callable

import click

from dedupkit.cli.schema import config_options
from dedupkit.errors import DedupkitError
from dedupkit.redact import redact, redact_obj
from dedupkit.settings import GuardConfig, KeepConfig, ReadConfig, RunConfig, specs
from dedupkit.terminal import safe_text


class PathOrURL(click.Path):
    """A ``click.Path`` that lets store URLs (``s3://``, ``gs://``, ...) through unchecked:
    :mod:`dedupkit.io.fs` opens them and says what is wrong."""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, str) and "://" in value and not value.lower().startswith("file://"):
            return value
        return super().convert(value, param, ctx)


def read_column_options(f: Callable) -> Callable:
    """--text-column, --id-column, --batch-size, --on-bad-record (for commands whose inputs are
    named another way, e.g. `index create --from`)."""
    return config_options(ReadConfig)(f)


def read_options(f: Callable) -> Callable:
    """INPUT..., --text-column, --id-column, --batch-size, --on-bad-record."""
    f = read_column_options(f)
    return click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")(f)


def output_options(f: Callable) -> Callable:
    """-o/--output, --overwrite, --workers, --quiet, --json."""
    f = click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")(f)
    f = click.option("-q", "--quiet", is_flag=True, help="No progress bars.")(f)
    f = config_options(RunConfig, only=["workers"])(f)
    f = click.option("--overwrite", is_flag=True,
                     help="Replace a finished run in the output folder. Without it, a finished run "
                          "of the same settings and inputs is reused and one made otherwise is "
                          "refused.")(f)
    f = click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
                     help="Output folder (manifest/ and summary.json).")(f)
    return f


def engine_options(f: Callable) -> Callable:
    """--engine local|ray, --ray-address."""
    return config_options(RunConfig, only=["engine", "ray_address"])(f)


def keep_options(f: Callable) -> Callable:
    """--keep, --keep-by, --keep-order."""
    return config_options(KeepConfig)(f)


def skip_option(f: Callable) -> Callable:
    return click.option(
        "--skip", "skip", multiple=True, metavar="MANIFEST_DIR",
        help="Leave out rows that this earlier stage's manifest dropped (repeatable); '-' reads the "
             "folder from stdin, so `dedupkit exact ... | dedupkit fuzzy ... --skip -` chains.")(f)


def guard_options(f: Callable) -> Callable:
    return config_options(GuardConfig)(f)


def stage_options(config: Any = None) -> Callable[[Callable], Callable]:
    """Every stage command's options: read, output, engine, the keep policy (for a config built on
    :class:`dedupkit.settings.KeepConfig`), --skip, the guardrail, then the stage's own settings
    (generated from ``config``), in that order in --help."""

    def decorate(f: Callable) -> Callable:
        shared = isinstance(config, type) and issubclass(config, KeepConfig)
        bundles = [read_options, output_options, engine_options] + ([keep_options] if shared else [])
        bundles += [skip_option, guard_options]
        if config is not None:
            bundles.append(config_options(config, exclude=specs(KeepConfig) if shared else ()))
        for bundle in reversed(bundles):
            f = bundle(f)
        return f

    return decorate


def resolve_skip(skip: tuple[str, ...]) -> tuple[str, ...]:
    """Replace '-' by the folder read from stdin (the previous stage's stdout)."""
    out = []
    for s in skip:
        if s == "-":
            data = sys.stdin.read().strip().splitlines()
            if not data:
                raise click.UsageError("--skip - expects a manifest folder on stdin, but stdin was empty")
            out.append(data[-1].strip())
        else:
            out.append(s)
    return tuple(out)


#: Environment that keeps third-party libraries quiet; inherited by worker processes (local and
#: Ray), which import those libraries after the command starts.
QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' "Loading weights" bar, hub downloads
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TOKENIZERS_PARALLELISM": "false",  # tokenizers' fork warning
    "PYTHONWARNINGS": "ignore",  # warnings.warn of torch, sentence-transformers, ... in workers
    "ORT_LOGGING_LEVEL": "3",
}


_QUIET = False  # set by quiet_stderr(): emit_result then leaves out its count line


def quiet_stderr() -> None:
    """``-q``: nothing on stderr but errors, from dedupkit and from the libraries it loads.

    Raises the logging threshold to ERROR (dedupkit's own notices, e.g. "distilling ..."), ignores
    Python warnings here and, through :data:`QUIET_ENV`, in worker processes, and turns off
    transformers' and the Hugging Face hub's progress bars before they are imported.
    """
    import logging
    import os
    import warnings

    for k, v in QUIET_ENV.items():
        os.environ[k] = v
    warnings.filterwarnings("ignore")
    logging.getLogger().setLevel(logging.ERROR)
    if "transformers" in sys.modules:  # already imported: its env variables were read then
        sys.modules["transformers"].logging.set_verbosity_error()
        sys.modules["transformers"].logging.disable_progress_bar()


def progress_factory(quiet: bool):
    """tqdm bars on stderr, hidden when stderr is not a terminal or with --quiet (which also
    silences everything on stderr but errors: :func:`quiet_stderr`)."""
    global _QUIET
    _QUIET = quiet
    if quiet:
        quiet_stderr()
    if quiet or not sys.stderr.isatty():
        from dedupkit.engine import no_progress

        return no_progress
    from tqdm import tqdm

    def make(total: int | None, desc: str, unit: str = "task"):
        # documents: 12.3k/100k [00:05<00:20, 2.40kdoc/s]; tasks: 3/16 [00:02<00:08, 1.5task/s]
        return tqdm(total=total, desc=desc, file=sys.stderr, unit=unit, unit_scale=unit == "doc",
                    leave=False, smoothing=0.1)

    return make


def emit_result(out: str, summary: dict[str, Any], as_json: bool) -> None:
    """stdout carries only the output path, or the summary as JSON."""
    if as_json:
        click.echo(json.dumps(redact_obj(summary), indent=2, default=str))
    else:
        click.echo(str(out))
    if summary.get("counts") and not _QUIET:
        from dedupkit.explain import count_line, stage_counts

        note = "up to date, reused the finished run (--overwrite reruns it)" if summary.get("reused") else ""
        click.echo(count_line(summary.get("stage", "run"), stage_counts(summary), note), err=True)


# Commands that open one engine after another on the same Ray instance (``run``: one per stage);
# every other command that takes --engine opens one engine, and the instance stops (or the
# cluster's connection closes) with it.
_SEVERAL_ENGINES = frozenset({"run"})


def _prestart_workers(kwargs: dict[str, Any]) -> None:
    """Start the local engine's --workers processes while the command imports and plans
    (dedupkit.engine.local.prestart), when the inputs are big enough to be split into tasks; or,
    for --engine ray, the local Ray instance, or the connection to --ray-address and its workers
    (dedupkit.engine.ray.prestart)."""
    workers, inputs = kwargs.get("workers"), kwargs.get("inputs")
    ray = kwargs.get("engine") == "ray"
    if not isinstance(workers, int) or not inputs or not (ray or (workers >= 2 and kwargs.get("engine") in (None, "local"))):
        return
    from dedupkit.io import fs
    from dedupkit.io.shards import discover

    out = kwargs.get("output")
    if out and not kwargs.get("overwrite") and not fs.is_remote(str(out)) \
            and os.path.isfile(os.path.join(fs.local(str(out)), "summary.json")):
        return  # a finished run is probably reused: no scan
    command = click.get_current_context(silent=True)
    # local inputs: only when worth two scan pieces (dedupkit.scan: MIN_PIECE_BYTES); Ray: any
    # input that exists (a missing one fails at once, without starting Ray)
    least = 0 if ray else 8 * 2**20
    if not any(fs.is_remote(str(i)) for i in inputs):
        try:
            shards = discover([str(i) for i in inputs])
        except (DedupkitError, OSError):
            return  # the command itself reports it
        if sum(s.size for s in shards) < least:
            return
        if not ray and command is not None and command.info_name == "apply" and len(shards) < 2:
            return  # apply runs one shard in this process (dedupkit.apply): no pool to start
    if ray:  # Ray starts (seconds) or connects while the command plans (dedupkit.engine.ray)
        from dedupkit.engine import ray as engine_ray

        one_engine = command is not None and command.info_name not in _SEVERAL_ENGINES
        return engine_ray.prestart(workers, stop_with_engine=one_engine, address=kwargs.get("ray_address"),
                                   quiet=bool(kwargs.get("quiet")))
    from dedupkit.engine.local import prestart

    prestart(workers)


def _during_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while a Ctrl-C unwound (a KeyboardInterrupt in its cause or
    context chain): e.g. a cleanup that wrote to a file the interrupted code had closed. It is
    reported as the interrupt it came from, not as an error of its own."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def exit_interrupted() -> None:
    """Ctrl-C: one line on stderr and exit status 130 (128 + SIGINT), as shells expect."""
    click.echo("Interrupted; rerun the same command to resume.", err=True)
    sys.exit(130)


def _discard_prestarted() -> None:
    for name in ("dedupkit.engine.local", "dedupkit.engine.ray"):
        engine = sys.modules.get(name)
        if engine is not None:
            engine.discard_prestarted()


def handle_errors(f: Callable) -> Callable:
    """Turn DedupkitError into a clean message on stderr and its exit code."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            _prestart_workers(kwargs)
            return f(*args, **kwargs)
        except DedupkitError as exc:
            _discard_prestarted()
            if _during_interrupt(exc):
                exit_interrupted()
            click.echo(f"Error: {safe_text(redact(str(exc)), one_line=True)}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:  # pragma: no cover
            _discard_prestarted()
            exit_interrupted()

    return wrapper
