"""Quality of `dedupkit semantic` on labeled suites, per embedder and eps.

For every suite and model: one ``--analyze`` run embeds the suite (filling the embedding cache),
then one real run per eps reuses the cache and is scored with the shared ``score.py``. Prints a
table per suite (every eps) and a summary with each model's best eps (highest F1) and the default
eps, and writes everything as JSON.

Usage:
    python benchmarks/semantic_quality.py --data ../shared/data --score ../shared/eval/score.py \
        --models minilm,static --out benchmarks/results/semantic_quality.json

Suites are read from --data (never copied into the repository).
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dedupkit import api  # noqa: E402
from dedupkit.stages.semantic import DEFAULT_EPS  # noqa: E402

EPS = [0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.12, 0.15, 0.2, 0.25, 0.3]


def score(score_py: str, suite: Path, manifest: Path) -> dict:
    p = subprocess.run([sys.executable, score_py, "--suite", str(suite), "--manifest", str(manifest), "--json"],
                       capture_output=True, text=True, check=True)
    return json.loads(p.stdout)


def metrics(res: dict) -> dict:
    if res["kind"] == "pair":
        m = res["pair"]
        return {"P": m["precision"], "R": m["recall"], "F1": m["f1"], "ARI": None,
                "drops": res["drops"]["predicted"]}
    m = res["pairwise"]
    return {"P": m["precision"], "R": m["recall"], "F1": m["f1"], "ARI": res["ari"],
            "drops": res["drops"]["predicted"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder holding qqp-sample/ and mrpc-groups/")
    ap.add_argument("--score", required=True, help="path of shared/eval/score.py")
    ap.add_argument("--suites", default="qqp-sample,mrpc-groups")
    ap.add_argument("--models", default="minilm,static")
    ap.add_argument("--eps", default=",".join(map(str, EPS)))
    ap.add_argument("--keep", default="hard")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--cache-dir", default=None, help="embedding cache (default: dedupkit's)")
    ap.add_argument("--workdir", default=None, help="where run outputs go (default: a temp folder)")
    ap.add_argument("--out", default=None, help="write the results here as JSON")
    args = ap.parse_args()

    eps_list = sorted({float(e) for e in args.eps.split(",")} | {DEFAULT_EPS})
    work = Path(args.workdir or tempfile.mkdtemp(prefix="semq-"))
    results = []
    for suite_name in args.suites.split(","):
        suite = Path(args.data) / suite_name
        docs = suite / "docs.parquet"
        for model in args.models.split(","):
            base = work / f"{suite_name}-{model.replace(':', '_').replace('/', '_')}"
            t0 = time.perf_counter()
            an = api.semantic([str(docs)], str(base / "analyze"), id_column="id", model=model, analyze=True,
                              eps=",".join(map(str, eps_list)), keep=args.keep, max_tokens=args.max_tokens,
                              cache_dir=args.cache_dir, overwrite=True)
            first_s = time.perf_counter() - t0
            stats = an.summary["stats"]
            print(f"{suite_name} {model}: analysis {first_s:.1f}s (embedded {stats['embedded_now']}, "
                  f"cached {stats['from_cache']}, embed {stats['embed_s']}s)", file=sys.stderr)
            for eps in eps_list:
                out = base / f"eps{eps}"
                t1 = time.perf_counter()
                r = api.semantic([str(docs)], str(out), id_column="id", model=model, eps=eps, keep=args.keep,
                                 max_tokens=args.max_tokens, cache_dir=args.cache_dir, overwrite=True)
                run_s = time.perf_counter() - t1
                m = metrics(score(args.score, suite, out / "manifest"))
                results.append({"suite": suite_name, "model": model, "eps": eps, **m, "run_s": round(run_s, 2),
                                "embedded_now": r.summary["stats"]["embedded_now"],
                                "analysis_s": round(first_s, 2)})
                print(f"  eps {eps:<5g} P {m['P']:.4f} R {m['R']:.4f} F1 {m['F1']:.4f}"
                      f"{'' if m['ARI'] is None else ' ARI %.4f' % m['ARI']}"
                      f" drops {m['drops']} ({run_s:.1f}s)", file=sys.stderr)

    # Summary: per suite and model, the default eps and the best eps (highest F1).
    lines = ["| suite | model | eps | which | P | R | F1 | ARI | drops |", "|---|---|---|---|---|---|---|---|---|"]
    for suite_name in args.suites.split(","):
        for model in args.models.split(","):
            rows = [r for r in results if r["suite"] == suite_name and r["model"] == model]
            best = max(rows, key=lambda r: (r["F1"], -r["eps"]))
            default = next(r for r in rows if r["eps"] == DEFAULT_EPS)
            for which, r in (("default", default), ("best F1", best)):
                ari = "" if r["ARI"] is None else f"{r['ARI']:.4f}"
                lines.append(f"| {suite_name} | {model} | {r['eps']:g} | {which} | {r['P']:.4f} | {r['R']:.4f} | "
                             f"{r['F1']:.4f} | {ari} | {r['drops']} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"default_eps": DEFAULT_EPS, "keep": args.keep,
                                              "max_tokens": args.max_tokens, "results": results,
                                              "table": table}, indent=2))
    print(f"outputs in {work}", file=sys.stderr)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
