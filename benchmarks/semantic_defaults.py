"""The semantic stage's default eps across labelled suites, against an all-pairs reference.

For every suite: one real ``dedupkit semantic --analyze`` run over every eps (default settings
otherwise: ``--search auto``, which is exact FAISS search at these sizes, 32 neighbours, ``--keep
hard``) embeds it into the cache and counts what each eps would drop. The decisions per eps are
then taken by the stage's own functions (``neighbours.search`` + ``claims``) on the cached
embeddings, checked against the analysis's drop count for every eps, and scored with the shared
``score.py``; one real run at the default eps is scored too and must agree (so a sweep costs one
search, not one run per eps). Beside each eps, the **all-pairs reference**: every pair of
documents at cosine >= 1 - eps (the full similarity matrix, in row blocks, no neighbour cap),
clustered by the same greedy centres with the same keep ranking, scored the same way. The
must-show at the default eps: precision >= 0.85 and F1 >= all-pairs F1 - 0.01 on every suite.

Usage:
    OMP_NUM_THREADS=1 nice python benchmarks/semantic_defaults.py --score ../shared/eval/score.py \
        --suites ../shared/data/qqp-sample,../shared/data/mrpc-groups,../shared/data/clough-stevenson,\
/work/suites/dhammapada-pairs --cache-dir /tmp/ss/cache --out benchmarks/results/semantic_defaults.json

Suites are read where they are (never copied into the repository); build dhammapada-pairs with
``benchmarks/suites/build_dhammapada_pairs.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dedupkit import api  # noqa: E402
from dedupkit.embed import EmbeddingCache  # noqa: E402
from dedupkit.io.shards import fingerprint  # noqa: E402
from dedupkit.neighbours import DEFAULT_K, Neighbours, search  # noqa: E402
from dedupkit.policy import priority_rank  # noqa: E402
from dedupkit.settings import SemanticConfig  # noqa: E402
from dedupkit.stages.semantic import (  # noqa: E402
    DEFAULT_EPS, DEFAULT_MUTUAL_EPS, DEFAULT_REWRITE_EPS, accepted_pairs, band_depth, claims, typical_key,
)

EPS = [0.03, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1, 0.11, 0.12, 0.15, 0.2, 0.25]


def score(score_py: str, suite: Path, manifest: Path) -> dict:
    p = subprocess.run([sys.executable, score_py, "--suite", str(suite), "--manifest", str(manifest), "--json"],
                       capture_output=True, text=True, check=True)
    res = json.loads(p.stdout)
    m = res["pair"] if res["kind"] == "pair" else res["pairwise"]
    out = {"P": round(m["precision"], 4), "R": round(m["recall"], 4), "F1": round(m["f1"], 4),
           "drops": res["drops"]["predicted"]}
    if res["kind"] != "pair":
        out["unique_lost"] = res["drops"]["unique_lost"]
    return out


def cached_embeddings(docs: Path, cache_dir: str, key: str) -> np.ndarray:
    got = EmbeddingCache(cache_dir, key).load(fingerprint(str(docs)))
    if got is None:
        raise SystemExit(f"{docs}: no cached embeddings under {cache_dir} for {key}")
    rows, emb = got
    return np.asarray(emb, np.float32)[np.argsort(rows)]


def all_pairs(x: np.ndarray, thr: float, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (i < j) at cosine >= thr, from the full similarity matrix in row blocks."""
    parts, sims = [], []
    for a in range(0, len(x), block):
        s = x[a:a + block] @ x.T
        i, j = np.nonzero(s >= thr)
        keep = j > i + a
        parts.append(np.stack([i[keep] + a, j[keep]], 1))
        sims.append(s[i[keep], j[keep]])
    return np.concatenate(parts).astype(np.int64), np.concatenate(sims).astype(np.float32)


def write_manifest(path: Path, ids: list[str], n: int, docs: np.ndarray, centre: np.ndarray) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    keep = np.ones(n, bool)
    keep[docs] = False
    cluster = np.full(n, -1, np.int64)
    cluster[docs] = centre
    cluster[centre] = centre
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"doc_id": ids, "keep": keep,
                             "cluster_id": pa.array(cluster, mask=cluster < 0)}), path / "m.parquet")


def sweep(suite: Path, eps_list: list[float], cache_dir: str, model: str, base: Path, score_py: str,
          reference: bool = True, rewrite_eps: float = DEFAULT_REWRITE_EPS,
          mutual_eps: float = DEFAULT_MUTUAL_EPS) -> tuple[list[dict], np.ndarray]:
    """dedupkit's scores per eps on one suite (and the all-pairs reference's); also the embeddings."""
    import pyarrow.parquet as pq

    docs = suite / "docs.parquet"
    t0 = time.perf_counter()
    an = api.semantic([str(docs)], str(base / "analyze"), id_column="id", model=model, analyze=True,
                      eps=",".join(map(str, eps_list)), rewrite_eps=rewrite_eps, mutual_eps=mutual_eps, cache_dir=cache_dir,
                      overwrite=True)
    st = an.summary["stats"]
    print(f"{suite.name}: analysis {time.perf_counter() - t0:.1f}s (embedded {st['embedded_now']}, "
          f"cached {st['from_cache']})", file=sys.stderr)
    x = cached_embeddings(docs, cache_dir, st["model_key"])
    t = pq.read_table(docs, columns=["id", "text"])
    ids, all_texts = t.column("id").to_pylist(), t.column("text").to_pylist()
    n = len(ids)

    def texts(index: np.ndarray) -> dict[int, str]:
        return {int(i): all_texts[int(i)] for i in index}

    t1 = time.perf_counter()
    lowest = 1.0 - max(eps_list) - band_depth(rewrite_eps, mutual_eps)  # the bands sit below each threshold
    nb = search(x, DEFAULT_K, lowest, "exact")
    accept = accepted_pairs(nb, eps_list, rewrite_eps, texts, mutual_eps)
    # the stage's ranking under its default --keep: easy = most typical (highest mean cosine to
    # its neighbours) first, hard = least typical first, on the stage's grid (typical_key: scores
    # equal up to float noise tie and go to the lowest index)
    keep = SemanticConfig.keep
    if keep not in ("easy", "hard"):
        raise SystemExit(f"this sweep ranks like --keep easy/hard; the stage's default is {keep}")
    rank = priority_rank([typical_key(nb.density, keep)], n)
    search_s = time.perf_counter() - t1
    would = {round(r["eps"], 6): r["drop"] for r in st["per_eps"]}
    results = []
    for eps in eps_list:
        thr = 1.0 - eps
        d, c, _ = claims(nb, thr, rank, accept[eps])
        if len(d) != would[round(eps, 6)]:
            raise SystemExit(f"{suite.name} eps {eps}: {len(d)} drops here, the stage's analysis says "
                             f"{would[round(eps, 6)]}")
        write_manifest(base / f"dk{eps}", ids, n, d, c)
        got = score(score_py, suite, base / f"dk{eps}")
        if eps == DEFAULT_EPS:  # the default row also from a real run, which must agree
            api.semantic([str(docs)], str(base / "default"), id_column="id", model=model,
                         rewrite_eps=rewrite_eps, mutual_eps=mutual_eps, cache_dir=cache_dir, overwrite=True)
            real = score(score_py, suite, base / "default" / "manifest")
            if (real["P"], real["R"], real["drops"]) != (got["P"], got["R"], got["drops"]):
                raise SystemExit(f"{suite.name}: the real default run scored {real}, the sweep {got}")
        row = {"suite": suite.name, "eps": eps, "rewrite_eps": rewrite_eps, "mutual_eps": mutual_eps, "default": eps == DEFAULT_EPS,
               **got, "pairs": int(accept[eps].sum()), "search_s": round(search_s, 2)}
        if reference:
            e, s = all_pairs(x, thr - band_depth(rewrite_eps, mutual_eps))
            ref_nb = Neighbours(edges=e, sims=s, nearest=np.zeros(0), nearest_sim=np.zeros(0),
                                density=nb.density, method="all-pairs")
            ref_accept = accepted_pairs(ref_nb, [eps], rewrite_eps, texts, mutual_eps)[eps]
            d, c, _ = claims(ref_nb, thr, rank, ref_accept)
            e = e[ref_accept]
            write_manifest(base / f"ref{eps}", ids, n, d, c)
            ref = score(score_py, suite, base / f"ref{eps}")
            row.update({"allpairs_P": ref["P"], "allpairs_R": ref["R"], "allpairs_F1": ref["F1"],
                        "allpairs_pairs": int(len(e))})
        results.append(row)
        print(f"{suite.name:18s} eps {eps:<5g} P {got['P']:.3f} R {got['R']:.3f} F1 {got['F1']:.3f}"
              + (f"  all-pairs P {ref['P']:.3f} R {ref['R']:.3f} F1 {ref['F1']:.3f}" if reference else "")
              + (f"  unique_lost {got['unique_lost']}" if "unique_lost" in got else "")
              + ("  <- default" if eps == DEFAULT_EPS else ""), flush=True)
    return results, x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suites", required=True, help="comma-separated suite folders")
    ap.add_argument("--score", required=True, help="path of shared/eval/score.py")
    ap.add_argument("--eps", default=",".join(map(str, EPS)))
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--rewrite-eps", type=float, default=DEFAULT_REWRITE_EPS,
                    help="the stage's rewrite band depth below 1 - eps (0 = cosine only) [default: the stage's]")
    ap.add_argument("--mutual-eps", type=float, default=DEFAULT_MUTUAL_EPS,
                    help="the stage's mutual-neighbour tier below the band (0 = off) [default: the stage's]")
    ap.add_argument("--cache-dir", required=True, help="embedding cache (filled by the first run)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    eps_list = sorted({float(e) for e in args.eps.split(",")} | {DEFAULT_EPS})
    work = Path(args.workdir or tempfile.mkdtemp(prefix="semdef-"))
    results = []
    for suite in [Path(s) for s in args.suites.split(",")]:
        rows, _ = sweep(suite, eps_list, args.cache_dir, args.model, work / suite.name, args.score,
                        rewrite_eps=args.rewrite_eps, mutual_eps=args.mutual_eps)
        results += rows
    print("\nat the default eps %g:" % DEFAULT_EPS)
    ok_all = True
    for r in results:
        if r["default"]:
            ok = r["P"] >= 0.85 and r["F1"] >= r["allpairs_F1"] - 0.01
            ok_all &= ok
            print(f"  {r['suite']:18s} P {r['P']:.3f} F1 {r['F1']:.3f} (all-pairs {r['allpairs_F1']:.3f}) "
                  f"{'ok' if ok else 'FAIL'}")
    if args.out:
        Path(args.out).write_text(json.dumps({"default_eps": DEFAULT_EPS, "rewrite_eps": args.rewrite_eps, "mutual_eps": args.mutual_eps, "model": args.model, "load": os.getloadavg(),
                                              "all_ok": ok_all, "rows": results}, indent=1))


if __name__ == "__main__":
    main()
