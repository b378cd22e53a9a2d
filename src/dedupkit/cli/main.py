"""``dedupkit`` entry point. Subcommands load lazily so that ``dedupkit --help`` stays fast."""

from __future__ import annotations

import importlib
import logging
import sys

import click

from dedupkit import __version__

# name -> (module, attribute, one-line help). Modules are imported only when the command runs.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "exact": ("dedupkit.cli.exact", "exact", "Drop exact duplicates (xxh3-128 of normalized text)."),
    "fuzzy": ("dedupkit.cli.fuzzy", "fuzzy", "Drop near-duplicates (MinHash signatures + LSH)."),
    "semantic": ("dedupkit.cli.semantic", "semantic", "Drop semantic duplicates (embeddings + nearest neighbours)."),
    "substring": ("dedupkit.cli.substring", "substring", "Cut repeated passages out of documents (spans)."),
    "audit": ("dedupkit.cli.substring", "audit", "Memorisation-risk profile: how much text repeats."),
    "apply": ("dedupkit.cli.apply", "apply", "Write the kept rows of INPUT shards, as manifests say."),
    "run": ("dedupkit.cli.run", "run", "Run several stages in order and combine their manifests."),
    "stats": ("dedupkit.cli.run", "stats", "Print per-stage counts of a finished run."),
    "index": ("dedupkit.cli.index", "index", "Create and grow an index of a corpus you already hold."),
    "check": ("dedupkit.cli.index", "check", "Deduplicate a new data drop against an index (CI gate)."),
    "decontaminate": ("dedupkit.cli.decontaminate", "decontaminate",
                      "Drop (or cut) documents holding evaluation-set items."),
    "report": ("dedupkit.cli.report", "report", "Write a self-contained HTML report of a run."),
    "inspect": ("dedupkit.cli.report", "inspect", "Show duplicate clusters in the terminal."),
    "cache": ("dedupkit.cli.cache", "cache", "Show or remove cached embeddings and models."),
}

EPILOG = """\b
Exit codes: 0 done, 1 failure, 2 usage error, 3 check failed (duplicate rate above
--max-dup-rate, or eval items found), 4 guardrail (a stage would drop more than --max-drop-rate).

\b
Example:
  dedupkit exact examples/corpus -o out/exact --id-column id
  dedupkit apply examples/corpus --manifest out/exact -o out/clean
"""


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        mod, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(mod), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(n, COMMANDS[n][2]) for n in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _show_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """``dedupkit --version``: the version, then which kernels run (C extensions or Python)."""
    if not value or ctx.resilient_parsing:
        return
    from dedupkit.errors import DedupkitError

    try:
        from dedupkit import kernels

        line = kernels.summary_line()
    except DedupkitError as exc:  # a bad DEDUPKIT_KERNELS
        line = f"kernels: {exc}"
    click.echo(f"dedupkit, version {__version__}\n{line}")
    ctx.exit()


@click.group(cls=LazyGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_show_version,
              help="Show the version and which kernels (C or Python) run, and exit.")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), envvar="DEDUPKIT_CONFIG",
              help="TOML config whose [stage] tables (and top-level read settings) give defaults to "
                   "every command; flags and DEDUPKIT_* variables still win. See configs/.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, config_path: str | None) -> None:
    """Remove duplicate documents from Parquet/JSONL text corpora.

    Each stage writes a keep/drop manifest (OUT/manifest/*.parquet, one row per input row) and
    OUT/summary.json; `apply` writes the kept rows. Stages chain with --skip.
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)  # again: an earlier -q in this process raised it
    if config_path and ctx.invoked_subcommand:
        from dedupkit.config import command_defaults
        from dedupkit.errors import DedupkitError

        try:
            ctx.default_map = command_defaults(config_path, [ctx.invoked_subcommand])
        except DedupkitError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(exc.exit_code)


def main() -> None:
    from dedupkit.fastart import quiet_blas_threads, skip_pandas_probe

    skip_pandas_probe()  # pyarrow's probe for pandas costs 0.2 s per process (dedupkit.fastart)
    quiet_blas_threads()  # OpenBLAS's threads spun for 0.06 CPU s at numpy's import (dedupkit.fastart)
    try:
        cli(prog_name="dedupkit")
    except KeyboardInterrupt:
        # a Ctrl-C that lands while a finished or failing command unwinds, outside its own handler
        # (an uncaught one would end the process by the signal, not with 130 and this line)
        from dedupkit.cli.options import exit_interrupted

        exit_interrupted()


def entry() -> None:
    """The ``dedupkit`` program (and ``python -m dedupkit``): :func:`main`, then :func:`exit_now`.

    :func:`main` itself raises SystemExit as usual, for callers that run the CLI in their process.
    """
    try:
        main()
    except SystemExit as exc:
        exit_now(exc.code)


def exit_now(code: object = 0) -> None:
    """End the process once a command is done, without the interpreter's teardown.

    Freeing every module and joining Arrow's thread pools takes 0.1-0.3 s after a run that read
    Parquet, a tenth of a 100,000-document ``dedupkit exact``. What a normal exit does first still
    happens, in the same order: other threads are joined (the local engine's pool), the atexit
    handlers run (logging, Ray, temporary folders), stdout and stderr are flushed; the exit status
    is the one ``sys.exit(code)`` gives.
    """
    import atexit
    import os
    import threading

    status = 0 if code is None else code if isinstance(code, int) else 1
    if not isinstance(code, (int, type(None))):
        print(code, file=sys.stderr)
    try:
        shutdown = getattr(threading, "_shutdown", None)  # what the interpreter's own exit calls first
        if shutdown is None:
            sys.exit(status)
        shutdown()
    except KeyboardInterrupt:
        status = 130
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`): nothing more to say
            pass
    os._exit(status)
