"""``dedupkit run`` (several stages, one combined manifest) and ``dedupkit stats``."""

from __future__ import annotations

import json

import click

from dedupkit.cli.options import PathOrURL, handle_errors, progress_factory
from dedupkit.cli.schema import config_options
from dedupkit.settings import PipelineSettings, ReadConfig, RunConfig
from dedupkit.terminal import safe_text


def _stats_table(st: dict) -> str:
    from dedupkit.explain import LABELS, ORDER

    head = ("stage", *(LABELS[k] for k in ORDER), "clusters", "largest", "drop rate", "time")
    lines = []
    for r in st["stages"] + [st["total"]]:
        lines.append((r["stage"], *(f"{r[k]:,}" for k in ORDER), f"{r['clusters']:,}",
                      f"{r['largest_cluster']:,}", f"{r['drop_rate']:.2%}", f"{r['time_s']:.1f}s"))
    widths = [max(len(h), *(len(x[i]) for x in lines)) for i, h in enumerate(head)]

    def fmt(row):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    out = [fmt(head), "  ".join("-" * w for w in widths)]
    out += [fmt(x) for x in lines[:-1]]
    out += ["  ".join("-" * w for w in widths), fmt(lines[-1])]
    return "\n".join(out)


@click.command(epilog="""\b
Config precedence: flag > DEDUPKIT_* environment > config file > default.
Presets: configs/default.toml, web.toml, code.toml, cjk.toml.

\b
Example:
  dedupkit run data/ -o out/run -c configs/default.toml --id-column id
  dedupkit run data/ -o out/run --stages exact,fuzzy --set fuzzy.threshold=0.7 --clean out/clean
""")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Output folder: NN-stage/ per stage, manifest/ (combined), summary.json.")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), envvar="DEDUPKIT_CONFIG",
              help="TOML config: top-level run settings and one [stage] table per stage.")
@config_options(PipelineSettings, only=["stages"], unset=True, env=False,
                help={"stages": "Comma-separated stages in order [default: config's stages, else exact,fuzzy]."})
@click.option("--set", "sets", multiple=True, metavar="STAGE.KEY=VALUE",
              help="Override one stage setting, e.g. --set fuzzy.threshold=0.7 (repeatable).")
@config_options(ReadConfig, unset=True, env=False)
@config_options(RunConfig, unset=True, env=False)
@config_options(PipelineSettings, only=["max_drop_rate", "clean"], unset=True, env=False)
@click.option("--dry-run", is_flag=True,
              help="Write the manifests and print the per-stage summary, but never the clean corpus.")
@click.option("--overwrite", is_flag=True,
              help="Replace a finished run made with other inputs, stages or settings: rerun the stages "
                   "that changed (and those after them). Without it such a folder is refused; a "
                   "finished run of the same inputs and settings is reused either way.")
@click.option("--rerun", is_flag=True, help="Run every stage again, even those that are up to date.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or per-stage lines.")
@click.option("--json", "as_json", is_flag=True, help="Print the combined summary as JSON on stdout.")
@handle_errors
def run(inputs, output, config_path, stages, sets, text_column, id_column, batch_size, on_bad_record,
        workers, engine, ray_address, max_drop_rate, clean, dry_run, overwrite, rerun, quiet, as_json):
    """Run several stages in order and combine their manifests.

    Each stage sees only the rows the earlier ones kept. OUTPUT/manifest/ holds one row per input
    row: keep = kept by every stage, duplicate_of followed through the chain to the kept
    document, stage = the stage that dropped the row. `dedupkit apply` takes OUTPUT like a single
    stage's output. Rerunning the same command reuses every stage that is up to date. Prints
    OUTPUT on stdout.
    """
    # Not through dedupkit.api, which imports every stage's runtime: an up-to-date rerun should
    # cost little more than starting Python.
    from dedupkit.config import resolve
    from dedupkit.manifest.stats import stats
    from dedupkit.pipeline import run_pipeline

    log = (lambda msg: None) if quiet else (lambda msg: click.echo(msg, err=True))
    flags = {"stages": stages, "text_column": text_column, "id_column": id_column, "batch_size": batch_size,
             "on_bad_record": on_bad_record, "workers": workers, "engine": engine, "ray_address": ray_address,
             "max_drop_rate": max_drop_rate, "clean": clean}
    cfg = resolve(config_path, flags=flags, sets=sets)
    res = run_pipeline(inputs, output, cfg, rerun=rerun, overwrite=overwrite, dry_run=dry_run, progress=progress_factory(quiet),
                       log=log)
    if as_json:
        click.echo(json.dumps(res.summary, indent=2, default=str))
    else:
        click.echo(str(res.out))
    if dry_run:
        click.echo(_stats_table(stats(res.out)), err=True)
    if not quiet:
        from dedupkit.explain import count_line, stage_counts

        note = ("up to date, reused" if res.up_to_date else "") + f" in {res.elapsed_s:.1f}s"
        click.echo(count_line("run", stage_counts(res.summary), note.strip()), err=True)


@click.command(epilog="""\b
Example:
  dedupkit stats out/run
  dedupkit stats out/run --json | jq '.total.drop_rate'
""")
@click.argument("output", metavar="OUT", type=PathOrURL(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as JSON.")
@handle_errors
def stats(output, as_json):
    """Print per-stage counts of a finished run: rows, kept, dropped, clusters, largest cluster,
    drop rate and time.

    OUT is the -o folder of `dedupkit run` or of a single stage. "stage input" is what each
    stage saw (the rows earlier stages kept), "dropped by stage" its own drops, "dropped in
    total" every drop up to that stage; the total row is all stages together.
    """
    from dedupkit.manifest.stats import stats as get_stats

    st = get_stats(output)
    # stage names and folders come from summaries: shown with control characters escaped
    click.echo(json.dumps(st, indent=2) if as_json else safe_text(_stats_table(st)))
