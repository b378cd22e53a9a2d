"""``dedupkit semantic``."""

from __future__ import annotations

import click

from dedupkit.cli.options import (
    emit_result, handle_errors, progress_factory, resolve_skip, stage_options,
)
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
@stage_options(keep=False)
@click.option("--model", default="minilm", show_default=True, envvar="DEDUPKIT_MODEL",
              help="Embedder: minilm (all-MiniLM-L6-v2, packaged, offline); static (a model2vec "
                   "embedder distilled locally from minilm on first use, 50-250x faster on a CPU); "
                   "model2vec:PATH; or any sentence-transformers name or local folder.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              envvar="DEDUPKIT_DEVICE", help="auto uses CUDA when torch sees a GPU.")
@click.option("--embed-batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Texts per model forward pass (--batch-size is the read batch).")
@click.option("--max-tokens", type=click.IntRange(8, 8192), default=128, show_default=True,
              help="Truncate each text to this many model tokens (MiniLM was trained on 128; longer "
                   "costs time for little gain). Part of the embedding cache key.")
@click.option("--eps", default="0.07", show_default=True,
              help="Duplicate when cosine to a kept neighbour >= 1 - eps. "
                   "With --analyze, a comma-separated list.")
@click.option("--embed-normalize", type=click.Choice(["archaic", "none"]), default="archaic", show_default=True,
              help="What the embedder reads: archaic = archaic English forms (thou hast, he maketh, "
                   "unto) replaced by modern ones, so old and modern translations compare by meaning; "
                   "none = the text as it is. The data is never changed. Part of the cache key.")
@click.option("--search", type=click.Choice(["auto", "exact", "ivf", "kmeans"]), default="auto",
              show_default=True,
              help="Where neighbours are looked for: exact = all documents (FAISS brute force); ivf = "
                   "an approximate index, its recall against exact measured and reported; auto = exact "
                   "up to 100,000 documents, ivf beyond; kmeans = only inside each k-means cluster "
                   "(SemDeDup).")
@click.option("--neighbours", type=click.IntRange(min=1), default=32, show_default=True,
              help="Nearest documents looked at per document.")
@click.option("--nprobe", type=click.IntRange(min=1), default=None,
              help="With ivf: lists scanned per query [default: max(16, lists / 32)].")
@click.option("--clusters", type=click.IntRange(min=1), default=None,
              help="With --search kmeans: k-means clusters [default: ceil(docs / 1000)].")
@click.option("--fit-sample", type=click.IntRange(min=1), default=None,
              help="Fit k-means on a seeded sample of this many documents, then assign all "
                   "[default: max(256 x clusters, 10,000)].")
@click.option("--niter", type=click.IntRange(min=1), default=20, show_default=True, help="k-means iterations.")
@click.option("--keep", type=click.Choice(["hard", "easy", "random", "first", "last", "longest", "shortest"]),
              default="hard", show_default=True,
              help="Which document of a duplicate group survives: hard = the least typical (lowest "
                   "mean cosine to its neighbours; with --search kmeans farthest from the centroid, "
                   "SemDeDup), easy = the most typical, random (seeded), first = lowest (shard, row).")
@click.option("--keep-by", default=None, metavar="COLUMN",
              help="Rank by this column first (ties: --keep).")
@click.option("--keep-order", type=click.Choice(["asc", "desc"]), default="desc", show_default=True,
              help="With --keep-by: desc keeps the largest value, asc the smallest.")
@click.option("--seed", type=int, default=42, show_default=True, help="k-means and --keep random seed.")
@click.option("--analyze", is_flag=True,
              help="Drop nothing: write an all-keep manifest and OUTPUT/analysis.json with, per "
                   "--eps value, how many documents would be dropped and sample pairs near each "
                   "threshold (also printed on stderr).")
@click.option("--cache-dir", default=None, envvar="DEDUPKIT_CACHE_DIR", type=click.Path(file_okay=False),
              help="Cache root for the embeddings and the model --model static distills [default: "
                   "$XDG_CACHE_HOME/dedupkit, else ~/.cache/dedupkit]; see `dedupkit cache info`.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the embedding cache.")
@handle_errors
def semantic(inputs, text_column, id_column, batch_size, on_bad_record, output, overwrite, workers, quiet,
             as_json, skip, max_drop_rate, model, device, embed_batch_size, max_tokens, eps, embed_normalize,
             search, neighbours, nprobe, clusters, fit_sample, niter, keep, keep_by, keep_order, seed, analyze,
             cache_dir, no_cache, engine, ray_address):
    """Drop semantic duplicates: sentence embeddings, each document's nearest neighbours over the
    whole corpus (or inside its k-means cluster, SemDeDup), greedy centres in keep order.

    INPUT is files, folders (recursive) or globs of .parquet, .jsonl, .jsonl.gz and .jsonl.zst
    shards. Embeddings are cached per shard (keyed by model, --max-tokens and the shard's
    content), so rerunning with another --eps, --clusters or --keep is fast. Writes
    OUTPUT/manifest/ (one row per input row, with nearest_sim and nearest_doc columns) and
    OUTPUT/summary.json, and prints OUTPUT on stdout.
    """
    from dedupkit import api

    result = api.semantic(
        inputs, output, text_column=text_column, id_column=id_column, batch_size=batch_size,
        on_bad_record=on_bad_record, model=model, device=device, embed_batch_size=embed_batch_size,
        max_tokens=max_tokens, eps=eps, embed_normalize=embed_normalize, search=search,
        neighbours=neighbours, nprobe=nprobe, clusters=clusters, fit_sample=fit_sample, niter=niter, keep=keep,
        keep_by=keep_by, keep_order=keep_order, seed=seed, analyze=analyze, cache_dir=cache_dir,
        use_cache=not no_cache, workers=workers, overwrite=overwrite, skip=resolve_skip(skip),
        max_drop_rate=max_drop_rate, progress=progress_factory(quiet),
        engine=engine, ray_address=ray_address,
    )
    emit_result(output, result.summary, as_json)
    analysis = result.summary.get("stats", {}).get("analysis")
    if analysis:
        print_analysis(analysis)
