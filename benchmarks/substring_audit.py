"""`dedupkit audit` before and after `dedupkit run` with substring, on a make_corpus corpus.

    python benchmarks/substring_audit.py --make-corpus ../shared/bench/make_corpus.py --n 100000 \
        --work /tmp/substring-audit --stages exact,substring

Generates the corpus (cached), runs `dedupkit audit` on it, `dedupkit run --stages STAGES --clean`,
and `dedupkit audit` on the clean corpus; prints the shares of tokens in passages of 50+ tokens
repeated at least 2, 10 and 100 times, before and after, with time and peak RSS of each command.
Writes benchmarks/results/substring_audit.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import PY, run_measured, table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--make-corpus", required=True)
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--work", default="/tmp/substring-audit")
    ap.add_argument("--stages", default="exact,substring")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--min-tokens", type=int, default=50)
    ap.add_argument("--out-json", default=str(Path(__file__).resolve().parent / "results" / "substring_audit.json"))
    args = ap.parse_args()
    work = Path(args.work)
    data = work / f"n{args.n}"
    if not (data / "meta.json").exists():
        subprocess.run([sys.executable, args.make_corpus, "--n", str(args.n), "--seed", "42", "--out", str(data),
                        "--no-parquet"], check=True, stdout=subprocess.DEVNULL)
    docs = data / "docs.jsonl"
    run_dir, clean = work / "run", work / "clean"
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.rmtree(clean, ignore_errors=True)
    mt = ["--min-tokens", str(args.min_tokens)]
    steps = {}
    steps["audit before"] = run_measured([PY, "-m", "dedupkit", "audit", str(docs), *mt, "--workers", str(args.workers),
                                          "-q", "--work-dir", str(work)])
    steps["run"] = run_measured([PY, "-m", "dedupkit", "run", str(docs), "-o", str(run_dir), "--stages", args.stages,
                                 "--set", f"substring.min_tokens={args.min_tokens}", "--workers", str(args.workers),
                                 "--clean", str(clean), "--id-column", "id"])
    steps["audit after"] = run_measured([PY, "-m", "dedupkit", "audit", str(clean / "docs.jsonl"), *mt, "--workers",
                                         str(args.workers), "-q", "--work-dir", str(work)])
    before = json.loads(steps["audit before"]["stdout"])
    after = json.loads(steps["audit after"]["stdout"])
    rows = []
    for name, prof in (("before", before), ("after", after)):
        s = prof["share"]
        rows.append([name, prof["tokens"], f"{s['repeated_2x']:.4f}", f"{s['repeated_10x']:.4f}",
                     f"{s['repeated_100x']:.4f}", prof["top_spans"][0]["count"] if prof["top_spans"] else 0])
    print(table(["corpus", "tokens", "share in 2x repeats", "10x", "100x", "most copies of a passage"], rows))
    print()
    print(table(["step", "wall s", "peak RSS MiB"], [[k, round(v["wall_s"], 1), round(v["peak_rss_mib"], 1)]
                                                      for k, v in steps.items()]))
    run_summary = json.loads((run_dir / "summary.json").read_text())
    Path(args.out_json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out_json).write_text(json.dumps({
        "argv": sys.argv[1:], "before": before, "after": after,
        "run_stages": run_summary.get("stages"),
        "steps": {k: {"wall_s": v["wall_s"], "peak_rss_mib": v["peak_rss_mib"]} for k, v in steps.items()},
    }, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
