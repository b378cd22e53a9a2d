"""Time and peak RSS of `dedupkit substring` (span mode) from 100 MB to 1 GB (and more) of text.

    python benchmarks/substring.py --make-corpus ../shared/bench/make_corpus.py \
        --sizes 100,300,1000 --work /tmp/substring-bench --workers 2

For each size (MB of UTF-8 text) it generates (once, cached in --work) a make_corpus corpus of
``size / 3.55 KB`` documents with --seed 42, splits docs.jsonl into --shards JSONL shards, and runs
`dedupkit substring DIR -o OUT --min-tokens 50 --workers W` in a fresh process, sampling the RSS of
the whole process tree. Prints a table and writes benchmarks/results/substring.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import PY, run_measured, table  # noqa: E402

BYTES_PER_DOC = 3551  # make_corpus --seed 42: 35.5 MB of text for 10,000 documents


def corpus(make: str, work: Path, size_mb: int, shards: int) -> tuple[Path, dict]:
    n = max(100, int(size_mb * 1e6 / BYTES_PER_DOC))
    base = work / f"n{n}"
    meta_path = base / "meta.json"
    if not meta_path.exists():
        subprocess.run([sys.executable, make, "--n", str(n), "--seed", "42", "--out", str(base), "--no-parquet"],
                       check=True, stdout=subprocess.DEVNULL)
    meta = json.loads(meta_path.read_text())
    sharded = work / f"n{n}-s{shards}"
    if not (sharded / "_done").exists():
        shutil.rmtree(sharded, ignore_errors=True)
        sharded.mkdir(parents=True)
        outs = [open(sharded / f"part-{i:03d}.jsonl", "wb") for i in range(shards)]
        with open(base / "docs.jsonl", "rb") as fh:
            for i, line in enumerate(fh):
                outs[i * shards // n].write(line)
        for o in outs:
            o.close()
        (sharded / "_done").write_text("ok")
    return sharded, {"docs": n, "text_bytes": meta["text_bytes_utf8"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--make-corpus", required=True, help="path of make_corpus.py")
    ap.add_argument("--sizes", default="100,300,1000", help="MB of text, comma-separated")
    ap.add_argument("--work", default="/tmp/substring-bench")
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--min-tokens", type=int, default=50)
    ap.add_argument("--partitions", type=int, default=0)
    ap.add_argument("--engine", default="local")
    ap.add_argument("--keep-output", action="store_true", help="keep the substring output folders")
    ap.add_argument("--out-json", default=str(Path(__file__).resolve().parent / "results" / "substring.json"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows, results = [], []
    for size in [int(s) for s in args.sizes.split(",")]:
        data, meta = corpus(args.make_corpus, work, size, args.shards)
        out = work / f"out-{size}"
        cmd = [PY, "-m", "dedupkit", "substring", str(data), "-o", str(out), "--min-tokens", str(args.min_tokens),
               "--workers", str(args.workers), "--overwrite", "-q", "--json", "--engine", args.engine,
               "--partitions", str(args.partitions)]
        r = run_measured(cmd, env={"OMP_NUM_THREADS": "1"})
        summary = json.loads(r["stdout"][r["stdout"].index("{"):])
        st = summary["stats"]
        c = summary["counts"]
        mb = meta["text_bytes"] / 1e6
        res = {"size_mb": round(mb, 1), "docs": meta["docs"], "wall_s": round(r["wall_s"], 2),
               "cpu_s": round(r["cpu_s"], 2), "peak_rss_mib": round(r["peak_rss_mib"], 1),
               "mb_per_s": round(mb / r["wall_s"], 2), "windows": st["windows"], "partitions": st["partitions"],
               "repeated_windows": st["repeated_windows"], "spans": c["spans"], "bytes_cut": c["bytes_cut"],
               "documents_cut": c["documents_cut"], "share_repeated_2x": round(st["audit"]["share"]["repeated_2x"], 4),
               "timings": summary["timings"], "stage_timings": st["timings"], "workers": args.workers,
               "engine": args.engine, "load": os.getloadavg()[0]}
        results.append(res)
        rows.append([res["size_mb"], res["docs"], res["wall_s"], res["cpu_s"], res["peak_rss_mib"], res["mb_per_s"],
                     res["windows"], res["spans"], round(c["bytes_cut"] / meta["text_bytes"], 3), round(res["load"], 1)])
        if not args.keep_output:
            shutil.rmtree(out, ignore_errors=True)
        print(f"{size} MB done: {res['wall_s']} s, {res['peak_rss_mib']} MiB", file=sys.stderr, flush=True)
    print(table(["text MB", "docs", "wall s", "cpu s", "peak RSS MiB", "MB/s", "windows", "spans",
                 "share cut", "load"], rows))
    Path(args.out_json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out_json).write_text(json.dumps({"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                               "argv": sys.argv[1:], "results": results}, indent=2))


if __name__ == "__main__":
    main()
