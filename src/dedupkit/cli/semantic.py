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
    click.echo(f"semantic analysis: {n} documents, {analysis.get('clusters', 0)} k-means clusters; "
               "nothing was dropped", err=True)
    click.echo(f"{'eps':>8}  {'cosine >=':>9}  {'would drop':>10}  {'share':>7}", err=True)
    for row in analysis["per_eps"]:
        click.echo(f"{row['eps']:>8g}  {row['threshold']:>9.4f}  {row['drop']:>10d}  {row['drop_rate']:>7.2%}",
                   err=True)
    for s in analysis.get("samples", []):
        click.echo(f"\neps {s['eps']:g} (cosine >= {s['threshold']:.4f}):", err=True)
        for side, label in (("above", "dropped"), ("below", "kept")):
            for p in s[side]:
                # texts and ids are data: shown with control characters escaped
                click.echo(safe_text(f"  {label} {p['cosine']:.4f}  {p['doc']}: {p['text'][:90]}", True),
                           err=True)
                click.echo(safe_text(f"  {'':>{len(label)}} {'':>6}  ~ {p['higher_ranked']}: "
                                     f"{p['higher_ranked_text'][:90]}", True), err=True)


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
@click.option("--backend", type=click.Choice(["auto", "torch", "onnx"]), default="auto", show_default=True,
              envvar="DEDUPKIT_BACKEND",
              help="How minilm (or another BERT sentence-transformers folder) runs: onnx = ONNX Runtime "
                   "with an int8 export made once from the model's weights and cached (~3x faster on a "
                   "CPU, cosine >= 0.98 to torch; needs no torch); torch = sentence-transformers; auto = "
                   "onnx on a CPU when onnxruntime is installed, torch on a GPU.")
@click.option("--embed-batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Texts per model forward pass (--batch-size is the read batch).")
@click.option("--max-tokens", type=click.IntRange(8, 8192), default=128, show_default=True,
              help="Truncate each text to this many model tokens (MiniLM was trained on 128; longer "
                   "costs time for little gain). Part of the embedding cache key.")
@click.option("--eps", default="0.07", show_default=True,
              help="Duplicate when cosine to a higher-ranked member of the cluster >= 1 - eps. "
                   "With --analyze, a comma-separated list.")
@click.option("--clusters", type=click.IntRange(min=1), default=None,
              help="k-means clusters [default: ceil(docs / 1000), so pairwise blocks stay ~1000^2].")
@click.option("--fit-sample", type=click.IntRange(min=1), default=None,
              help="Fit k-means on a seeded sample of this many documents, then assign all "
                   "[default: max(256 x clusters, 10,000)].")
@click.option("--niter", type=click.IntRange(min=1), default=20, show_default=True, help="k-means iterations.")
@click.option("--keep", type=click.Choice(["hard", "easy", "random", "first", "last", "longest", "shortest"]),
              default="hard", show_default=True,
              help="Which member of a duplicate group survives: hard = farthest from the k-means "
                   "centroid (SemDeDup), easy = nearest, random (seeded), first = lowest (shard, row).")
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
             as_json, skip, max_drop_rate, model, device, backend, embed_batch_size, max_tokens, eps, clusters,
             fit_sample, niter, keep, keep_by, keep_order, seed, analyze, cache_dir, no_cache, engine,
             ray_address):
    """Drop semantic duplicates with SemDeDup: sentence embeddings, spherical k-means, and
    pairwise cosine inside each cluster.

    INPUT is files, folders (recursive) or globs of .parquet, .jsonl, .jsonl.gz and .jsonl.zst
    shards. Embeddings are cached per shard (keyed by model, --max-tokens and the shard's
    content), so rerunning with another --eps, --clusters or --keep is fast. Writes
    OUTPUT/manifest/ (one row per input row, with nearest_sim and nearest_doc columns) and
    OUTPUT/summary.json, and prints OUTPUT on stdout.
    """
    from dedupkit import api

    result = api.semantic(
        inputs, output, text_column=text_column, id_column=id_column, batch_size=batch_size,
        on_bad_record=on_bad_record, model=model, device=device, backend=backend, embed_batch_size=embed_batch_size,
        max_tokens=max_tokens, eps=eps, clusters=clusters, fit_sample=fit_sample, niter=niter, keep=keep,
        keep_by=keep_by, keep_order=keep_order, seed=seed, analyze=analyze, cache_dir=cache_dir,
        use_cache=not no_cache, workers=workers, overwrite=overwrite, skip=resolve_skip(skip),
        max_drop_rate=max_drop_rate, progress=progress_factory(quiet),
        engine=engine, ray_address=ray_address,
    )
    emit_result(output, result.summary, as_json)
    analysis = result.summary.get("stats", {}).get("analysis")
    if analysis:
        print_analysis(analysis)
