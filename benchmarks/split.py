#!/usr/bin/env python
"""One file is as parallel as many (issue 19): `exact` and `fuzzy` on ONE big Parquet file, --workers 1 vs 2.

The corpus is `make_corpus.py` output as it writes it: one `docs.parquet` with one row group (100,000
rows for `--n 100000`). Before shards were split into bounded tasks, that file was one scan task, so
`--workers 2` scanned on one core. Every run is a whole `dedupkit STAGE docs.parquet --workers W`
process (wall, CPU, peak RSS of the process tree); throughput = rows / median wall. Round-robin over
the configurations, so load from other processes hits them alike. The table gives each stage's
speed-up of --workers 2 over --workers 1 (target >= 1.7x), the scan tasks the run planned, and the
least wall time the run's CPU seconds allow on the cores it may use (CPU s / min(workers, cores)):
a --workers 2 run can be no faster than half its CPU time, whatever overlaps.

`--baseline-src DIR` also runs another build's `src/` (e.g. main's, from `git archive main src`, with
the C extensions copied in) in the same round robin, so both see the same load. `--phases` then runs
each configuration once more under `benchmarks/phases.py` and prints where the time goes (process
start and imports, scan, each step of the global step, manifest, exit: wall, main-process CPU and
workers' CPU per phase).

Before timing, the measured `src/` trees are byte-compiled (`compileall`, as pip does when it
installs a package): this environment sets PYTHONDONTWRITEBYTECODE=1, so an editable checkout would
otherwise compile every changed module again in every process (~0.09 CPU s each here); `--no-compile`
measures without. After the runs, the manifests of every configuration of a stage are compared
byte for byte (printed, and `manifests_identical` in the JSON).

`--big-gb G` also writes a G-GB Parquet file with 16 row groups (the corpus's rows repeated, under
--work) and shows how many scan tasks `dedupkit.scan.plan_tasks` makes of it (target >= 16); with
`--run-big` it runs `dedupkit exact --workers 2` on it too.

Usage:
  python ../shared/bench/make_corpus.py --n 100000 --seed 42 --out /tmp/c100k
  python benchmarks/split.py --corpus /tmp/c100k --repeat 3 --big-gb 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))
from _util import PY, SRC, run_measured, table  # noqa: E402


def _argv(stage: str, path: Path, out: Path, workers: int) -> list[str]:
    return [stage, str(path), "-o", str(out), "--workers", str(workers), "--id-column", "id", "--overwrite", "-q",
            "--json"]


def run(stage: str, path: Path, out: Path, workers: int, src: str = SRC) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    m = run_measured([PY, "-m", "dedupkit", *_argv(stage, path, out, workers)], env={"PYTHONPATH": src})
    info = json.loads(m["stdout"])
    return {"wall_s": round(m["wall_s"], 2), "cpu_s": round(m["cpu_s"], 2), "peak_rss_mib": round(m["peak_rss_mib"]),
            "rows": info["counts"]["rows"], "dropped": info["counts"]["dropped"], "timings": info["timings"]}


def big_file(src: Path, dest: Path, gb: float, groups: int = 16) -> Path:
    """A Parquet file of about ``gb`` GB (as written, zstd) with ``groups`` equal row groups: the
    rows of ``src`` repeated (ids renumbered)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    done = dest.with_suffix(".json")
    if dest.exists() and done.exists() and json.loads(done.read_text()) == {"gb": gb, "groups": groups}:
        return dest
    base = pq.read_table(src)
    copies = max(1, round(gb * 2**30 / src.stat().st_size))
    per_group = -(-base.num_rows * copies // groups)
    tmp = dest.with_name(dest.name + ".tmp")
    with pq.ParquetWriter(tmp, base.schema, compression="zstd") as w:
        buf: list = []
        n = 0
        for c in range(copies + 1):
            if c < copies:
                ids = pa.array(range(c * base.num_rows, (c + 1) * base.num_rows), pa.int64())
                buf.append(base.set_column(0, "id", ids))
                n += base.num_rows
            while n >= per_group or (c == copies and n):
                whole = pa.concat_tables(buf)
                w.write_table(whole.slice(0, per_group), row_group_size=per_group)
                rest = whole.slice(per_group)
                buf, n = [rest], rest.num_rows
    os.replace(tmp, dest)
    done.write_text(json.dumps({"gb": gb, "groups": groups}))
    return dest


def phases(a, path: Path, builds: dict[str, str]) -> dict:
    """Each configuration once under benchmarks/phases.py: its timeline, printed and returned."""
    import subprocess

    sys.path.insert(0, str(HERE))
    from phases import describe, makespans, render, timeline

    got = {}
    for build, src in builds.items():
        for stage in a.stages:
            for w in a.workers:
                out, log = a.work / f"{stage}-w{w}", a.work / f"phases-{build}-{stage}-w{w}.json"
                shutil.rmtree(out, ignore_errors=True)
                env = {**os.environ, "PYTHONPATH": src}
                subprocess.run([PY, str(HERE / "phases.py"), "--json-out", str(log), "--",
                                *_argv(stage, path, out, w)], env=env, check=True, stdout=subprocess.DEVNULL)
                end = time.time()
                data = json.loads(log.read_text())
                rows = timeline(data["events"], data["start"], end)
                # the steps of a phase that take (almost) no time are folded into the next one
                shown, carry = [], None
                for r in rows:
                    if carry is not None:
                        r = {**r, "from": carry["from"], **{k: r[k] + carry[k] for k in ("wall_s", "cpu_main_s",
                                                                                          "cpu_workers_s")}}
                    if r["wall_s"] < 0.015 and r is not rows[-1]:
                        carry = r
                        continue
                    carry = None
                    shown.append(r)
                print(f"\n{build}: {stage} --workers {w} (load {os.getloadavg()[0]:.1f})")
                print(render(shown))
                tasks = makespans(data.get("tasks", []))
                for t in tasks:
                    print(describe(t))
                got[f"{build}:{stage}:w{w}"] = {"phases": rows, "tasks": tasks}
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, required=True, help="make_corpus.py output folder (docs.parquet)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/split-bench"))
    ap.add_argument("--stages", nargs="+", default=["exact", "fuzzy"])
    ap.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--big-gb", type=float, default=0.0, help="also plan (and with --run-big run) a file this big")
    ap.add_argument("--run-big", action="store_true")
    ap.add_argument("--json-out", type=Path, default=HERE / "results" / "split.json")
    ap.add_argument("--baseline-src", help="another build's src/ folder, run in the same round robin")
    ap.add_argument("--phases", action="store_true", help="also print each configuration's phases (phases.py)")
    ap.add_argument("--no-compile", action="store_true", help="do not byte-compile the measured src/ first")
    a = ap.parse_args()

    path = a.corpus / "docs.parquet"
    import pyarrow.parquet as pq

    md = pq.ParquetFile(path).metadata
    print(f"{path}: {md.num_rows:,} rows, {md.num_row_groups} row group(s), {path.stat().st_size / 2**20:,.0f} MiB",
          file=sys.stderr)
    builds = {"this": SRC, **({"baseline": a.baseline_src} if a.baseline_src else {})}
    if not a.no_compile:
        import subprocess

        for src in builds.values():
            subprocess.run([PY, "-m", "compileall", "-q", str(Path(src) / "dedupkit")], check=True,
                           stdout=subprocess.DEVNULL)
    load = os.getloadavg()
    runs: dict[tuple[str, str, int], list[dict]] = {(b, s, w): [] for s in a.stages for w in a.workers for b in builds}
    order = list(runs)
    for r in range(a.repeat):
        # every other round in reverse: no configuration always runs right after the same one
        for (build, stage, w) in (order if r % 2 == 0 else order[::-1]):
            res = run(stage, path, a.work / f"{build}-{stage}-w{w}", w, builds[build])
            runs[(build, stage, w)].append(res)
            print(f"{build}: {stage} --workers {w} run {r + 1}: {res['wall_s']} s, {res['cpu_s']} CPU s, "
                  f"{res['timings'].get('scan_tasks')} scan tasks, {res['peak_rss_mib']} MiB", file=sys.stderr, flush=True)
    rows, out = [], []
    for (build, stage, w), rs in runs.items():
        wall = statistics.median(x["wall_s"] for x in rs)
        base = statistics.median(x["wall_s"] for x in runs[(build, stage, a.workers[0])])
        rec = {"build": build, "stage": stage, "workers": w, "median_wall_s": wall, "docs_per_s": rs[0]["rows"] / wall,
               "speedup_vs_first": base / wall, "median_cpu_s": statistics.median(x["cpu_s"] for x in rs),
               "scan_tasks": rs[0]["timings"].get("scan_tasks"), "peak_rss_mib": max(x["peak_rss_mib"] for x in rs),
               "runs": rs}
        out.append(rec)
        rows.append(([build] if len(builds) > 1 else []) + [
            stage, w, round(wall, 2), round(rec["docs_per_s"]), f"{rec['speedup_vs_first']:.2f}x",
            round(rec["median_cpu_s"], 2), round(rec["median_cpu_s"] / min(w, os.cpu_count() or 1), 2),
            rec["scan_tasks"], rec["peak_rss_mib"]])
    print(f"\n{md.num_rows:,} rows in one file ({md.num_row_groups} row group), repeat={a.repeat} (median); "
          f"load average at start {load[0]:.1f}, at end {os.getloadavg()[0]:.1f}")
    print(table((["build"] if len(builds) > 1 else []) + [
        "stage", "workers", "median wall s", "docs/s", f"speed-up vs --workers {a.workers[0]}", "CPU s",
        "least wall (CPU s / cores used)", "scan tasks", "peak RSS MiB"], rows))
    # where the time goes: the process's own start and exit (wall minus the summary's total), the
    # scan (parallel), the stage's global step and the manifest write (this process), and what an
    # interpreter and dedupkit's imports cost alone (every worker pays them again)
    fixed = {name: statistics.median(run_measured([PY, "-c", code])["wall_s"] for _ in range(max(a.repeat, 3)))
             for name, code in (("python_start_s", "pass"),
                                ("imports_s", "import dedupkit.cli.main, dedupkit.scan, dedupkit.stages.exact"))}
    brows = []
    for rec in out:
        med = {k: statistics.median(x["timings"].get(k, 0.0) for x in rec["runs"])
               for k in ("scan_s", "identify_s", "write_s", "total_s")}
        rec["breakdown"] = {**med, "outside_s": round(rec["median_wall_s"] - med["total_s"], 2)}
        brows.append(([rec["build"]] if len(builds) > 1 else []) + [
            rec["stage"], rec["workers"], rec["median_wall_s"], rec["breakdown"]["outside_s"], med["scan_s"],
            med["identify_s"], med["write_s"]])
    print(f"\nBreakdown (median s): python start alone {fixed['python_start_s']:.2f}, "
          f"+ dedupkit's imports {fixed['imports_s']:.2f}")
    print(table((["build"] if len(builds) > 1 else []) + [
        "stage", "workers", "wall", "start+exit (wall - total)", "scan", "identify", "write"], brows))
    identical = {}
    for stage in a.stages:
        outs = [a.work / f"{b}-{stage}-w{w}" for b in builds for w in a.workers]
        files = [{p.name: p.read_bytes() for p in sorted((o / "manifest").glob("*.parquet"))} for o in outs]
        identical[stage] = all(f == files[0] for f in files[1:])
        print(f"{stage}: manifests of {', '.join(o.name for o in outs)} "
              f"{'byte-identical' if identical[stage] else 'DIFFER'}")
    result = {"corpus": str(path), "rows": md.num_rows, "row_groups": md.num_row_groups, "load_at_start": load,
              "load_at_end": os.getloadavg(), "bytecode_compiled": not a.no_compile, "fixed": fixed, "runs": out,
              "manifests_identical": identical}
    if a.phases:
        result["phases"] = phases(a, path, builds)
    if a.big_gb:
        from dedupkit.io.read import ReadSpec
        from dedupkit.io.shards import discover
        from dedupkit.scan import plan_tasks

        t0 = time.perf_counter()
        big = big_file(path, a.work / "big.parquet", a.big_gb)
        bmd = pq.ParquetFile(big).metadata
        info = {"file": str(big), "bytes": big.stat().st_size, "row_groups": bmd.num_row_groups, "rows": bmd.num_rows,
                "build_s": round(time.perf_counter() - t0, 1)}
        for w in (1, 2):
            info[f"planned_tasks_workers{w}"] = len(plan_tasks(discover([str(big)]), ReadSpec(), None, "/nonexistent",
                                                               "k", workers=w))
        print(f"\n{big}: {info['bytes'] / 2**30:.2f} GiB, {info['row_groups']} row groups, {info['rows']:,} rows: "
              f"{info['planned_tasks_workers1']} scan tasks (--workers 1), {info['planned_tasks_workers2']} (--workers 2)")
        if a.run_big:
            res = run("exact", big, a.work / "exact-big", 2)
            info["exact_workers2"] = res
            print(f"dedupkit exact --workers 2 on it: {res['wall_s']} s, {res['timings']['scan_tasks']} scan tasks, "
                  f"{res['peak_rss_mib']} MiB peak RSS")
        result["big"] = info
    a.json_out.parent.mkdir(parents=True, exist_ok=True)
    a.json_out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
