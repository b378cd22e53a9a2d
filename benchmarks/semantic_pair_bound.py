"""How far any pair rule on these embeddings can go on a pair suite: supervised upper bounds.

semantic_defaults.py / semantic_peers.py score dedupkit's rule. This asks what *any* rule built on
the same vectors could reach, by cheating: classifiers trained on the suite's **own labels**
(stratified 5-fold cross-validation, seeded; every labelled pair is scored by a model that never
saw it), over every labelled pair at cosine >= ``--floor`` (pairs below it count as predicted
negative; with the default 0.5 that is almost every positive). Three feature sets, each a superset of the last:

- ``cosine``: the cosine alone (no training: the ranking by cosine);
- ``cosine + words``: the cosine, content-word Jaccard / containment / IDF-weighted Jaccard, the
  rarest unshared word, a number mismatch, the length ratio and the shorter length, and the
  template signal of ``rewrite_ok`` (how many content words each side lacks, whether names are
  among them), gradient-boosted trees;
- ``cosine + density``: the cosine and both documents' density (mean cosine to their 10 nearest
  neighbours in the corpus);
- ``cosine + words + density``: both;
- ``+ vectors``: all of that plus the two embeddings themselves as ``|u - v|`` and ``u * v`` (the
  classic sentence-pair classifier head, 768 more features), gradient-boosted trees and a
  logistic regression.

For each it prints the best recall and F1 at pair precision >= each of ``--precision`` (pair level,
no clustering; clustering only loses recall at a given precision here, see below). Beside them, the
**rule's own curve**: dedupkit's decision rule (the stage's ``accepted_pairs`` + greedy centres,
``--keep easy``) over a fine eps grid, scored like ``score.py`` (a labelled pair is predicted when
both documents share a cluster), with the best F1 at each precision floor. On qqp-sample this shows
whether a default at precision >= 0.85 can reach semhash's default F1 (0.541 at precision 0.785),
and what the rule reaches at semhash's precision.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/semantic_pair_bound.py --suite ../shared/data/qqp-sample \\
        --cache-dir /tmp/ss/cache --out benchmarks/results/semantic_pair_bound.json
Needs scikit-learn (not a dedupkit dependency).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

MODEL_KEY = "st:model:local:e33edc8a514ac124:maxtok=128"


def best(score: np.ndarray, y: np.ndarray, positives: int, floors: list[float]) -> dict:
    """Best recall and F1 at precision >= each floor, ranking pairs by score (ties broken stably)."""
    o = np.argsort(-score, kind="stable")
    tp = np.cumsum(y[o])
    k = np.arange(1, len(o) + 1)
    P, R = tp / k, tp / positives
    F = np.where(P + R > 0, 2 * P * R / np.maximum(P + R, 1e-12), 0)
    out = {}
    for f in floors:
        ok = P >= f
        out[str(f)] = {"R": round(float(R[ok].max()), 4) if ok.any() else 0.0,
                       "F1": round(float(F[ok].max()), 4) if ok.any() else 0.0}
    return out


def rule_curve(suite: Path, x: np.ndarray, texts: list[str], i1, i2, y, floors: list[float]) -> dict:
    """dedupkit's rule over a fine eps grid, scored on the labelled pairs like score.py."""
    from dedupkit.neighbours import DEFAULT_K, search
    from dedupkit.policy import priority_rank
    from dedupkit.stages.semantic import DEFAULT_REWRITE_EPS, accepted_pairs, band_depth, claims, typical_key

    grid = [round(e, 3) for e in np.arange(0.02, 0.2001, 0.0025)]
    nb = search(x, DEFAULT_K, 1.0 - max(grid) - band_depth(DEFAULT_REWRITE_EPS), "exact")
    rank = priority_rank([typical_key(nb.density, "easy")], len(x))
    acc = accepted_pairs(nb, grid, DEFAULT_REWRITE_EPS, lambda idx: {int(i): texts[int(i)] for i in idx})
    pts = []
    for eps in grid:
        d, c, _ = claims(nb, 1.0 - eps, rank, acc[eps])
        pred = np.arange(len(x))
        pred[d] = c
        same = pred[i1] == pred[i2]
        tp = int((same & y).sum())
        P = tp / same.sum() if same.sum() else 1.0
        R = tp / y.sum()
        pts.append({"eps": eps, "P": round(P, 4), "R": round(R, 4), "F1": round(2 * P * R / (P + R), 4) if P + R else 0.0})
    out = {}
    for f in floors:
        ok = [p for p in pts if p["P"] >= f]
        out[str(f)] = max(ok, key=lambda p: p["F1"]) if ok else None
    return {"best_at_precision": out, "points": pts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", required=True)
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--floor", type=float, default=0.5)
    ap.add_argument("--precision", default="0.85,0.785", help="comma-separated precision floors")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    import faiss
    import pyarrow.parquet as pq
    from semantic_defaults import cached_embeddings
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from dedupkit.stages.semantic import REWRITE_MAX_SWAP, content_words, proper_names

    floors = [float(f) for f in a.precision.split(",")]
    suite = Path(a.suite)
    t = pq.read_table(suite / "docs.parquet", columns=["id", "text"])
    ids, texts = t.column("id").to_pylist(), t.column("text").to_pylist()
    x = cached_embeddings(suite / "docs.parquet", a.cache_dir, MODEL_KEY)
    idx = {d: i for i, d in enumerate(ids)}
    p = pq.read_table(suite / "pairs.parquet").to_pylist()
    i1 = np.array([idx[r["id1"]] for r in p]); i2 = np.array([idx[r["id2"]] for r in p])
    y = np.array([bool(r["label"]) for r in p])
    cos = np.einsum("ij,ij->i", x[i1], x[i2])
    d, _ = faiss.knn(x, x, 11, faiss.METRIC_INNER_PRODUCT)
    dens = d[:, 1:].mean(1)
    cw = [content_words(s) for s in texts]
    nm = [proper_names(s) for s in texts]
    df = Counter(w for _, s in cw for w in s)
    n = len(texts)

    def feats(i: int, j: int) -> list[float]:
        (la, A), (lb, B) = cw[i], cw[j]
        inter, union = A & B, A | B
        idf = lambda w: math.log(n / (1 + df[w]))  # noqa: E731
        wu = sum(idf(w) for w in union)
        da, db = A - B, B - A
        return [len(inter) / max(1, len(union)), len(inter) / max(1, min(len(A), len(B))),
                sum(idf(w) for w in inter) / wu if wu else 0.0, max((idf(w) for w in A ^ B), default=0.0),
                float(any(w.isdigit() for w in da) and any(w.isdigit() for w in db)),
                min(la, lb) / max(la, lb, 1), min(la, lb), min(dens[i], dens[j]), max(dens[i], dens[j]),
                min(len(da), len(db)), max(len(da), len(db)), float(bool(da & nm[i]) and bool(db & nm[j])),
                float(0 < max(len(da), len(db)) <= REWRITE_MAX_SWAP)]

    m = cos >= a.floor
    ym = y[m]
    pair_x = np.array([[c, *feats(i, j)] for c, i, j in zip(cos[m], i1[m], i2[m])])
    words = [0, *range(1, 8), *range(10, 14)]  # the cosine and the word features
    density = [0, 8, 9]  # the cosine and both documents' density
    vec_x = np.hstack([pair_x, np.abs(x[i1[m]] - x[i2[m]]), x[i1[m]] * x[i2[m]]])
    cv = StratifiedKFold(5, shuffle=True, random_state=0)

    def cv_prob(model, X):
        return cross_val_predict(model, X, ym, cv=cv, method="predict_proba")[:, 1]

    gbm = lambda: HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, random_state=0)  # noqa: E731
    scores = {"cosine": cos[m], "cosine + words (gbm)": cv_prob(gbm(), pair_x[:, words]),
              "cosine + density (gbm)": cv_prob(gbm(), pair_x[:, density]),
              "cosine + words + density (gbm)": cv_prob(gbm(), pair_x),
              "+ vectors (gbm)": cv_prob(gbm(), vec_x),
              "+ vectors (logistic)": cv_prob(make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000)),
                                              vec_x)}
    res = {"suite": suite.name, "floor": a.floor, "pairs": int(len(y)), "positives": int(y.sum()),
           "pairs_above_floor": int(m.sum()), "positives_above_floor": int(ym.sum()),
           "cv": "stratified 5-fold, shuffled, seed 0", "bounds": {}}
    for name, s in scores.items():
        res["bounds"][name] = best(s, ym, int(y.sum()), floors)
    res["rule"] = rule_curve(suite, x, texts, i1, i2, y, floors)
    print(f"{suite.name}: {res['pairs']} labelled pairs ({res['positives']} positive), "
          f"{res['pairs_above_floor']} at cosine >= {a.floor} ({res['positives_above_floor']} positive)")
    print(f"{'':32s}" + "".join(f"  P >= {f:<5g} R / F1  " for f in floors))
    for name, b in res["bounds"].items():
        print(f"{name:32s}" + "".join(f"  {b[str(f)]['R']:.3f} / {b[str(f)]['F1']:.3f}     " for f in floors))
    line = ""
    for f in floors:
        r = res["rule"]["best_at_precision"][str(f)]
        line += f"  {r['R']:.3f} / {r['F1']:.3f} (eps {r['eps']})" if r else "  -"
    print(f"{'dedupkit rule (clustered)':32s}{line}")
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
