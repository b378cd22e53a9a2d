"""How far any pair rule on these embeddings can go on a pair suite: a supervised upper bound.

semantic_defaults.py / semantic_peers.py score dedupkit's rule. This asks what *any* rule built on
the same signals could reach, by cheating: a gradient-boosted classifier trained (5-fold,
cross-validated) on the suite's own labels, over every labelled pair at cosine >= ``--floor``, with
the cosine, both documents' density (mean cosine to their 10 nearest neighbours), content-word
Jaccard / containment / IDF-weighted Jaccard, the rarest unshared word, a number mismatch, the
length ratio and the shorter length. Pairs below the floor count as predicted negative. It prints
the best recall and F1 at precision >= ``--precision`` (pair level, no clustering) for the cosine
alone and for the classifier. On qqp-sample this shows that no rule on MiniLM's vectors and these
lexical signals reaches semhash's default F1 (0.540) at precision 0.85.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/semantic_pair_bound.py --suite ../shared/data/qqp-sample \
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", required=True)
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--floor", type=float, default=0.85)
    ap.add_argument("--precision", type=float, default=0.85)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    import faiss
    import pyarrow.parquet as pq
    from semantic_defaults import cached_embeddings
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import cross_val_predict

    from dedupkit.stages.semantic import content_words

    suite = Path(a.suite)
    t = pq.read_table(suite / "docs.parquet", columns=["id", "text"])
    ids, texts = t.column("id").to_pylist(), t.column("text").to_pylist()
    x = cached_embeddings(suite / "docs.parquet", a.cache_dir, "st:model:local:e33edc8a514ac124:maxtok=128")
    idx = {d: i for i, d in enumerate(ids)}
    p = pq.read_table(suite / "pairs.parquet").to_pylist()
    i1 = np.array([idx[r["id1"]] for r in p]); i2 = np.array([idx[r["id2"]] for r in p])
    y = np.array([bool(r["label"]) for r in p])
    cos = np.einsum("ij,ij->i", x[i1], x[i2])
    d, _ = faiss.knn(x, x, 11, faiss.METRIC_INNER_PRODUCT)
    dens = d[:, 1:].mean(1)
    cw = [content_words(s) for s in texts]
    df = Counter(w for _, s in cw for w in s)
    n = len(texts)

    def feats(i: int, j: int) -> list[float]:
        (la, A), (lb, B) = cw[i], cw[j]
        inter, union = A & B, A | B
        idf = lambda w: math.log(n / (1 + df[w]))  # noqa: E731
        wu = sum(idf(w) for w in union)
        return [len(inter) / max(1, len(union)), len(inter) / max(1, min(len(A), len(B))),
                sum(idf(w) for w in inter) / wu if wu else 0.0, max((idf(w) for w in A ^ B), default=0.0),
                float(any(w.isdigit() for w in A - B) and any(w.isdigit() for w in B - A)),
                min(la, lb) / max(la, lb, 1), min(la, lb), min(dens[i], dens[j]), max(dens[i], dens[j])]

    m = cos >= a.floor
    X = np.array([[c, *feats(i, j)] for c, i, j in zip(cos[m], i1[m], i2[m])])
    prob = cross_val_predict(HistGradientBoostingClassifier(max_iter=200, random_state=0), X, y[m], cv=5,
                             method="predict_proba")[:, 1]

    def best(score: np.ndarray) -> dict:
        o = np.argsort(-score, kind="stable"); yy = y[m][o]
        tp = np.cumsum(yy); k = np.arange(1, len(yy) + 1)
        P, R = tp / k, tp / y.sum()
        F = np.where(P + R > 0, 2 * P * R / np.maximum(P + R, 1e-12), 0)
        ok = P >= a.precision
        return {"R": round(float(R[ok].max()), 4) if ok.any() else 0.0,
                "F1": round(float(F[ok].max()), 4) if ok.any() else 0.0}

    res = {"suite": suite.name, "floor": a.floor, "precision": a.precision, "pairs_above_floor": int(m.sum()),
           "cosine": best(cos[m]), "classifier_on_its_own_labels": best(prob)}
    print(f"{suite.name}: at pair precision >= {a.precision}: cosine alone R {res['cosine']['R']:.3f} "
          f"F1 {res['cosine']['F1']:.3f}; classifier trained on the suite's labels (5-fold) "
          f"R {res['classifier_on_its_own_labels']['R']:.3f} F1 {res['classifier_on_its_own_labels']['F1']:.3f}")
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
