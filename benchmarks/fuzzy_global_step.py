#!/usr/bin/env python
"""The fuzzy stage's two global steps on the local engine: single-process vs partitioned.

``FuzzyStage.identify`` runs the single-process step (:mod:`dedupkit.stages.fuzzy.single`: the
candidate pairs gathered on the driver) on the local engine and the partitioned one
(:mod:`dedupkit.stages.fuzzy.partitioned`: pair shuffles and components over hash partitions, the
Ray path) on a distributed engine. This runs ``dedupkit fuzzy`` in-process both ways on the local
engine (the partitioned way by marking the engine distributed), checks that the manifests are
byte-identical, and reports wall time (median of ``--repeat``) per way, to decide whether one
global step could serve both engines (issue 16: "keep only one global path if a benchmark shows no
loss").

Usage:
  python benchmarks/fuzzy_global_step.py INPUT... --work /tmp/fgs --workers 2 --repeat 3
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

HERE = Path(__file__).resolve().parent

CHILD = """
import sys
from dedupkit.engine.local import LocalEngine
LocalEngine.distributed = sys.argv[1] == "partitioned"
from dedupkit.cli.main import main
sys.argv = ["dedupkit", "fuzzy", *sys.argv[2:]]
main()
"""


def manifest_bytes(out: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted((out / "manifest").glob("*.parquet")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--work", type=Path, default=Path("/tmp/fuzzy-global-step"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json-out", type=Path, default=HERE / "results" / "fuzzy_global_step.json")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    times: dict[str, list[float]] = {"single": [], "partitioned": []}
    stats: dict[str, dict] = {}
    for _ in range(a.repeat):
        for way in times:  # alternate, so a change in machine load hits both ways alike
            out = a.work / way
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", CHILD, way, *a.inputs, "-o", str(out), "-q",
                            "--workers", str(a.workers)], check=True)
            times[way].append(time.perf_counter() - t0)
            summary = json.loads((out / "summary.json").read_text())
            stats[way] = {"identify_s": summary["timings"]["identify_s"], **summary["stats"].get("timings", {}),
                          "global_step": summary["stats"].get("global_step", {}).get("mode", "single")}
    same = manifest_bytes(a.work / "single") == manifest_bytes(a.work / "partitioned")
    load = os.getloadavg()[0]
    rows = {w: {"median_s": round(statistics.median(t), 2), "runs_s": [round(x, 2) for x in t], **stats[w]}
            for w, t in times.items()}
    print(f"{'way':<12} {'median s':>9} {'runs':<28} {'identify s (last)':>18}")
    for w, r in rows.items():
        print(f"{w:<12} {r['median_s']:>9} {str(r['runs_s']):<28} {r['identify_s']:>18}")
    print(f"manifests identical: {same}; load average {load:.1f}")
    a.json_out.parent.mkdir(parents=True, exist_ok=True)
    a.json_out.write_text(json.dumps({"inputs": a.inputs, "workers": a.workers, "repeat": a.repeat,
                                      "identical": same, "load": load, "ways": rows}, indent=1))


if __name__ == "__main__":
    main()
