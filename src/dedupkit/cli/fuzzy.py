"""``dedupkit fuzzy``."""

from __future__ import annotations

import click

from dedupkit.cli.options import (
    emit_result, handle_errors, progress_factory, resolve_skip, stage_options,
)


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
              help="Jaccard similarity of shingle sets that makes two documents duplicates (measure "
                   "jaccard).")
@click.option("--candidate-threshold", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
              envvar="DEDUPKIT_CANDIDATE_THRESHOLD",
              help="Jaccard similarity that LSH is tuned to find (bands and rows by datasketch's "
                   "optimal-parameter rule; 0.5 gives 25 bands x 5 rows); lower finds more candidate "
                   "pairs for the verifier.")
@click.option("--bands", type=click.IntRange(min=1), default=None,
              help="LSH bands (with --rows; overrides --candidate-threshold).")
@click.option("--rows", type=click.IntRange(min=1), default=None, help="LSH rows per band (with --bands).")
@click.option("--verify", type=click.Choice(["none", "signature", "sets", "jaccard"]), default="sets",
              show_default=True, envvar="DEDUPKIT_VERIFY",
              help="How candidate pairs (sharing a band) are checked: not at all (none), by their "
                   "signature estimate of Jaccard (signature), or on their true shingle sets (sets; "
                   "re-reads the candidates' text; needed by --measure containment and char; "
                   "jaccard is its old name).")
@click.option("--measure", default="jaccard,char", show_default=True, envvar="DEDUPKIT_MEASURE",
              metavar="M[,M...]",
              help="With --verify sets (signature verifies jaccard only), a pair is a duplicate when "
                   "any of these reaches its threshold: "
                   "jaccard (word shingles, --threshold), containment (shared shingles over the smaller "
                   "document's: a page quoted inside a longer one, --containment-threshold), char "
                   "(Jaccard of character n-grams: OCR noise and typos, --char-threshold).")
@click.option("--containment-threshold", type=click.FloatRange(0, 1, min_open=True), default=0.9,
              show_default=True, help="Threshold of --measure containment.")
@click.option("--containment-min", type=click.IntRange(min=1), default=20, show_default=True,
              help="Containment counts only when the smaller document has at least this many "
                   "distinct shingles (a one-line text is contained in many unrelated pages).")
@click.option("--char-threshold", type=click.FloatRange(0, 1, min_open=True), default=0.9,
              show_default=True, help="Threshold of --measure char.")
@click.option("--char-ngram", type=click.IntRange(1, 64), default=5, show_default=True,
              help="Character n-gram length of --measure char.")
@click.option("--cluster", type=click.Choice(["centre", "split"]), default="centre", show_default=True,
              help="centre: in keep-priority order, a document nobody claimed is kept and drops its "
                   "verified neighbours nobody claimed; split: connected components, dropping only "
                   "members verified against the component's kept document (local engine only).")
@click.option("--scheme", type=click.Choice(["affine64", "legacy"]), default="affine64", show_default=True,
              help="datasketch permutation scheme of the signatures (legacy = datasketch < 2.0).")
@handle_errors
def fuzzy(inputs, text_column, id_column, batch_size, on_bad_record, output, overwrite, workers, quiet,
          as_json, keep, keep_by, keep_order, skip, max_drop_rate, engine, ray_address, **options):
    """Drop near-duplicates: MinHash signatures of shingle sets, LSH band buckets, verified pairs.

    INPUT is files, folders (recursive) or globs of .parquet, .jsonl, .jsonl.gz and .jsonl.zst
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
