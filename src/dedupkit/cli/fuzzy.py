"""``dedupkit fuzzy``."""

from __future__ import annotations

import click

from dedupkit.cli.options import (
    emit_result, handle_errors, progress_factory, resolve_skip, stage_options,
)
from dedupkit.settings import FuzzyConfig


@click.command(epilog="""\b
A dropped document is always verified directly against the document its duplicate_of names (no
chains A~B~C that drop C for A); score is that pair's similarity under the measure named in the
manifest's `measure` column. The defaults (word-5-gram Jaccard 0.65 or char-5-gram Jaccard 0.9
on the true sets, LSH candidates tuned to 0.5) were chosen by leave-one-suite-out over eight
labelled suites: docs/fuzzy.md.
Rewrites that share few word 5-grams (paraphrases) are out of reach here: use `dedupkit semantic`.

\b
Example:
  dedupkit fuzzy data/ -o out/fuzzy --workers 4
  dedupkit fuzzy data/ -o out/fuzzy --verify sets --measure jaccard,containment
  dedupkit exact data/ -o out/exact | dedupkit fuzzy data/ -o out/fuzzy --skip -
""")
@stage_options(FuzzyConfig)
@handle_errors
def fuzzy(inputs, text_column, id_column, batch_size, on_bad_record, output, overwrite, workers, quiet,
          as_json, keep, keep_by, keep_order, skip, max_drop_rate, engine, ray_address, **options):
    """Drop near-duplicates: MinHash signatures of shingle sets, LSH band buckets, verified pairs.

    INPUT is files, folders (recursive) or globs of .parquet, .jsonl(.gz|.zst), .arrow, .csv, .tsv
    shards. Writes OUTPUT/manifest/ (one row per input row; score = similarity to the kept
    document, measure = which measure decided) and OUTPUT/summary.json (bands, rows, candidate and
    verified pairs per measure), and prints OUTPUT.
    """
    from dedupkit import api

    if (options["bands"] is None) != (options["rows"] is None):
        raise click.UsageError("give --bands and --rows together, or neither to derive them from "
                               "--candidate-threshold")
    result = api.fuzzy(
        inputs, output, text_column=text_column, id_column=id_column, batch_size=batch_size,
        on_bad_record=on_bad_record, keep=keep, keep_by=keep_by, keep_order=keep_order, workers=workers,
        overwrite=overwrite, skip=resolve_skip(skip), max_drop_rate=max_drop_rate,
        progress=progress_factory(quiet), engine=engine, ray_address=ray_address, **options,
    )
    emit_result(output, result.summary, as_json)
