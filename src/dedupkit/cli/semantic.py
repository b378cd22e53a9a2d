"""``dedupkit semantic``."""

from __future__ import annotations

import click

from dedupkit.cli.options import (
    emit_result, handle_errors, progress_factory, resolve_skip, stage_options,
)
from dedupkit.settings import SemanticConfig
from dedupkit.terminal import safe_text


def print_analysis(analysis: dict) -> None:
    """Per-eps drop counts and the sample pairs, on stderr (stdout carries only the result)."""
    n = analysis.get("documents", 0)
    search = analysis.get("search", {})
    how = search.get("method", "?")
    if "recall" in search:
        how += f", recall@{search['recall']['k']} {search['recall']['recall_at_k']:.3f} against exact"
    click.echo(f"semantic analysis: {n} documents, neighbour search {how}; nothing was dropped", err=True)
    click.echo(f"{'eps':>8}  {'cosine >=':>9}  {'would drop':>10}  {'share':>7}", err=True)
    for row in analysis["per_eps"]:
        click.echo(f"{row['eps']:>8g}  {row['threshold']:>9.4f}  {row['drop']:>10d}  {row['drop_rate']:>7.2%}",
                   err=True)
    for s in analysis.get("samples", []):
        click.echo(f"\neps {s['eps']:g} (cosine >= {s['threshold']:.4f}): nearest pairs just inside and "
                   "just outside", err=True)
        for side, label in (("above", "inside "), ("below", "outside")):
            for p in s[side]:
                # texts and ids are data: shown with control characters escaped
                click.echo(safe_text(f"  {label} {p['cosine']:.4f}  {p['doc']}: {p['text'][:90]}", True),
                           err=True)
                click.echo(safe_text(f"  {'':>{len(label)}} {'':>6}  ~ {p['neighbour']}: "
                                     f"{p['neighbour_text'][:90]}", True), err=True)


@click.command(epilog="""\b
Example:
  dedupkit semantic data/ -o out/sem-analysis --analyze --eps 0.01,0.05,0.1,0.2
  dedupkit semantic data/ -o out/sem --eps 0.05 --model static --skip out/fuzzy
""")
@stage_options(SemanticConfig)
@handle_errors
def semantic(inputs, text_column, id_column, batch_size, on_bad_record, output, overwrite, workers, quiet,
             as_json, skip, max_drop_rate, model, device, backend, embed_batch_size, max_tokens, eps, rewrite_eps, mutual_eps,
             embed_normalize,
             search, neighbours, nprobe, clusters, fit_sample, niter, keep, keep_by, keep_order, seed, analyze,
             cache_dir, no_cache, engine, ray_address):
    """Drop semantic duplicates: sentence embeddings, each document's nearest neighbours over the
    whole corpus (or inside its k-means cluster, SemDeDup), greedy centres in keep order.

    INPUT is files, folders (recursive) or globs of .parquet, .jsonl(.gz|.zst), .arrow, .csv, .tsv
    shards. Embeddings are cached per shard (keyed by model, --max-tokens and the shard's
    content), so rerunning with another --eps, --clusters or --keep is fast. Writes
    OUTPUT/manifest/ (one row per input row, with nearest_sim and nearest_doc columns) and
    OUTPUT/summary.json, and prints OUTPUT on stdout.
    """
    from dedupkit import api

    result = api.semantic(
        inputs, output, text_column=text_column, id_column=id_column, batch_size=batch_size,
        on_bad_record=on_bad_record, model=model, device=device, backend=backend, embed_batch_size=embed_batch_size,
        max_tokens=max_tokens, eps=eps, rewrite_eps=rewrite_eps, mutual_eps=mutual_eps, embed_normalize=embed_normalize, search=search,
        neighbours=neighbours, nprobe=nprobe, clusters=clusters, fit_sample=fit_sample, niter=niter, keep=keep,
        keep_by=keep_by, keep_order=keep_order, seed=seed, analyze=analyze, cache_dir=cache_dir,
        no_cache=no_cache, workers=workers, overwrite=overwrite, skip=resolve_skip(skip),
        max_drop_rate=max_drop_rate, progress=progress_factory(quiet),
        engine=engine, ray_address=ray_address,
    )
    emit_result(output, result.summary, as_json)
    analysis = result.summary.get("stats", {}).get("analysis")
    if analysis:
        print_analysis(analysis)
