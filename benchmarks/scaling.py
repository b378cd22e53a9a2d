#!/usr/bin/env python3
"""Per-document costs of each stage, the inputs of docs/scaling.md's 10^9-document plan.

Runs ``dedupkit exact|fuzzy|substring`` (one fresh process each, ``--workers 1`` so CPU seconds
are not inflated by two processes fighting for a loaded machine's cores) over the first ``--docs``
documents of a make_corpus ``docs.parquet`` cut into ``--shards`` Parquet files, and reports per
document: CPU milliseconds (user + system of the whole process tree, from wait4), the peak size of
``OUT/.work`` (sampled every 0.25 s: what the stage stores between its steps), the manifest bytes
(what it stores for good), and for fuzzy the candidate and verified pairs and the bytes its
shuffles move (band keys 16 B x bands, written once and read once; candidate pairs 16 B; verified
pairs 24 B; component edges 32 B per verified pair per round).

Usage:
    python /work/shared/bench/make_corpus.py --n 200000 --seed 42 --out /tmp/c200k
    python benchmarks/scaling.py --corpus /tmp/c200k/docs.parquet --docs 50000 --work /tmp/scaling \
        --json-out benchmarks/results/scaling_costs.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import SRC, dir_bytes, reshard, table, tree_rss_kb  # noqa: E402

STAGES = {
    "exact": [],
    "fuzzy": [],
    "substring": ["--min-tokens", "50"],
}


def measure(cmd: list[str], out: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak = {"rss": 0, "work": 0}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak["rss"] = max(peak["rss"], tree_rss_kb(proc.pid))
            if (out / ".work").exists():
                peak["work"] = max(peak["work"], dir_bytes(out / ".work"))
            stop.wait(0.25)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    stdout = proc.stdout.read()
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    stop.set()
    th.join()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return {"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "peak_rss_mib": peak["rss"] / 1024,
            "peak_work_bytes": peak["work"], "summary": json.loads(stdout)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--docs", type=int, default=50_000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--work", required=True)
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()
    work = Path(args.work)
    files, n = reshard(Path(args.corpus), args.shards, work / f"shards-{args.docs}", limit=args.docs)
    in_bytes = sum(os.path.getsize(f) for f in files)
    rows, out_json = [], {"docs": n, "input_bytes": in_bytes, "load_start": os.getloadavg(), "stages": {}}
    for stage in args.stages.split(","):
        out = work / f"out-{stage}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-m", "dedupkit", stage, *files, "-o", str(out), "--id-column", "id",
               "--workers", "1", "--quiet", "--json", *STAGES[stage]]
        res = measure(cmd, out)
        man = dir_bytes(out / "manifest")
        st = res["summary"].get("stats", {})
        entry = {"cpu_ms_per_doc": 1000 * res["cpu_s"] / n, "work_bytes_per_doc": res["peak_work_bytes"] / n,
                 "manifest_bytes_per_doc": man / n, "wall_s": res["wall_s"], "cpu_s": res["cpu_s"],
                 "peak_rss_mib": res["peak_rss_mib"], "dropped": res["summary"]["counts"]["dropped"]}
        if stage == "fuzzy":
            bands = res["summary"]["config"]["stage"].get("bands") or 0
            cand, ver = st.get("candidate_pairs", 0), st.get("verified_pairs", 0)
            rounds = (st.get("global_step") or {}).get("component_rounds", 2)
            entry.update({"bands": bands, "candidate_pairs_per_doc": cand / n, "verified_pairs_per_doc": ver / n,
                          "shuffle_bytes_per_doc": (2 * 16 * bands * n + 16 * cand + 24 * ver + 32 * ver * rounds) / n})
        out_json["stages"][stage] = entry
        rows.append([stage, round(entry["cpu_ms_per_doc"], 3), round(entry["work_bytes_per_doc"]),
                     round(entry["manifest_bytes_per_doc"], 1), round(entry.get("shuffle_bytes_per_doc", 0)),
                     round(res["peak_rss_mib"]), round(res["wall_s"], 1)])
        shutil.rmtree(out, ignore_errors=True)
        print(f"{stage}: {res['cpu_s']:.1f} CPU s", file=sys.stderr, flush=True)
    out_json["load_end"] = os.getloadavg()
    print(f"{n:,} documents, {in_bytes / n:,.0f} Parquet bytes a document, --workers 1")
    print(table(["stage", "CPU ms/doc", "peak .work B/doc", "manifest B/doc", "shuffled B/doc", "peak RSS MiB", "wall s"],
                rows))
    if "fuzzy" in out_json["stages"]:
        f = out_json["stages"]["fuzzy"]
        print(f"fuzzy: {f['bands']} bands, {f['candidate_pairs_per_doc']:.3f} candidate and "
              f"{f['verified_pairs_per_doc']:.3f} verified pairs a document")
    print(f"load average: start {out_json['load_start']}, end {out_json['load_end']}")
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(out_json, indent=2))


if __name__ == "__main__":
    main()
