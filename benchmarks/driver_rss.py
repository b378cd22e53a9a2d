#!/usr/bin/env python3
"""The Ray driver's peak RSS over corpus sizes, for any stage and settings (the rowless driver).

Each row runs the real command line once in a fresh process, ``--engine ray --workers 2``, on the
first N documents of ``--corpus`` cut into ``--shards`` Parquet files, and samples the memory of
the dedupkit process itself (the driver), of the largest Ray worker and of the whole process tree
every 50 ms (benchmarks/ray.py's ``run_once``). The "driver path" column is the summary's
``stats.global_step.mode`` (``rowless``: exact and fuzzy, every keep policy), or ``one task`` for
a stage whose decisions run in one Ray task (semantic), else ``classic``.

Usage (each ``--case`` is a label and the stage's options, ``;``-separated):
    python benchmarks/driver_rss.py --corpus /work/runs/c1m/docs.parquet --docs 200000,1000000 \
        --stage fuzzy --case "longest:--keep longest" --case "last:--keep last" \
        --json-out benchmarks/results/driver_rss_fuzzy.json
    python benchmarks/driver_rss.py --corpus /work/runs/c1m/docs.parquet --docs 200000,1000000 \
        --stage semantic --case "static:--model static --cache-dir /tmp/cache" \
        --json-out benchmarks/results/driver_rss_semantic.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from _util import reshard, table  # noqa: E402


def _raybench():
    # benchmarks/ray.py by path: importing it as "ray" would shadow Ray itself
    spec = importlib.util.spec_from_file_location("dedupkit_raybench", BENCH / "ray.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, help="docs.parquet from make_corpus.py (columns id, text)")
    ap.add_argument("--stage", required=True, choices=["exact", "fuzzy", "semantic"])
    ap.add_argument("--docs", default="200000,1000000", help="corpus sizes (the first N documents)")
    ap.add_argument("--case", action="append", required=True, help="LABEL:OPTIONS of the stage, e.g. "
                    "'longest:--keep longest'")
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--engine", default="ray", choices=["ray", "local"])
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "dedupkit-driver-rss"))
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()
    rb = _raybench()
    work = Path(args.work)
    rows = []
    for n in [int(x) for x in args.docs.split(",")]:
        files, n = reshard(Path(args.corpus), args.shards, work / f"shards-{n}", limit=n)
        for case in args.case:
            label, _, opts = case.partition(":")
            out = work / f"out-{args.stage}-{n}-{label}"
            cmd = [sys.executable, "-m", "dedupkit", args.stage, *files, "-o", str(out), "--id-column", "id",
                   "--workers", str(args.workers), "--engine", args.engine, *shlex.split(opts), "--quiet",
                   "--json", "--overwrite"]
            load = os.getloadavg()[0]
            res = rb.run_once(cmd, out)
            s = res["summary"]
            mode = s["stats"].get("global_step", {}).get("mode")
            if mode is None:
                mode = "one task" if args.engine == "ray" and args.stage == "semantic" else "classic"
            rows.append({"stage": args.stage, "docs": n, "case": label, "options": opts, "engine": args.engine,
                         "driver": mode, "wall_s": round(res["wall_s"], 1), "cpu_s": round(res["cpu_s"], 1),
                         "peak_driver_mib": round(res["peak_driver_mib"]),
                         "peak_worker_mib": round(res["peak_worker_mib"]),
                         "peak_tree_mib": round(res["peak_tree_mib"]), "dropped": s["counts"]["dropped"],
                         "load": round(load, 1)})
            print(f"{args.stage} {n} {label}: {res['wall_s']:.1f} s, driver {res['peak_driver_mib']:.0f} MiB, "
                  f"largest worker {res['peak_worker_mib']:.0f} MiB", file=sys.stderr, flush=True)
            shutil.rmtree(out, ignore_errors=True)
    print(table(["docs", "case", "engine", "driver path", "wall s", "peak driver MiB", "peak worker MiB",
                 "peak tree MiB", "dropped", "load"],
                [[r["docs"], r["case"], r["engine"], r["driver"], r["wall_s"], r["peak_driver_mib"],
                  r["peak_worker_mib"], r["peak_tree_mib"], r["dropped"], r["load"]] for r in rows]))
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps({"rows": rows, "command": sys.argv}, indent=2))


if __name__ == "__main__":
    main()
