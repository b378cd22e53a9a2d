"""``dedupkit exact``."""

from __future__ import annotations

import click

from dedupkit.cli.options import (
    emit_result, handle_errors, progress_factory, resolve_skip, stage_options,
)
from dedupkit.settings import ExactConfig


@click.command(epilog="""\b
Example:
  dedupkit exact data/ -o out/exact --normalize nfkc,whitespace --keep longest
  dedupkit exact /mnt/shared/corpus -o /mnt/shared/out/exact --engine ray --ray-address auto --workers 64
""")
@stage_options(ExactConfig)
@handle_errors
def exact(inputs, text_column, id_column, batch_size, on_bad_record, output, overwrite, workers, quiet,
          as_json, engine, ray_address, keep, keep_by, keep_order, skip, max_drop_rate, normalize):
    """Drop exact duplicates: documents whose normalized text has the same xxh3-128 hash.

    INPUT is files, folders (recursive) or globs of .parquet, .jsonl(.gz|.zst), .arrow, .csv, .tsv
    shards. Writes OUTPUT/manifest/ (one row per input row) and OUTPUT/summary.json, and prints
    OUTPUT on stdout.
    """
    from dedupkit import api

    result = api.exact(
        inputs, output, text_column=text_column, id_column=id_column, batch_size=batch_size,
        on_bad_record=on_bad_record, normalize=normalize, keep=keep, keep_by=keep_by,
        keep_order=keep_order, workers=workers, overwrite=overwrite, skip=resolve_skip(skip),
        max_drop_rate=max_drop_rate, engine=engine, ray_address=ray_address,
        progress=progress_factory(quiet),
    )
    emit_result(output, result.summary, as_json)
