#!/usr/bin/env python3
"""`dedupkit apply` in one process against one task per shard (local processes or Ray).

The corpus (one Parquet file, or cut into ``--shards`` files) gets an exact manifest first (not
timed); then each configuration runs the real command line in a fresh process, ``--repeats``
times, rounds interleaved: ``apply INPUT -m MANIFEST -o CLEAN --workers W [--engine E]``. The
table shows the median wall time, the CPU seconds of the whole process tree (less sensitive to
other load than wall time) and the peak RSS of the driver and of the tree (sampled every 50 ms,
benchmarks/ray.py's sampler). Every configuration's clean files must be byte-identical.

``--src`` runs the same commands with another checkout's ``src`` (e.g. main's, to show that
``--workers 1`` costs what it did before).

Usage:
    python benchmarks/apply.py --corpus /work/runs/c100k/docs.parquet --shards 1 \\
        --configs local:1,local:2 --json-out benchmarks/results/apply_c100k_1file.json
    python benchmarks/apply.py --corpus /work/runs/c100k/docs.parquet --shards 16 \\
        --configs local:1,local:2,ray:2 --json-out benchmarks/results/apply_c100k_16shards.json
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _util import reshard, table  # noqa: E402

# benchmarks/ray.py's process-tree sampler (loaded by path: a module named "ray" would shadow Ray)
_spec = importlib.util.spec_from_file_location("ray_bench", HERE / "ray.py")
ray_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ray_bench)


def files_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.name.startswith("_"):
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", required=True, help="docs.parquet from make_corpus.py")
    ap.add_argument("--shards", type=int, default=1, help="1: the file as it is; N: cut into N Parquet files")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "dedupkit-applybench"))
    ap.add_argument("--configs", default="local:1,local:2", help="engine:workers list; the first is the baseline")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--src", default=None, help="another checkout's src folder for every command (default: this one)")
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()
    if args.src:
        ray_bench.SRC = str(Path(args.src).resolve())
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.shards > 1:
        files, n = reshard(Path(args.corpus), args.shards, work / f"shards-{args.shards}")
    else:
        import pyarrow.parquet as pq

        files, n = [str(Path(args.corpus).resolve())], pq.ParquetFile(args.corpus).metadata.num_rows
    manifest = work / f"exact-{args.shards}"
    if not (manifest / "summary.json").exists():
        env = dict(os.environ, PYTHONPATH=ray_bench.SRC)
        subprocess.run([sys.executable, "-m", "dedupkit", "exact", *files, "-o", str(manifest), "--id-column", "id",
                        "--workers", "2", "--quiet", "--overwrite"], env=env, check=True, capture_output=True)
    configs = [(c.split(":")[0], int(c.split(":")[1])) for c in args.configs.split(",")]
    runs: dict[tuple[str, int], list[dict]] = {c: [] for c in configs}
    digests = {}
    for r in range(args.repeats):
        for engine, workers in configs:
            out = work / f"clean-{args.shards}-{engine}-{workers}"
            cmd = [sys.executable, "-m", "dedupkit", "apply", *files, "-m", str(manifest), "-o", str(out),
                   "--overwrite", "--json"]
            if (engine, workers) != ("local", 1):  # the default: also a checkout without these options
                cmd += ["--workers", str(workers), "--engine", engine]
            res = ray_bench.run_once(cmd, out)
            runs[(engine, workers)].append(res)
            digests[(engine, workers)] = files_digest(out)
            print(f"round {r + 1}: {engine} x{workers}: {res['wall_s']:.1f} s", file=sys.stderr, flush=True)
    results = []
    for (engine, workers), rs in runs.items():
        s = rs[-1]["summary"]
        results.append({"engine": engine, "workers": workers, "docs": n, "shards": len(files),
                        "wall_s": statistics.median(x["wall_s"] for x in rs), "walls": [round(x["wall_s"], 2) for x in rs],
                        "cpu_s": statistics.median(x["cpu_s"] for x in rs),
                        "peak_driver_mib": max(x["peak_driver_mib"] for x in rs),
                        "peak_tree_mib": max(x["peak_tree_mib"] for x in rs),
                        "kept": s["kept"], "files": digests[(engine, workers)]})
    base = results[0]
    print(table(["engine", "workers", "shards", "wall s (median)", "runs", "CPU s", "peak driver MiB", "peak tree MiB",
                 "wall vs first", "files"],
                [[r["engine"], r["workers"], r["shards"], f"{r['wall_s']:.2f}", r["walls"], f"{r['cpu_s']:.1f}",
                  f"{r['peak_driver_mib']:.0f}", f"{r['peak_tree_mib']:.0f}",
                  f"{r['wall_s'] / base['wall_s']:.2f}x", r["files"]] for r in results]))
    same = len(set(digests.values())) == 1
    print(f"\nclean files identical across configurations: {'yes' if same else 'NO'}")
    print(f"load average when done: {os.getloadavg()}; src: {ray_bench.SRC}")
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps({"corpus": args.corpus, "docs": n, "shards": len(files),
                                                   "repeats": args.repeats, "src": ray_bench.SRC,
                                                   "results": results, "uptime": os.getloadavg(),
                                                   "files_identical": same}, indent=2))
    for engine, workers in configs:
        shutil.rmtree(work / f"clean-{args.shards}-{engine}-{workers}", ignore_errors=True)
    if not same:
        raise SystemExit("clean files differ between configurations")


if __name__ == "__main__":
    main()
