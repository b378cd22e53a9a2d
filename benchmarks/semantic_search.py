"""Neighbour search of the semantic stage on synthetic embeddings: ANN recall, time and peak RSS.

Synthetic unit vectors shaped like sentence embeddings: topics (one centre per 200 documents, members
at cosine ~0.6 to each other) and planted near copies (30 % of the documents, cosine 0.8-0.999 to
their source). Two measurements, each in a fresh process (peak RSS is the process's own):

1. **recall** on a ``--recall-n`` sample (default 100,000): the IVF index's top-k against exact
   FAISS search for every document (recall@k), and the share of exact pairs at cosine >=
   ``--threshold`` that the IVF search finds (the pairs the stage acts on); plus both times.
2. **scale**: ``dedupkit.neighbours.search`` (the stage's search, ``--search auto``: IVF beyond
   200,000 documents) on ``--n`` documents (default 1,000,000 x 384), then the greedy centres
   the stage runs on its pairs: wall time and peak RSS.

Usage:
    OMP_NUM_THREADS=2 python benchmarks/semantic_search.py --n 1000000 --recall-n 100000 \
        --out benchmarks/results/semantic_search.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def synthetic(n: int, d: int, seed: int, dup_share: float = 0.3, chunk: int = 100_000) -> np.ndarray:
    """n unit vectors: topics plus planted near copies, built in chunks (float32 throughout)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 200), d), dtype=np.float32)
    x = np.empty((n, d), np.float32)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        x[a:b] = centres[rng.integers(0, len(centres), b - a)]
        x[a:b] += 1.2 * rng.standard_normal((b - a, d), dtype=np.float32)
    ndup = int(n * dup_share)
    src = rng.integers(0, n - ndup, ndup)
    for a in range(0, ndup, chunk):
        b = min(ndup, a + chunk)
        noise = rng.uniform(0.05, 1.0, (b - a, 1)).astype(np.float32)
        x[n - ndup + a:n - ndup + b] = x[src[a:b]] + noise * rng.standard_normal((b - a, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_recall(a) -> dict:
    from dedupkit.neighbours import build_ivf, default_nprobe, exact_knn, ivf_lists

    x = np.load(a.real).astype(np.float32) if a.real else synthetic(a.recall_n, a.dim, a.seed)
    k = a.k
    t0 = time.perf_counter()
    de = np.empty((len(x), k + 1), np.float32)
    ie = np.empty((len(x), k + 1), np.int64)
    for s in range(0, len(x), 8192):
        de[s:s + 8192], ie[s:s + 8192] = exact_knn(x[s:s + 8192], x, k + 1)
    exact_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    nlist = ivf_lists(len(x))
    index = build_ivf(x, nlist, a.seed)
    index.nprobe = a.nprobe or default_nprobe(nlist)
    train_s = time.perf_counter() - t0
    da, ia = index.search(x, k + 1)
    ivf_s = time.perf_counter() - t0
    rows = np.arange(len(x))[:, None]
    # drop the self match wherever ties put it, keep k others per row
    e_ok = ie != rows
    e_keep = e_ok & (np.cumsum(e_ok, 1) <= k)
    a_set = ia.copy()
    a_set[ia == rows] = -2
    hit = np.zeros_like(e_keep)
    for c in range(k + 1):  # is exact neighbour (r, c) among the IVF's results for row r?
        hit[:, c] = (a_set == ie[:, [c]]).any(1)
    found = (hit & e_keep).sum()
    above = e_keep & (de >= a.threshold)
    return {"n": len(x), "k": k, "nlist": int(nlist), "nprobe": int(index.nprobe),
            "recall_at_k": round(float(found / e_keep.sum()), 4),
            "pairs_above_threshold": int(above.sum()), "threshold": a.threshold,
            "recall_above_threshold": round(float((hit & above).sum() / max(1, above.sum())), 4),
            "exact_s": round(exact_s, 1), "ivf_train_add_s": round(train_s, 1), "ivf_total_s": round(ivf_s, 1),
            "peak_rss_mb": round(peak_rss_mb())}


def child_scale(a) -> dict:
    from dedupkit.neighbours import search
    from dedupkit.stages.semantic import claims

    t0 = time.perf_counter()
    x = synthetic(a.n, a.dim, a.seed)
    gen_s = time.perf_counter() - t0
    rss_data = peak_rss_mb()
    t0 = time.perf_counter()
    nb = search(x, 32, a.threshold, a.method, nprobe=a.nprobe, seed=a.seed)
    search_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    docs, _, _ = claims(nb, a.threshold, np.arange(a.n))
    claim_s = time.perf_counter() - t0
    return {"n": a.n, "dim": a.dim, "method": nb.method, "search": nb.stats, "pairs": int(len(nb.edges)),
            "dropped": int(len(docs)), "generate_s": round(gen_s, 1), "search_s": round(search_s, 1),
            "centres_s": round(claim_s, 1), "rss_after_data_mb": round(rss_data),
            "peak_rss_mb": round(peak_rss_mb()), "vectors_mb": round(x.nbytes / 2**20)}


def summary_table(res: dict, a) -> str:
    """The measurements as one markdown table (what RESULTS.md shows)."""
    from _util import table

    load = f"{res['load_before'][0]:.1f} -> {res['load_after'][0]:.1f}"
    rows = []
    if "recall" in res:
        r = res["recall"]
        what = f"{r['n']:,} x {a.dim} ({'real: ' + a.real if a.real else 'synthetic'})"
        rows += [[f"recall@{r['k']}, IVF {r['nlist']} lists, nprobe {r['nprobe']}, vs exact (every doc a query)",
                  what, f"{r['recall_at_k']:.4f}"],
                 [f"share of exact pairs at cosine >= {r['threshold']} found by IVF", what,
                  f"{r['recall_above_threshold']:.4f} of {r['pairs_above_threshold']:,}"],
                 ["exact search / IVF train+add+search (s)", what, f"{r['exact_s']} / {r['ivf_total_s']}"],
                 ["peak RSS of the recall process (MB)", what, f"{r['peak_rss_mb']:,}"]]
    if "scale" in res:
        s = res["scale"]
        st = s["search"]
        what = f"{s['n']:,} x {s['dim']} synthetic, search {s['method']}"
        rec = st.get("recall", {})
        rows += [[f"neighbour search, {st.get('nlist', '-')} lists, nprobe {st.get('nprobe', '-')}, k 32 (s)", what,
                  f"{s['search_s']}"],
                 ["greedy centres on its pairs (s)", what, f"{s['centres_s']}"],
                 ["pairs at cosine >= threshold / documents dropped", what, f"{s['pairs']:,} / {s['dropped']:,}"],
                 ["recall@10 measured by the run itself (1,000 queries vs exact)", what,
                  f"{rec.get('recall_at_k', '-')} (pairs >= threshold: {rec.get('recall_above_threshold', '-')})"],
                 ["peak RSS (MB) / the vectors alone (MB)", what, f"{s['peak_rss_mb']:,} / {s['vectors_mb']:,}"]]
    return table(["measurement", "data", f"value (load average {load})"], rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--recall-n", type=int, default=100_000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--nprobe", type=int, default=None)
    ap.add_argument("--method", default="auto")
    ap.add_argument("--real", default=None, help="recall on these embeddings (.npy, unit rows) instead of synthetic")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", default="", help="comma-separated: recall, scale")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child_recall(a) if a.child == "recall" else child_scale(a)))
        return
    res: dict = {"load_before": os.getloadavg()}
    for part in ("recall", "scale"):
        if part in a.skip.split(","):
            continue
        cmd = [sys.executable, __file__, "--child", part] + [f"--{k.replace('_', '-')}={v}" for k, v in vars(a).items()
                                                            if k not in ("child", "out", "skip") and v is not None]
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode:
            raise SystemExit(p.stderr)
        res[part] = json.loads(p.stdout.strip().splitlines()[-1])
        res[part]["process_s"] = round(time.perf_counter() - t0, 1)
        print(part, json.dumps(res[part]), flush=True)
    res["load_after"] = os.getloadavg()
    print()
    print(summary_table(res, a))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
