"""``dedupkit fuzzy``."""

from __future__ import annotations

import click

from dedupkit.cli.options import (
    emit_result, handle_errors, progress_factory, resolve_skip, stage_options,
)


@click.command(epilog="""\b
Defaults, measured with ../shared/eval/score.py (docs/fuzzy.md, benchmarks/RESULTS.md):
word 5-grams, 128 permutations, threshold 0.65 (16 bands x 8 rows by datasketch's rule),
--verify signature. On reuters-nd they give pairwise F1 0.75-0.76 with 261-270 unique docs lost
(seeds 1-3); 0.6 gains F1 but loses more unique docs, 0.8 finds only 37% of the pairs.

\b
Example:
  dedupkit fuzzy data/ -o out/fuzzy --workers 4
  dedupkit exact data/ -o out/exact | dedupkit fuzzy data/ -o out/fuzzy --skip -
""")
@stage_options()
@click.option("--shingle", type=click.Choice(["word", "char"]), default="word", show_default=True,
              envvar="DEDUPKIT_SHINGLE",
              help="word: n-grams of tokens (runs of letters, marks, digits, _ of any script) after NFKC "
                   "and lower case; char: character n-grams, for scripts written without spaces "
                   "(Chinese, Japanese, Thai).")
@click.option("--ngram", type=click.IntRange(1, 64), default=5, show_default=True, envvar="DEDUPKIT_NGRAM",
              help="Shingle length in tokens (word) or characters (char). A document shorter than "
                   "one n-gram is one shingle; one without any token is never a fuzzy duplicate.")
@click.option("--num-perm", type=click.IntRange(1, 4096), default=128, show_default=True,
              envvar="DEDUPKIT_NUM_PERM", help="MinHash permutations (signature length).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=1, show_default=True,
              envvar="DEDUPKIT_SEED", help="Seed of the permutations (datasketch's MinHash seed).")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True), default=0.65, show_default=True,
              envvar="DEDUPKIT_THRESHOLD",
              help="Jaccard similarity of shingle sets that makes two documents duplicates; picks "
                   "bands and rows with datasketch's optimal-parameter rule.")
@click.option("--bands", type=click.IntRange(min=1), default=None, help="LSH bands (with --rows).")
@click.option("--rows", type=click.IntRange(min=1), default=None, help="LSH rows per band (with --bands).")
@click.option("--verify", type=click.Choice(["none", "signature", "jaccard"]), default="signature",
              show_default=True, envvar="DEDUPKIT_VERIFY",
              help="Which candidate pairs (sharing a band) count: all (none), those whose signature "
                   "estimate reaches --threshold (signature), or those whose true shingle-set "
                   "Jaccard does (jaccard; re-reads the candidates' text).")
@click.option("--scheme", type=click.Choice(["affine64", "legacy"]), default="affine64", show_default=True,
              help="datasketch permutation scheme of the signatures (legacy = datasketch < 2.0).")
@handle_errors
def fuzzy(inputs, text_column, id_column, batch_size, on_bad_record, output, overwrite, workers, quiet,
          as_json, keep, keep_by, keep_order, skip, max_drop_rate, shingle, ngram, num_perm, seed,
          threshold, bands, rows, verify, scheme, engine, ray_address):
    """Drop near-duplicates: MinHash signatures of shingle sets, LSH band buckets, verified pairs.

    INPUT is files, folders (recursive) or globs of .parquet, .jsonl, .jsonl.gz and .jsonl.zst
    shards. Documents connected by verified pairs form one cluster; --keep picks its survivor.
    Writes OUTPUT/manifest/ (one row per input row; score = Jaccard estimate to the kept
    document) and OUTPUT/summary.json (bands, rows, detection probabilities), and prints OUTPUT.
    """
    from dedupkit import api

    if (bands is None) != (rows is None):
        raise click.UsageError("give --bands and --rows together, or neither to derive them from --threshold")
    result = api.fuzzy(
        inputs, output, text_column=text_column, id_column=id_column, batch_size=batch_size,
        on_bad_record=on_bad_record, shingle=shingle, ngram=ngram, num_perm=num_perm, seed=seed,
        threshold=threshold, bands=bands, rows=rows, scheme=scheme, verify=verify, keep=keep,
        keep_by=keep_by, keep_order=keep_order, workers=workers, overwrite=overwrite,
        skip=resolve_skip(skip), max_drop_rate=max_drop_rate, progress=progress_factory(quiet),
        engine=engine, ray_address=ray_address,
    )
    emit_result(output, result.summary, as_json)
