"""``dedupkit apply``."""

from __future__ import annotations

import click

from dedupkit.cli.options import engine_options, handle_errors, progress_factory
from dedupkit.cli.schema import config_options
from dedupkit.settings import RunConfig


@click.command(epilog="""\b
Example:
  dedupkit apply data/ --manifest out/exact --manifest out/fuzzy -o out/clean
  dedupkit apply data/ -m out/exact -o s3://bucket/clean --engine ray --workers 8
""")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("-m", "--manifest", "manifests", multiple=True, required=True, metavar="OUT",
              help="A stage's output folder (repeatable); a row is dropped if any manifest drops it.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Folder for the clean shards (same names and formats as the input).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the per-shard counts as JSON.")
@config_options(RunConfig, only=["workers"])
@engine_options
@handle_errors
def apply(inputs, manifests, output, overwrite, as_json, workers, engine, ray_address):
    """Write the kept rows of INPUT shards, one output shard per input shard.

    Every column and the schema are kept; JSONL lines are copied byte for byte. A shard that
    changed since the manifest was made (its fingerprint differs) is refused. With --engine ray, or
    --workers 2 or more and several shards, one task per shard writes its clean shard (to an s3://
    output, it uploads it itself) and the command writes _dedupkit_apply.json last; the files are
    the same.
    """
    import json

    from dedupkit import api

    res = api.apply(inputs, manifests, output, overwrite=overwrite, workers=workers, engine=engine,
                    ray_address=ray_address, progress=progress_factory(False))
    click.echo(json.dumps(res.summary, indent=2) if as_json else str(res.out))
    click.echo(f"apply: {res.summary['rows']} rows, wrote {res.summary['kept']}", err=True)
