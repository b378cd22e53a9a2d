"""``dedupkit substring`` and ``dedupkit audit``."""

from __future__ import annotations

import json

import click

from dedupkit.cli.options import (
    emit_result, engine_options, handle_errors, progress_factory, read_options, resolve_skip, stage_options,
)
from dedupkit.cli.schema import config_options
from dedupkit.settings import AuditConfig, RunConfig, SubstringConfig


@click.command(epilog="""\b
Examples:
  dedupkit substring data/ -o out/substring --min-tokens 50
  dedupkit substring data/ -o out/sub --keep none --min-length 200    # cut every copy
  dedupkit substring data/ -o out/lines --unit line --min-docs 5 --protect 0.5
  dedupkit apply data/ --manifest out/substring -o out/clean          # writes the cut text
""")
@stage_options(SubstringConfig)
@handle_errors
def substring(inputs, text_column, id_column, batch_size, on_bad_record, output, overwrite, workers, quiet,
              as_json, engine, ray_address, skip, max_drop_rate, unit, min_tokens, keep, keep_by, keep_order,
              min_length, min_docs, protect, partitions):
    """Cut repeated passages out of documents (substring dedup).

    Writes OUTPUT/manifest/ (one row per input row; a document is dropped only when cutting
    leaves it shorter than --min-length), OUTPUT/spans/ (one row per cut span: shard, row,
    doc_id, UTF-8 byte start/end, duplicate_of, duplicate_start) and OUTPUT/summary.json (spans,
    bytes cut, and the audit profile). `dedupkit apply` writes the cut text; `dedupkit inspect`
    shows what was cut.
    """
    from dedupkit import api

    result = api.substring(
        inputs, output, text_column=text_column, id_column=id_column, batch_size=batch_size,
        on_bad_record=on_bad_record, unit=unit, min_tokens=min_tokens, keep=keep, min_length=min_length,
        min_docs=min_docs, protect=protect, partitions=partitions, keep_by=keep_by, keep_order=keep_order,
        workers=workers, overwrite=overwrite, skip=resolve_skip(skip), max_drop_rate=max_drop_rate,
        engine=engine, ray_address=ray_address, progress=progress_factory(quiet),
    )
    emit_result(output, result.summary, as_json)
    c = result.summary["counts"]
    click.echo(f"substring: {c.get('spans', 0)} spans, {c.get('bytes_cut', 0)} bytes cut from "
               f"{c.get('documents_cut', 0)} documents", err=True)


@click.command(epilog="""\b
Examples:
  dedupkit audit data/ --min-tokens 50 > before.json
  dedupkit audit out/clean --min-tokens 50 > after.json      # after substring + apply
""")
@read_options
@engine_options
@click.option("--skip", "skip", multiple=True, metavar="MANIFEST_DIR",
              help="Leave out rows that this stage's manifest dropped (repeatable): audit what a "
                   "dedup run keeps without writing it first; '-' reads the folder from stdin.")
@config_options(AuditConfig, only=["min_tokens", "partitions"])
@config_options(RunConfig, only=["workers"], help={"workers": "Worker processes; the figures are identical for any number."})
@config_options(AuditConfig, only=["work_dir"])
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@handle_errors
def audit(inputs, text_column, id_column, batch_size, on_bad_record, engine, ray_address, skip, min_tokens,
          partitions, workers, work_dir, quiet):
    """Memorisation-risk profile of a corpus, as JSON on stdout.

    Reports the share of tokens inside passages of at least --min-tokens tokens that occur at
    least 2, 10 and 100 times in the corpus, the same per shard, and the most repeated passages
    with their counts and two example locations. Run it before and after substring (or any
    dedup) to see what dedup bought.
    """
    from dedupkit import api

    profile = api.audit(inputs, text_column=text_column, id_column=id_column, batch_size=batch_size,
                        on_bad_record=on_bad_record, min_tokens=min_tokens, partitions=partitions,
                        workers=workers, skip=resolve_skip(skip), engine=engine, ray_address=ray_address,
                        work_dir=work_dir, progress=progress_factory(quiet))
    click.echo(json.dumps(profile.to_dict(), indent=2, ensure_ascii=False))
    s = profile.share
    click.echo(f"audit: {profile.tokens} tokens; in repeats >=2x {s['repeated_2x']:.2%}, "
               f">=10x {s['repeated_10x']:.2%}, >=100x {s['repeated_100x']:.2%}", err=True)
