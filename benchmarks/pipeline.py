#!/usr/bin/env python3
"""Benchmark `dedupkit run`: quality of the combined manifest against each single stage, and the
cost of a rerun with nothing changed against a first run.

    python benchmarks/pipeline.py --suite ../shared/data/reuters-nd --config configs/default.toml \
        --score ../shared/eval/score.py --repeats 3 --json-out benchmarks/results/pipeline.json

For every stage of the config it runs that stage alone over the whole suite (`dedupkit run
--stages STAGE`, same settings) and the whole pipeline, scores every manifest with score.py, then
times the real command (a subprocess, wall clock, Python start-up included): REPEATS first runs
into a fresh folder and REPEATS reruns with nothing changed, and reports the medians and their
ratio. Prints a table and writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def dedupkit(*args: str) -> tuple[float, subprocess.CompletedProcess]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "dedupkit", *args], capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"dedupkit {' '.join(args)} failed ({p.returncode}):\n{p.stderr}")
    return dt, p


def score(score_py: str, suite: str, manifest: Path) -> dict:
    p = subprocess.run([sys.executable, score_py, "--suite", suite, "--manifest", str(manifest), "--json"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"score.py failed on {manifest}:\n{p.stderr}{p.stdout}")
    return json.loads(p.stdout)


def lost_jaccard(suite: str, manifest: Path) -> dict:
    """For every `unique_lost` doc (dropped, and no doc of its truth cluster kept): the exact Jaccard
    of lower-cased word 5-gram shingles (the suite's convention) to the doc it was dropped for.
    High values mean a real near-duplicate the truth does not label (see the suite's caveats)."""
    import re

    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    docs = pq.read_table(str(Path(suite) / "docs.parquet"), columns=["id", "text"]).to_pydict()
    text = dict(zip(docs["id"], docs["text"]))
    tr = pq.read_table(str(Path(suite) / "truth.parquet"), columns=["id", "cluster"]).to_pydict()
    cluster = dict(zip(tr["id"], tr["cluster"]))
    m = ds.dataset(str(manifest)).to_table(columns=["doc_id", "keep", "duplicate_of"]).to_pydict()
    kept = {cluster[d] for d, k in zip(m["doc_id"], m["keep"]) if k}

    def shingles(t: str) -> set:
        w = re.findall(r"\w+", t.lower())
        return {tuple(w[i:i + 5]) for i in range(max(1, len(w) - 4))}

    js = []
    for d, k, rep in zip(m["doc_id"], m["keep"], m["duplicate_of"]):
        if not k and cluster[d] not in kept and rep is not None:
            a, b = shingles(text[d]), shingles(text[rep])
            js.append(len(a & b) / len(a | b) if a | b else 1.0)
    js.sort()
    return {"n": len(js), "min": js[0] if js else None, "median": statistics.median(js) if js else None,
            "at_least_0.8": sum(j >= 0.8 for j in js), "at_least_0.5": sum(j >= 0.5 for j in js)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", required=True, help="an eval suite folder with docs.parquet and truth.parquet")
    ap.add_argument("--config", default=str(ROOT / "configs" / "default.toml"))
    ap.add_argument("--score", required=True, help="path to shared/eval/score.py")
    ap.add_argument("--work", default=str(ROOT / "benchmarks" / "_work" / "pipeline"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="STAGE.KEY=VALUE",
                    help="passed to every `dedupkit run` (repeatable)")
    ap.add_argument("--json-out", default=None)
    a = ap.parse_args()

    sys.path.insert(0, str(ROOT / "src"))
    from dedupkit.config import resolve

    cfg = resolve(a.config, sets=a.sets)
    stages = [s.name for s in cfg.stages]
    docs = str(Path(a.suite) / "docs.parquet")
    work = Path(a.work)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    common = ["--id-column", "id", "-c", a.config, "--workers", str(a.workers)]
    for item in a.sets:
        common += ["--set", item]
    common.append("-q")

    rows = []
    for st in stages:
        out = work / f"single-{st}"
        dt, _ = dedupkit("run", docs, "-o", str(out), "--stages", st, *common)
        rows.append({"run": f"{st} alone", "seconds": dt, "score": score(a.score, a.suite, out / "manifest")})

    firsts, reruns = [], []
    out = work / "pipeline"
    for i in range(a.repeats):
        dt, _ = dedupkit("run", docs, "-o", str(out), "--overwrite", *common)
        firsts.append(dt)
    for i in range(a.repeats):
        dt, p = dedupkit("run", docs, "-o", str(out), *common[:-1])
        if "up to date" not in p.stderr:
            sys.exit(f"the rerun was not a no-op:\n{p.stderr}")
        reruns.append(dt)
    summary = json.loads((out / "summary.json").read_text())
    rows.append({"run": "pipeline " + "+".join(stages), "seconds": statistics.median(firsts),
                 "score": score(a.score, a.suite, out / "manifest")})

    print(f"suite {a.suite}, config {a.config}{''.join(' --set ' + x for x in a.sets)}, stages "
          f"{','.join(stages)}, workers {a.workers}")
    print(f"{'run':<26}{'precision':>10}{'recall':>8}{'F1':>8}{'ARI':>8}{'dropped':>9}{'ideal':>7}"
          f"{'redund.':>9}{'uniq_lost':>10}{'time s':>8}")
    for r in rows:
        s = r["score"]
        pw, dr = s["pairwise"], s["drops"]
        print(f"{r['run']:<26}{pw['precision']:>10.4f}{pw['recall']:>8.4f}{pw['f1']:>8.4f}{s['ari']:>8.4f}"
              f"{dr['predicted']:>9}{dr['ideal']:>7}{dr['redundant_kept']:>9}{dr['unique_lost']:>10}"
              f"{r['seconds']:>8.2f}")
    med_first, med_rerun = statistics.median(firsts), statistics.median(reruns)
    print(f"\nfirst run (fresh folder, --overwrite): median {med_first:.2f} s of {a.repeats} "
          f"({', '.join(f'{x:.2f}' for x in firsts)})")
    print(f"rerun, nothing changed:               median {med_rerun:.2f} s of {a.repeats} "
          f"({', '.join(f'{x:.2f}' for x in reruns)})")
    print(f"rerun / first run: {med_rerun / med_first:.1%}")
    print("per stage (pipeline): " + ", ".join(
        f"{s['name']} saw {s['counts']['considered']} rows, dropped {s['counts']['dropped_by_stage']}"
        for s in summary["stages"]))
    lost = lost_jaccard(a.suite, out / "manifest")
    if lost["n"]:
        print(f"unique_lost docs of the pipeline: {lost['n']}; word-5-gram Jaccard to the kept doc they were "
              f"dropped for: min {lost['min']:.3f}, median {lost['median']:.3f}, >= 0.8: {lost['at_least_0.8']}, "
              f">= 0.5: {lost['at_least_0.5']}")
    if a.json_out:
        Path(a.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json_out).write_text(json.dumps({
            "suite": a.suite, "config": a.config, "sets": a.sets, "stages": stages, "workers": a.workers,
            "runs": [{"run": r["run"], "seconds": r["seconds"], "pairwise": r["score"]["pairwise"],
                      "ari": r["score"]["ari"], "drops": r["score"]["drops"]} for r in rows],
            "first_run_s": firsts, "rerun_s": reruns, "rerun_ratio": med_rerun / med_first,
            "pipeline_stages": [{"name": s["name"], "counts": s["counts"]} for s in summary["stages"]],
            "unique_lost_jaccard": lost,
        }, indent=2))


if __name__ == "__main__":
    main()
