"""``dedupkit decontaminate``."""

from __future__ import annotations

import click

from dedupkit.cli.options import emit_result, handle_errors, progress_factory, resolve_skip, stage_options
from dedupkit.cli.schema import config_options
from dedupkit.settings import DecontaminateConfig

@click.command(epilog="""\b
Example:
  dedupkit decontaminate data/ --against mmlu=evals/mmlu_test.jsonl --against evals/quiz.txt \\
      --eval-fields question,choices,answer -o out/decon
  dedupkit decontaminate data/ --against evals/ -o out/decon-cut --mode cut --margin 200
  dedupkit inspect out/decon --largest 5
""")
@stage_options()
@click.option("--against", "against", multiple=True, required=True, metavar="EVAL",
              help="An eval set (repeatable): a JSONL/Parquet file, a folder of them, or a text file with "
                   "one item a line; NAME=PATH names it (default: the file name).")
@config_options(DecontaminateConfig)
@handle_errors
def decontaminate(inputs, text_column, id_column, batch_size, on_bad_record, output, overwrite, workers, quiet,
                  as_json, engine, ray_address, skip, max_drop_rate, against, eval_fields, eval_id, ngram,
                  min_tokens, min_overlap, mode, margin, max_pieces, max_cut_fraction):
    """Find evaluation-set items in training documents and drop (or cut) them.

    INPUT is files, folders or globs of .parquet/.jsonl shards. Writes OUTPUT/manifest/ (one row
    per input row) whose extra columns name, for every hit, the eval set (eval_set), the item
    (eval_item), the share of the item's prompt found (overlap, also score) and the matched text
    (matched_text; eval_matches lists every item found). cluster_id groups the documents holding
    the same item. Eval sets are never bundled: pass your own files.
    """
    from dedupkit import api

    if min_tokens > ngram:
        raise click.UsageError(f"--min-tokens ({min_tokens}) must not exceed --ngram ({ngram})")
    result = api.decontaminate(
        inputs, output, against, eval_fields=eval_fields, eval_id=eval_id, ngram=ngram, min_tokens=min_tokens,
        min_overlap=min_overlap, mode=mode, margin=margin, max_pieces=max_pieces, max_cut_fraction=max_cut_fraction,
        text_column=text_column, id_column=id_column, batch_size=batch_size, on_bad_record=on_bad_record,
        workers=workers, overwrite=overwrite, skip=resolve_skip(skip), max_drop_rate=max_drop_rate,
        engine=engine, ray_address=ray_address, progress=progress_factory(quiet))
    emit_result(output, result.summary, as_json)
    print_hits(result.summary)


def print_hits(summary: dict, limit: int = 10) -> None:
    """The items found most often, on stderr."""
    st = summary.get("stats", {})
    if not st.get("contaminated_docs"):
        click.echo("decontaminate: no eval item found", err=True)
        return
    sets = ", ".join(f"{k} {v}" for k, v in st.get("per_eval_set", {}).items() if v)
    click.echo(f"decontaminate: {st['contaminated_docs']} documents hold eval items ({sets}); "
               f"{st['items_found']} items found; dropped {st['dropped_docs']}, cut {st['cut_docs']}", err=True)
    for t in st.get("top_items", [])[:limit]:
        click.echo(f"  {t['eval_set']}/{t['item']}: {t['docs']} documents", err=True)


def print_inspection(out, *, doc, cluster, largest, max_members: int, max_chars: int, as_json: bool) -> None:
    """`dedupkit inspect` of a decontamination run: items with the documents holding them, or one
    document's decision with every item it holds (eval set, item id, overlap, matched text)."""
    import json

    from dedupkit.decontaminate import inspect_decontamination

    found = inspect_decontamination(out, doc=doc, cluster=cluster, largest=largest, max_members=max_members)
    if as_json:
        click.echo(json.dumps(found, indent=2, ensure_ascii=False))
        return

    def clip(t):
        t = t or ""
        return t if len(t) <= max_chars else t[: max_chars - 3] + "..."

    blocks = []
    for f in found:
        if "doc" in f:
            r = f["doc"]
            if not r["matches"]:
                blocks.append(f"{r['doc_id']} ({r['shard']} row {r['row']}): kept, no eval item found")
                continue
            done = {"cut": "spans cut", "drop": "dropped"}.get(r["decon_action"], "dropped")
            lines = [f"{r['doc_id']} ({r['shard']} row {r['row']}): {done}, holds "
                     f"{len(r['matches'])} eval item(s)"]
            for m in r["matches"]:
                lines.append(f"  {m['eval_set']}/{m['item']}  overlap {m['overlap']:.2f}  bytes {m['start']}-{m['end']}")
            lines.append("  matched text (best item):")
            lines.append("    " + clip(r["matched_text"]).replace("\n", "\n    "))
            blocks.append("\n".join(lines))
            continue
        lines = [f"decontaminate cluster {f['cluster_id']}: {f['eval_set']}/{f['eval_item']} found in "
                 f"{f['documents']} documents"]
        for m in f["members"]:
            lines.append(f"  {(m['decon_action'] or 'drop').upper()} {m['doc_id']} ({m['shard']} row {m['row']}) "
                         f"overlap {m['overlap']:.2f}")
            lines.append("    " + clip(m["matched_text"]).replace("\n", "\n    "))
        if f["documents"] > len(f["members"]):
            lines.append(f"  ... and {f['documents'] - len(f['members'])} more (raise --max-members)")
        blocks.append("\n".join(lines))
    click.echo("\n\n".join(blocks))
