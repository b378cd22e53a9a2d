"""``dedupkit index create|add|info`` and ``dedupkit check``."""

from __future__ import annotations

import json
import sys
from typing import Callable

import click

from dedupkit.cli.options import (
    emit_result, handle_errors, keep_options, output_options, progress_factory, read_column_options, read_options,
)
from dedupkit.cli.schema import config_options
from dedupkit.errors import CheckFailed
from dedupkit.settings import EvalConfig, IndexConfig, RunConfig
from dedupkit.redact import redact_obj

INDEX_HELP = "A local folder, or redis://HOST:PORT/DB[?prefix=NAME] for an index shared through Redis."


def _misc_opts(f: Callable) -> Callable:
    f = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")(f)
    f = click.option("-q", "--quiet", is_flag=True, help="No progress bars.")(f)
    f = config_options(RunConfig, only=["workers"], help={"workers": "Worker processes for hashing."})(f)
    return f


# The MinHash options of `index create` and `check`: unset means the defaults of IndexConfig
# (create) or the index's own (check).
_minhash_opts = config_options(IndexConfig, only=IndexConfig.MINHASH, unset=True)
_check_minhash_opts = config_options(IndexConfig, only=IndexConfig.MINHASH, unset=True, name_defaults=False)


def _given(**options) -> dict:
    """The IndexConfig options given on the command line (unset ones are left to the API)."""
    return {k: v for k, v in options.items() if v is not None}


def _emit_add(res, as_json: bool, verb: str) -> None:
    if as_json:
        click.echo(json.dumps(redact_obj(res.to_dict()), indent=2))
    else:
        click.echo(res.location)
    click.echo(f"index: {verb} {res.added} documents from {res.shards} shards in {res.seconds:.1f} s"
               f"{f', skipped {res.bad_records} bad records' if res.bad_records else ''}"
               f"{f' ({res.already_indexed} were already indexed by an earlier run of this command)' if res.already_indexed else ''}; "
               f"the index holds {res.documents}", err=True)


@click.group(epilog="""\b
Example:
  dedupkit index create corpus.idx --from data/ --stages exact,fuzzy --id-column id
  dedupkit index add corpus.idx new/ --id-column id
  dedupkit index info corpus.idx
""")
def index():
    """Create and grow an index of a corpus you already hold.

    An index keeps, for every document, its doc_id, its source shard, the exact hash of its
    normalized text and (with the fuzzy stage) its MinHash LSH band keys, plus the settings that
    made them. `dedupkit check` deduplicates a new drop against it. INDEX is a local folder, or
    redis://HOST:PORT/DB to share one index between CI jobs.
    """


@index.command("create", short_help="Create an index and add the --from inputs.", epilog="""\b
Example:
  dedupkit index create corpus.idx --from data/ --stages exact,fuzzy --threshold 0.8 --id-column id
  dedupkit index create redis://localhost:6379/0 --from data/ --id-column id
""")
@click.argument("location", metavar="INDEX")
@click.argument("more_inputs", nargs=-1, metavar="[INPUT...]")
@click.option("--from", "inputs", multiple=True, metavar="INPUT",
              help="Shards, folders or globs to index (repeatable; more INPUTs may follow). Without it the "
                   "index starts empty (grow it with `check --update` or `index add`).")
@config_options(IndexConfig, only=["stages", "normalize"])
@_minhash_opts
@click.option("--overwrite", is_flag=True, help="Replace an existing index at INDEX.")
@read_column_options
@_misc_opts
@handle_errors
def create(location, more_inputs, inputs, stages, normalize, seed, num_perm, shingle, ngram, threshold, bands, rows,
           overwrite, text_column, id_column, batch_size, on_bad_record, workers, quiet, as_json):
    """Create an index at INDEX and add the documents of the --from inputs."""
    from dedupkit import api

    res = api.index_create(location, tuple(inputs) + tuple(more_inputs), overwrite=overwrite,
                           **_given(stages=stages, normalize=normalize, seed=seed, num_perm=num_perm, shingle=shingle,
                                    ngram=ngram, threshold=threshold, bands=bands, rows=rows),
                           text_column=text_column, id_column=id_column, batch_size=batch_size,
                           on_bad_record=on_bad_record, workers=workers, progress=progress_factory(quiet))
    _emit_add(res, as_json, "created, indexed")


@index.command("add", short_help="Add INPUT shards to an existing index.", epilog="""\b
Example:
  dedupkit index add corpus.idx drops/2024-06/ --id-column id
""")
@click.argument("location", metavar="INDEX")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@read_column_options
@_misc_opts
@handle_errors
def add(location, inputs, text_column, id_column, batch_size, on_bad_record, workers, quiet, as_json):
    """Add the documents of INPUT shards to the index at INDEX (with the index's settings)."""
    from dedupkit import api

    res = api.index_add(location, inputs, text_column=text_column, id_column=id_column, batch_size=batch_size,
                        on_bad_record=on_bad_record, workers=workers, progress=progress_factory(quiet))
    _emit_add(res, as_json, "indexed")


@index.command("info", short_help="Show and verify an index's settings and size.", epilog="""\b
Example:
  dedupkit index info corpus.idx --json
""")
@click.argument("location", metavar="INDEX")
@click.option("--json", "as_json", is_flag=True, help="Print the info as JSON on stdout.")
@handle_errors
def info(location, as_json):
    """Show an index's settings, documents, segments and size; verifies its files on the way."""
    from dedupkit import api

    d = api.index_info(location)
    if as_json:
        click.echo(json.dumps(redact_obj(d), indent=2))
        return
    s = d["settings"]
    lines = [
        f"index:      {d['location']} ({d['kind']})",
        f"documents:  {d['documents']} from {d['shards']} shards, {d['segments']} segments",
        f"stages:     {','.join(s['stages'])}; normalize {','.join(s['normalize']) or 'none'}",
    ]
    if s.get("minhash"):
        lines.append("minhash:    " + ", ".join(f"{k}={v}" for k, v in s["minhash"].items()))
    if d.get("bytes") is not None:
        per = f", {d['bytes_per_doc']:.0f} bytes per document" if d.get("bytes_per_doc") else ""
        lines.append(f"size:       {d['bytes']} bytes{per}")
    if d.get("redis_used_memory") is not None:
        lines.append(f"redis:      used_memory {d['redis_used_memory']} bytes (whole database)")
    if d.get("verified"):
        lines.append(f"verified:   {d['verified']}")
    lines.append(f"writer:     {d.get('writer') or 'none'}")
    if d.get("pending"):
        p = d["pending"]
        lines.append(f"pending:    an append of {p['documents']} documents by {p['by']}: {p['state']}")
    if d.get("leftovers"):
        who = "the writer at work or an interrupted one" if d.get("writer") else "an interrupted writer"
        lines.append(f"leftovers:  {', '.join(d['leftovers'])} (of {who}; never read, removed by the next writer)")
    click.echo("\n".join(lines))


@click.command(epilog="""\b
Exit codes: 0 the duplicate rate is at most --max-dup-rate (or no limit was set), 3 it is above
or a document holds an eval item (the manifest is still written), 1 failure (missing or damaged index, bad input), 2 usage error.

\b
Example:
  dedupkit check drops/new/ --against corpus.idx -o out/check --max-dup-rate 0.05 --update --id-column id
  dedupkit check drops/new/ --against corpus.idx --against evals/ -o out/check --eval-fields question,answer
""")
@read_options
@click.option("--against", "against", required=True, multiple=True, metavar="INDEX|EVAL",
              help="The index to check against, and/or eval sets (repeatable). " + INDEX_HELP + " Eval sets "
                   "are JSONL/Parquet/text files or folders of them, or NAME=PATH: any document holding an "
                   "eval item fails the check (exit code 3), naming it.")
@click.option("--eval-fields", default=None, metavar="F1,F2,...",
              help="With eval sets: fields to index, the prompt first (as in `dedupkit decontaminate`).")
@click.option("--eval-id", default=None, metavar="FIELD", help="With eval sets: the item id field.")
@config_options(EvalConfig, only=["ngram", "min_overlap"], prefix="eval_",
                help={"ngram": "With eval sets: `dedupkit decontaminate --ngram`.",
                      "min_overlap": "With eval sets: `dedupkit decontaminate --min-overlap`."})
@click.option("--eval-output", default=None, type=click.Path(file_okay=False),
              help="With eval sets and an index: where the eval check's manifest goes (default: "
                   "OUTPUT-decontaminate, beside OUTPUT; without an index it is OUTPUT).")
@click.option("--max-dup-rate", type=click.FloatRange(0, 1), default=None,
              help="Fail (exit code 3) when more than this share of the drop's rows are duplicates of the "
                   "index or of each other.")
@click.option("--update", is_flag=True,
              help="When the check passes, add the drop's kept documents to the index. Concurrent checks "
                   "with --update take turns (the second waits, saying so on stderr) and decide as if run one "
                   "after the other.")
@config_options(IndexConfig, only=["stages", "normalize"], unset=True,
                help=dict.fromkeys(["stages", "normalize"], "Must match the index (default: the index's settings)."))
@_check_minhash_opts
@output_options
@keep_options
@handle_errors
def check(inputs, text_column, id_column, batch_size, on_bad_record, against, eval_fields, eval_id, eval_ngram,
          eval_min_overlap, eval_output, max_dup_rate, update, stages, normalize, seed, num_perm, shingle, ngram, threshold, bands,
          rows, output, overwrite, workers, quiet, as_json, keep, keep_by, keep_order):
    """Deduplicate a new data drop against an index (a CI gate).

    Writes OUTPUT/manifest/ (one row per input row) and OUTPUT/summary.json like any stage. A row
    dropped because of the index names the indexed document it matched (matched_doc_id,
    matched_shard, duplicate_of) and how (match: index-exact, index-fuzzy); rows duplicating each
    other within the drop are grouped as by `dedupkit exact`/`fuzzy` (match: drop-exact,
    drop-fuzzy). The keys are computed with the index's settings.

    With eval sets in --against, the drop is also decontaminated (into OUTPUT-decontaminate, or
    OUTPUT itself without an index) and the check fails when any document holds an eval item.
    """
    from dedupkit import api
    from dedupkit.decontaminate import split_against

    indexes, evals = split_against(against)
    if len(indexes) > 1:
        raise click.UsageError(f"give one index in --against, got {len(indexes)}: {', '.join(indexes)}")
    if not indexes and (update or max_dup_rate is not None):
        raise click.UsageError("--update and --max-dup-rate need an index in --against (only eval sets were given)")
    failed = None
    if indexes:
        failed = _check_index(inputs, text_column, id_column, batch_size, on_bad_record, indexes[0], max_dup_rate,
                              update, stages, normalize, seed, num_perm, shingle, ngram, threshold, bands, rows,
                              output, overwrite, workers, quiet, as_json, keep, keep_by, keep_order)
    if evals:
        from dedupkit.cli.decontaminate import print_hits

        dout = (eval_output or output.rstrip("/") + "-decontaminate") if indexes else output
        try:
            res = api.check_evals(inputs, dout, evals, eval_fields=eval_fields, eval_id=eval_id, ngram=eval_ngram,
                                  min_overlap=eval_min_overlap, text_column=text_column, id_column=id_column,
                                  batch_size=batch_size, on_bad_record=on_bad_record, workers=workers,
                                  overwrite=overwrite, progress=progress_factory(quiet))
        except CheckFailed as exc:
            res, failed = exc.result, failed or exc  # type: ignore[attr-defined]
            click.echo(f"Error: {exc}", err=True)
        if not indexes:
            emit_result(dout, res.summary, as_json)
        print_hits(res.summary)
    if failed is not None:
        sys.exit(failed.exit_code)


def _check_index(inputs, text_column, id_column, batch_size, on_bad_record, against, max_dup_rate, update, stages,
                 normalize, seed, num_perm, shingle, ngram, threshold, bands, rows, output, overwrite, workers, quiet,
                 as_json, keep, keep_by, keep_order):
    """The index part of `check`; returns the CheckFailed to exit with, or None."""
    from dedupkit import api

    try:
        res = api.check(inputs, output, against, max_dup_rate=max_dup_rate, update=update, text_column=text_column,
                        id_column=id_column, batch_size=batch_size, on_bad_record=on_bad_record, keep=keep,
                        keep_by=keep_by, keep_order=keep_order,
                        **_given(stages=stages, normalize=normalize, seed=seed, num_perm=num_perm, shingle=shingle,
                                 ngram=ngram, threshold=threshold, bands=bands, rows=rows), workers=workers,
                        overwrite=overwrite, progress=progress_factory(quiet))
    except CheckFailed as exc:
        res = exc.result  # type: ignore[attr-defined]
        _emit_check(output, res, as_json)
        click.echo(f"Error: {exc}", err=True)
        return exc
    _emit_check(output, res, as_json)
    return None


def _emit_check(output, res, as_json: bool) -> None:
    emit_result(output, res.summary, as_json)
    st = res.summary.get("stats", {})
    c = res.summary["check"]
    limit = f"max {c['max_dup_rate']:.2%}" if c["max_dup_rate"] is not None else "no limit"
    click.echo(
        f"check: {st['duplicates']} duplicates ({c['dup_rate']:.2%}, {limit}): {st['index_exact']} exact and "
        f"{st['index_fuzzy']} near copies of indexed documents, {st['drop_exact']} exact and "
        f"{st['drop_fuzzy']} near copies within the drop; {'PASSED' if c['passed'] else 'FAILED'}"
        + (f"; added {c['added_to_index']} documents to the index ({c['index_documents_after']} now)"
           if c["update"] and c["passed"] else ""), err=True)
