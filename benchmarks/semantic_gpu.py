"""`dedupkit semantic` on a CUDA GPU, and the clustering cost on real cached embeddings.

Run it where torch sees a GPU. Measures, printing a table and writing JSON:

1. **Agreement**: the first ``--check-n`` texts embedded by dedupkit's embedder on ``cpu`` and on
   ``cuda`` (lowest cosine between the two vectors of a document, largest absolute difference), and
   ``dedupkit semantic`` on those texts with ``--device cpu`` and ``--device cuda``: how many manifest
   decisions differ (keep, duplicate_of, cluster_id).
2. **GPU end to end**: a bare ``SentenceTransformer.encode`` on ``cuda`` (fresh process) versus
   ``dedupkit semantic --device cuda`` (fresh process, empty cache) on ``--n`` documents, and the
   in-process split of the dedupkit run (encode vs everything else).
3. **Cached rerun on 2 cores**: the same command with another ``--eps`` on the now-cached real
   MiniLM embeddings, pinned with ``taskset`` to ``--cpus`` and with the GPU hidden: scan, k-means,
   blocked pairwise and manifest for ``--n`` real embeddings on two cores.

Usage:
    python ../shared/bench/make_corpus.py --n 200000 --seed 42 --out /tmp/c200k
    python benchmarks/semantic_gpu.py --docs /tmp/c200k/docs.parquet --n 200000 --out benchmarks/results/semantic_gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from semantic import BARE, make_subset, timed  # noqa: E402  (same bare script and process helpers)

from dedupkit.stages.semantic import DEFAULT_EPS  # noqa: E402  (semantic.py put src on sys.path)


def agreement(docs: Path, n: int, work: Path, max_tokens: int, gpu: str) -> dict:
    from dedupkit import api
    from dedupkit.embed import EmbedConfig, get_embedder

    texts = pq.read_table(docs, columns=["text"]).column("text").to_pylist()[:n]
    out: dict = {"docs": len(texts)}
    vecs = {}
    for name, device in (("cpu", "cpu"), ("gpu", gpu)):
        emb = get_embedder(EmbedConfig(device=device, max_tokens=max_tokens))
        emb.encode(texts[:32])  # warm-up
        t0 = time.perf_counter()
        vecs[name] = emb.encode(texts)
        out[f"{name}_docs_per_s"] = len(texts) / (time.perf_counter() - t0)
    cos = np.einsum("ij,ij->i", vecs["cpu"], vecs["gpu"])
    out["min_cosine_cpu_gpu"] = float(cos.min())
    out["max_abs_diff"] = float(np.abs(vecs["cpu"] - vecs["gpu"]).max())
    sub = make_subset(str(docs), n, work / "check")
    rows = {}
    for name, device in (("cpu", "cpu"), ("gpu", gpu)):
        r = api.semantic([str(sub)], str(work / f"check-{name}"), cache_dir=str(work / f"check-cache-{name}"),
                         device=device, max_tokens=max_tokens)
        out[f"{name}_summary_device"] = r.summary["stats"]["device"]
        out[f"{name}_dropped"] = r.summary["counts"]["dropped"]
        t = pq.read_table(work / f"check-{name}" / "manifest").sort_by([("shard", "ascending"), ("row", "ascending")])
        rows[name] = list(zip(*(t.column(c).to_pylist() for c in ("doc_id", "keep", "duplicate_of", "cluster_id"))))
    out["manifest_rows_differing"] = sum(a != b for a, b in zip(rows["cpu"], rows["gpu"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", required=True, help="Parquet file with a text column")
    ap.add_argument("--n", type=int, default=200000, help="documents for the GPU run and the cached rerun")
    ap.add_argument("--check-n", type=int, default=1000, help="documents for the cpu/cuda agreement check")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--cpus", default="0,1", help="CPUs (taskset list) for the cached rerun")
    ap.add_argument("--device", default="cuda", help="the GPU device (cpu only to dry-run this script)")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: agree,e2e")
    ap.add_argument("--out", default=None, help="write results as JSON here (rewritten after each part)")
    args = ap.parse_args()
    import torch

    res: dict = {"args": vars(args), "torch": torch.__version__, "cuda": torch.cuda.is_available(),
                 "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                 "cpu_count": os.cpu_count()}
    skip = set(filter(None, args.skip.split(",")))

    def save() -> None:
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(res, indent=2, default=float))

    work = Path(tempfile.mkdtemp(prefix="semgpu-"))
    try:
        if "agree" not in skip:
            try:
                res["agree"] = agreement(Path(args.docs), args.check_n, work, args.max_tokens, args.device)
            except Exception:  # keep going: the other parts are independent
                res["agree_error"] = traceback.format_exc()
            print(json.dumps(res.get("agree") or res.get("agree_error"), indent=1, default=float), file=sys.stderr)
            save()
        if "e2e" not in skip:
            docs = make_subset(args.docs, args.n, work / "data")
            n = pq.ParquetFile(docs).metadata.num_rows
            cache = work / "cache"
            db, _ = timed([sys.executable, "-c", BARE, str(docs), str(args.max_tokens), str(args.batch_size), args.device])
            print(f"bare encode on {args.device}: {db:.1f}s", file=sys.stderr)
            de, _ = timed([sys.executable, "-m", "dedupkit", "semantic", str(docs), "-o", str(work / "o"),
                           "--eps", str(DEFAULT_EPS), "--max-tokens", str(args.max_tokens), "--embed-batch-size",
                           str(args.batch_size), "--device", args.device, "--cache-dir", str(cache), "-q"])
            s1 = json.loads((work / "o" / "summary.json").read_text())
            st = s1["stats"]
            own = s1["timings"]["total_s"] - st["encode_s"] - st["model_load_s"]
            res["e2e"] = {"docs": n, "bare_gpu_s": db, "dedupkit_gpu_s": de, "overhead": (de - db) / db,
                          "encode_s": st["encode_s"], "model_load_s": st["model_load_s"], "rest_s": own,
                          "inproc_overhead": own / st["encode_s"], "gpu_docs_per_s": n / st["encode_s"],
                          "stats": st, "timings": s1["timings"]}
            print(json.dumps(res["e2e"], indent=1, default=float), file=sys.stderr)
            save()
            cmd = ["taskset", "-c", args.cpus, sys.executable, "-m", "dedupkit", "semantic", str(docs), "-o",
                   str(work / "r"), "--eps", str(DEFAULT_EPS * 2), "--max-tokens", str(args.max_tokens),
                   "--device", "cpu", "--cache-dir", str(cache), "-q"]
            dr, _ = timed(cmd, extra_env={"CUDA_VISIBLE_DEVICES": ""})
            s2 = json.loads((work / "r" / "summary.json").read_text())
            res["rerun_2cpu"] = {"cpus": args.cpus, "wall_s": dr, "share_of_first": dr / de,
                                 "stats": {k: v for k, v in s2["stats"].items() if k != "per_eps"},
                                 "timings": s2["timings"], "dropped": s2["counts"]["dropped"]}
            print(json.dumps(res["rerun_2cpu"], indent=1, default=float), file=sys.stderr)
            save()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"semantic on {res['gpu']} (torch {res['torch']}), --max-tokens {args.max_tokens}")
    print("| measurement | value |")
    print("|---|---|")
    if "agree" in res:
        a = res["agree"]
        print(f"| cpu vs cuda embeddings, {a['docs']} docs: lowest cosine / largest abs diff | "
              f"{a['min_cosine_cpu_gpu']:.6f} / {a['max_abs_diff']:.1e} |")
        print(f"| manifest rows differing, --device cpu vs cuda ({a['cpu_dropped']} vs {a['gpu_dropped']} dropped) | "
              f"{a['manifest_rows_differing']} |")
        print(f"| MiniLM docs/s, cpu ({res['cpu_count']} cores) vs cuda | {a['cpu_docs_per_s']:,.0f} vs "
              f"{a['gpu_docs_per_s']:,.0f} |")
    if "e2e" in res:
        e = res["e2e"]
        print(f"| bare encode on cuda, {e['docs']:,} docs (s) | {e['bare_gpu_s']:.1f} |")
        print(f"| dedupkit semantic --device cuda end to end (s) | {e['dedupkit_gpu_s']:.1f} |")
        print(f"| overhead vs bare, separate processes | {e['overhead']:+.1%} |")
        print(f"| in-process: encode / model load / rest (s) | {e['encode_s']:.1f} / {e['model_load_s']:.1f} / "
              f"{e['rest_s']:.1f} |")
    if "rerun_2cpu" in res:
        r = res["rerun_2cpu"]
        print(f"| cached rerun with a new eps on CPUs {r['cpus']} (scan + k-means + pairwise + manifest) (s) | "
              f"{r['wall_s']:.1f} (k-means {r['stats'].get('kmeans_s')}, pairwise {r['stats'].get('pairwise_s')}, "
              f"{r['stats'].get('clusters')} clusters, largest {r['stats'].get('largest_kmeans_cluster')}) |")
    save()


if __name__ == "__main__":
    main()
