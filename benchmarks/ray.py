#!/usr/bin/env python3
"""Ray engine vs the local engine on the same corpus: wall time, docs/s, peak memory, overhead.

Each configuration runs the real command line in a fresh process (Ray's start-up included, as a
user pays it), ``--repeats`` times; the table shows medians of the wall time and the highest peaks
of memory, sampled every 50 ms from /proc over the whole process tree:

- tree: RSS summed over the driver and every process below it (Ray's GCS, raylet and workers);
- driver: the dedupkit process itself (where the global step's arrays live);
- worker: the largest single Ray worker (or local pool worker) process.

It also sums the CPU seconds of every process of the tree (less sensitive than wall time to other
load on a shared machine) and shows wall and CPU time against the local engine at the same
number of workers.

The corpus is first cut into ``--shards`` Parquet files (not timed) so that there are per-shard
tasks to spread. Every configuration's manifest is compared with the first one's.

Usage:
    python /work/shared/bench/make_corpus.py --n 200000 --seed 42 --out /tmp/c200k
    python benchmarks/ray.py --corpus /tmp/c200k/docs.parquet --work /tmp/raybench --repeats 3
    python benchmarks/ray.py --corpus /tmp/c200k/docs.parquet --work /tmp/raybench \
        --configs local:2,ray:2 --repeats 3 --json-out benchmarks/results/ray_fuzzy_2workers_only.json
    # a cluster user's case: Ray already running (`ray start --head`), the command connects to it
    python benchmarks/ray.py --corpus /tmp/c200k/docs.parquet --configs local:2,ray:2,cluster:2 --repeats 3 --steps
    # the driver's peak RSS over corpus sizes, and the bucket step's bytes read per task:
    python /work/shared/bench/make_corpus.py --n 1000000 --seed 42 --min-words 30 --max-words 60 --out /tmp/c1m
    python benchmarks/ray.py --corpus /tmp/c1m/docs.parquet --work /tmp/raybench \
        --driver-series 200000,1000000 --bucket-partitions 1,4,16 --json-out benchmarks/results/ray_driver.json
    python benchmarks/ray.py --corpus /tmp/c1m/docs.parquet --stage exact --driver-series 200000,1000000 \
        --json-out benchmarks/results/ray_driver_exact.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import _children, _rss_kb, dir_bytes, reshard, table  # noqa: E402
CONFIGS = [("local", 1), ("local", 2), ("ray", 1), ("ray", 2)]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _is_worker(cmd: str) -> bool:
    return "default_worker.py" in cmd or cmd.startswith("ray::") or "multiprocessing.spawn" in cmd \
        or "spawn_main" in cmd


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    """utime + stime of a process, seconds."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def sample_tree(root: int, seen_cmd: dict[int, str], cpu: dict[int, float] | None = None) -> tuple[int, int, int]:
    """(tree, driver, largest worker) RSS in KiB; records each process's CPU seconds in ``cpu``."""
    total, worker, stack = 0, 0, [root]
    driver = _rss_kb(root)
    while stack:
        p = stack.pop()
        if cpu is not None:
            cpu[p] = max(cpu.get(p, 0.0), _cpu_s(p))
        rss = _rss_kb(p)
        total += rss
        if p != root:
            cmd = seen_cmd.get(p)
            if cmd is None:
                cmd = seen_cmd[p] = _cmdline(p)
            if _is_worker(cmd):
                worker = max(worker, rss)
        stack.extend(_children(p))
    return total, driver, worker


BENCH = str(Path(__file__).resolve().parent)


def run_once(cmd: list[str], out: Path, steps: Path | None = None, cluster: "Cluster | None" = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("RAY_ADDRESS", None)
    if steps is not None:  # the same command through _ray_steps: every engine.map timed
        assert cmd[1:3] == ["-m", "dedupkit"]
        cmd = [cmd[0], "-c", "import _ray_steps; _ray_steps.main()", *cmd[3:]]
        # its own folder on the path (this folder holds ray.py, which would shadow Ray itself)
        mod = steps.parent / "steps-module"
        mod.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(BENCH) / "_ray_steps.py", mod / "_ray_steps.py")
        env["PYTHONPATH"] = str(mod) + os.pathsep + env["PYTHONPATH"]
        env["DEDUPKIT_BENCH_STEPS"] = str(steps)
        steps.unlink(missing_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peaks = {"tree": 0, "driver": 0, "worker": 0, "work_bytes": 0}
    cpu: dict[int, float] = {}
    # a running cluster's processes (its job's workers come and go with the command): CPU seconds
    # sampled like the tree's, less what the long-lived ones had used before the command started
    base = cluster.cpu_s() if cluster is not None else {}
    cluster_cpu: dict[int, float] = {}
    stop = threading.Event()

    def sample():
        seen: dict[int, str] = {}
        k = 0
        while not stop.is_set():
            if cluster is not None:
                for p, c in cluster.cpu_s().items():
                    cluster_cpu[p] = max(cluster_cpu.get(p, 0.0), c)
            t, d, w = sample_tree(proc.pid, seen, cpu)
            peaks["tree"], peaks["driver"] = max(peaks["tree"], t), max(peaks["driver"], d)
            peaks["worker"] = max(peaks["worker"], w)
            if k % 20 == 0 and (out / ".work").exists():
                peaks["work_bytes"] = max(peaks["work_bytes"], dir_bytes(out / ".work"))
            k += 1
            time.sleep(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    th.join()
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{stderr[-3000:]}")
    summary = json.loads(stdout)
    step_log = json.loads(steps.read_text()) if steps is not None and steps.exists() else None
    if step_log is not None:
        step_log["wall"] = wall
    # CPU seconds of every process of the tree, as last sampled (a process that ended between two
    # samples loses at most 50 ms): less sensitive to other load on the machine than wall time.
    cpu_s = sum(cpu.values()) + sum(max(0.0, c - base.get(p, 0.0)) for p, c in cluster_cpu.items())
    return {"wall_s": wall, "cpu_s": cpu_s, **{f"peak_{k}_mib": v / 1024 for k, v in peaks.items() if k != "work_bytes"},
            "peak_work_mib": peaks["work_bytes"] / 2**20, "summary": summary, "steps": step_log}


class Cluster:
    """A running Ray instance (``ray start --head``) for the ``cluster:N`` configurations.

    A Ray user on a cluster connects to an instance that is already up (``--ray-address``) and
    never pays ``ray.init``'s start; ``ray:N`` measures the other case, a local instance that the
    command starts and stops itself. The instance gets ``N`` CPUs, its own temp folder and port on
    the loopback, and dedupkit's ``src`` on its workers' path. Its processes are not below the
    command's process, so their CPU seconds are sampled beside the command's (:func:`run_once`) and
    their memory is not in the tree column.
    """

    def __init__(self, cpus: int, path: str = "") -> None:
        import socket

        def free_port() -> int:
            with socket.socket() as so:
                so.bind(("127.0.0.1", 0))
                return so.getsockname()[1]

        port = free_port()
        self.client_port = free_port()
        self.tmp = tempfile.mkdtemp(prefix="rbc")  # short: Ray's socket paths must stay under 108 bytes
        # no token authentication on this loopback instance: `ray start` turns it on when a token
        # exists (RAY_AUTH_TOKEN, or ~/.ray/auth_token, which a local ray.init saves), and the
        # commands (run_once copies this environment) would then need the same token
        os.environ.pop("RAY_AUTH_TOKEN", None)
        os.environ["RAY_AUTH_MODE"] = "disabled"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (path, SRC, env.get("PYTHONPATH", "")) if p)
        env.pop("RAY_ADDRESS", None)
        # Ray's own command line, through this interpreter (a venv that shares Ray has no `ray`)
        ray_cli = [sys.executable, "-c", "import sys; from ray.scripts.scripts import main; "
                   "sys.argv[0] = 'ray'; main()"]
        subprocess.run([*ray_cli, "start", "--head", f"--num-cpus={cpus}", "--temp-dir", self.tmp,
                        "--port", str(port), "--include-dashboard=false", "--disable-usage-stats",
                        # free ports, not Ray's fixed defaults: another instance may run on this machine
                        f"--dashboard-port={free_port()}", f"--ray-client-server-port={self.client_port}",
                        f"--dashboard-agent-listen-port={free_port()}"],
                       env=env, check=True, capture_output=True, cwd=self.tmp)  # cwd: no ray.py of ours shadows Ray
        self.address = f"127.0.0.1:{port}"

    def pids(self) -> list[int]:
        """The instance's processes: those naming its temp folder, and every process below them
        (the raylet's workers)."""
        # the Ray Client server names neither the temp folder nor a parent below it: its port
        client = f"--port={self.client_port} "  # _cmdline joins the arguments with spaces
        found = [int(d.name) for d in Path("/proc").glob("[0-9]*")
                 if self.tmp in (c := _cmdline(int(d.name))) or client in c]
        seen, stack = set(found), list(found)
        while stack:
            for c in _children(stack.pop()):
                if c not in seen:
                    seen.add(c)
                    stack.append(c)
        return sorted(seen)

    def cpu_s(self) -> dict[int, float]:
        return {p: _cpu_s(p) for p in self.pids()}

    def stop(self) -> None:
        import signal

        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
            for p in self.pids():
                try:
                    os.kill(p, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + wait
            while self.pids() and time.time() < deadline:
                time.sleep(0.1)
        shutil.rmtree(self.tmp, ignore_errors=True)


def steps_table(runs: dict) -> str:
    """Per configuration (its last run): where the wall time goes, step by step.

    ``start``: from the process start to the first task submitted (imports, discovery, planning,
    and for Ray the wait for the instance); each ``engine.map`` step: its wall time on the driver
    and its tasks' CPU seconds summed; ``exit``: after the last step (summary, swap, Ray's
    shutdown, interpreter exit)."""
    cols, order = [], []
    per: dict[str, dict[str, tuple[float, float]]] = {}
    for (engine, workers), rs in runs.items():
        log = rs[-1].get("steps")
        if not log:
            continue
        name = f"{engine}:{workers}"
        cols.append(name)
        d: dict[str, list[float]] = {}
        maps = log["maps"]
        first = maps[0]["at"] if maps else log["end"]
        d["start (to the first task)"] = [first, 0.0]
        for e in log["engine"]:
            d["  of which: " + e["what"]] = [e["wall"], 0.0]
        d["  of which: first task's start after submit"] = [maps[0]["first_start"] if maps else 0.0, 0.0]
        for m in maps:
            key = m["desc"] or "(map)"
            cur = d.setdefault(key, [0.0, 0.0])
            cur[0] += m["wall"]
            cur[1] += m["cpu"]
        last = (maps[-1]["at"] + maps[-1]["wall"]) if maps else first
        d["exit (after the last step)"] = [log["wall"] - last, 0.0]
        d["total (wall)"] = [log["wall"], sum(m["cpu"] for m in maps)]
        for k in d:
            if k not in order:
                order.append(k)
        per[name] = {k: tuple(v) for k, v in d.items()}
    if not cols:
        return ""
    head = "| step | " + " | ".join(f"{c} wall s | {c} task CPU s" for c in cols) + " |"
    lines = [head, "|---|" + "---|---|" * len(cols)]
    for k in order:
        cells = []
        for c in cols:
            w, cpu = per[c].get(k, (None, None))
            cells += ["-" if w is None else f"{w:.2f}", "-" if not cpu else f"{cpu:.2f}"]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def manifest_digest(out: Path) -> str:
    import pyarrow.dataset as ds

    t = ds.dataset(str(out / "manifest"), format="parquet").to_table()
    t = t.sort_by([("shard", "ascending"), ("row", "ascending")])
    h = hashlib.sha256()
    for col in ("shard", "row", "doc_id", "keep", "cluster_id", "duplicate_of", "score"):
        h.update(str(t.column(col).to_pylist()).encode())
    return h.hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", required=True, help="docs.parquet from make_corpus.py")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "dedupkit-raybench"),
                    help="scratch folder (shards and outputs; default: %(default)s)")
    ap.add_argument("--stage", default="fuzzy", choices=["fuzzy", "exact"])
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--configs", default=",".join(f"{e}:{w}" for e, w in CONFIGS),
                    help="engine:workers list, the first is the baseline of the overhead column; engine "
                         "local, ray (a local Ray instance the command starts and stops), or cluster (Ray "
                         "already running: one `ray start --head --num-cpus workers` for the whole "
                         "benchmark, the command connects with --ray-address)")
    ap.add_argument("--json-out", default=None, help="write the results here as JSON")
    ap.add_argument("--src", default=None,
                    help="run the dedupkit of this src folder (e.g. another checkout's, to compare builds; "
                         "default: this checkout's)")
    ap.add_argument("--steps", action="store_true",
                    help="time every engine.map step of each run (benchmarks/_ray_steps.py) and print where "
                         "each configuration's wall time goes (its last run)")
    ap.add_argument("--driver-series", default=None,
                    help="document counts (e.g. 200000,1000000): the first N documents of --corpus, --stage "
                         "on Ray at --series-workers workers, once per count: the driver's peak RSS "
                         "(keep first: the driver touches no rows; keep longest: the classic driver)")
    ap.add_argument("--series-workers", type=int, default=2)
    ap.add_argument("--series-keeps", default="first,longest")
    ap.add_argument("--bucket-partitions", default=None,
                    help="key partitions per band (e.g. 1,4,16): fuzzy on the local engine with "
                         "DEDUPKIT_DOCS_PER_PARTITION set to match; the bucket step's bytes read per task")
    ap.add_argument("--bucket-docs", type=int, default=200_000, help="documents for --bucket-partitions")
    args = ap.parse_args()
    if args.src:
        global SRC
        SRC = str(Path(args.src).resolve())
    if args.driver_series or args.bucket_partitions:
        return series(args)

    work = Path(args.work)
    files, n = reshard(Path(args.corpus), args.shards, work / "shards")
    configs = [(c.split(":")[0], int(c.split(":")[1])) for c in args.configs.split(",")]
    runs: dict[tuple[str, int], list[dict]] = {c: [] for c in configs}
    outs = {c: work / f"out-{args.stage}-{c[0]}-{c[1]}" for c in configs}
    # Rounds over the configurations (A B C D, A B C D, ...) rather than all repeats of one in a
    # row: on a shared machine the load drifts, and interleaving spreads it over every config.
    steps_module = ""
    if args.steps:  # run_once puts _ray_steps here; a running cluster's workers need it on their path
        steps_module = str(work / "steps-module")
        os.makedirs(steps_module, exist_ok=True)
        shutil.copy(Path(BENCH) / "_ray_steps.py", Path(steps_module) / "_ray_steps.py")
    clusters = {w: Cluster(w, steps_module) for e, w in configs if e == "cluster"}
    try:
        for r in range(args.repeats):
            for engine, workers in configs:
                out = outs[(engine, workers)]
                cmd = [sys.executable, "-m", "dedupkit", args.stage, *files, "-o", str(out), "--id-column", "id",
                       "--workers", str(workers), "--quiet", "--json", "--overwrite"]
                cluster = clusters.get(workers) if engine == "cluster" else None
                cmd += ["--engine", "ray", "--ray-address", cluster.address] if cluster else ["--engine", engine]
                res = run_once(cmd, out, work / f"steps-{engine}-{workers}.json" if args.steps else None, cluster)
                runs[(engine, workers)].append(res)
                print(f"round {r + 1}: {engine} x{workers}: {res['wall_s']:.1f} s", file=sys.stderr, flush=True)
    finally:
        for cluster in clusters.values():
            cluster.stop()
    results = []
    digests = {}
    for (engine, workers), rs in runs.items():
        out = outs[(engine, workers)]
        digests[(engine, workers)] = manifest_digest(out)
        s = rs[-1]["summary"]
        wall = statistics.median(x["wall_s"] for x in rs)
        results.append({
            "engine": engine, "workers": workers, "docs": n, "wall_s": wall,
            "walls": [round(x["wall_s"], 1) for x in rs], "docs_per_s": n / wall,
            "cpu_s": statistics.median(x["cpu_s"] for x in rs),
            "scan_s": statistics.median(x["summary"]["timings"]["scan_s"] for x in rs),
            "identify_s": statistics.median(x["summary"]["timings"]["identify_s"] for x in rs),
            "peak_tree_mib": max(x["peak_tree_mib"] for x in rs),
            "peak_driver_mib": max(x["peak_driver_mib"] for x in rs),
            "peak_worker_mib": max(x["peak_worker_mib"] for x in rs),
            "peak_work_mib": max(x["peak_work_mib"] for x in rs),
            "dropped": s["counts"]["dropped"], "stats": s.get("stats", {}),
            "manifest": digests[(engine, workers)],
        })
        shutil.rmtree(out, ignore_errors=True)

    by = {(r["engine"], r["workers"]): r for r in results}
    lines = ["| engine | workers | wall s (median) | runs | docs/s | scan s | identify s | CPU s | "
             "peak tree MiB | peak driver MiB | peak worker MiB | wall vs local | CPU vs local | manifest |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        base = by.get(("local", r["workers"]))
        ratio = f"{r['wall_s'] / base['wall_s']:.2f}x" if base else "-"
        cratio = f"{r['cpu_s'] / base['cpu_s']:.2f}x" if base and base["cpu_s"] else "-"
        lines.append(f"| {r['engine']} | {r['workers']} | {r['wall_s']:.1f} | {r['walls']} | {r['docs_per_s']:,.0f} | "
                     f"{r['scan_s']:.1f} | {r['identify_s']:.1f} | {r['cpu_s']:.0f} | {r['peak_tree_mib']:,.0f} | "
                     f"{r['peak_driver_mib']:,.0f} | {r['peak_worker_mib']:,.0f} | {ratio} | {cratio} | "
                     f"{r['manifest']} |")
    print("\n".join(lines))
    breakdown = steps_table(runs) if args.steps else ""
    if breakdown:
        print("\nwhere the time goes (last run of each configuration):\n" + breakdown)
    same = len(set(digests.values())) == 1
    print(f"\nmanifests identical across configurations: {'yes' if same else 'NO'}")
    print(f"load average when done: {os.getloadavg()}")
    print(f"docs: {n:,} in {len(files)} shards; peak work folder: "
          f"{max(r['peak_work_mib'] for r in results):,.0f} MiB")
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps({"stage": args.stage, "docs": n, "shards": len(files),
                                                   "repeats": args.repeats, "results": results,
                                                   "uptime": os.getloadavg(),
                                                   "steps": {f"{e}:{w}": rs[-1].get("steps") for (e, w), rs in runs.items()},
                                                   "manifests_identical": same}, indent=2))
    if not same:
        raise SystemExit("manifests differ between engines")


def series(args) -> None:
    """--driver-series and --bucket-partitions: one table each, one JSON for both."""
    work = Path(args.work)
    out_json: dict = {"uptime": os.getloadavg()}
    if args.driver_series:
        rows = []
        for n in [int(x) for x in args.driver_series.split(",")]:
            files, n = reshard(Path(args.corpus), args.shards, work / f"shards-{n}", limit=n)
            for keep in args.series_keeps.split(","):
                out = work / f"series-{n}-{keep}"
                cmd = [sys.executable, "-m", "dedupkit", args.stage, *files, "-o", str(out), "--id-column", "id",
                       "--workers", str(args.series_workers), "--engine", "ray", "--keep", keep, "--quiet",
                       "--json", "--overwrite"]
                res = run_once(cmd, out)
                g = res["summary"]["stats"].get("global_step", {})
                rows.append({"stage": args.stage, "docs": n, "keep": keep, "driver": g.get("mode") or "classic",
                             "wall_s": round(res["wall_s"], 1),
                             "peak_driver_mib": round(res["peak_driver_mib"]), "peak_tree_mib": round(res["peak_tree_mib"]),
                             "peak_worker_mib": round(res["peak_worker_mib"]),
                             "dropped": res["summary"]["counts"]["dropped"]})
                print(f"series: {args.stage}, {n} docs, keep {keep}: {res['wall_s']:.1f} s, "
                      f"driver {res['peak_driver_mib']:.0f} MiB",
                      file=sys.stderr, flush=True)
                shutil.rmtree(out, ignore_errors=True)
        print(table(["docs", "keep", "driver path", "wall s", "peak driver MiB", "peak worker MiB", "peak tree MiB",
                     "dropped"],
                    [[r["docs"], r["keep"], r["driver"], r["wall_s"], r["peak_driver_mib"], r["peak_worker_mib"],
                      r["peak_tree_mib"], r["dropped"]] for r in rows]))
        out_json["driver_series"] = rows
    if args.bucket_partitions:
        files, n = reshard(Path(args.corpus), args.shards, work / f"shards-{args.bucket_docs}", limit=args.bucket_docs)
        rows = []
        for p in [int(x) for x in args.bucket_partitions.split(",")]:
            out = work / f"buckets-{p}"
            env_per = str(max(1, -(-n // p)))
            cmd = [sys.executable, "-m", "dedupkit", "fuzzy", *files, "-o", str(out), "--id-column", "id",
                   "--workers", "2", "--quiet", "--json", "--overwrite"]
            os.environ["DEDUPKIT_DOCS_PER_PARTITION"] = env_per
            try:
                res = run_once(cmd, out)
            finally:
                os.environ.pop("DEDUPKIT_DOCS_PER_PARTITION", None)
            st = res["summary"]["stats"]
            b = st["bucket_bytes_read_per_task"]
            rows.append({"partitions": st["partitions_per_band"], "tasks": b["tasks"], "max_bytes": b["max"],
                         "mean_bytes": b["mean"], "buckets_s": st["timings"]["buckets_s"],
                         "candidate_pairs": st["candidate_pairs"], "wall_s": round(res["wall_s"], 1)})
            shutil.rmtree(out, ignore_errors=True)
        print(f"\nbucket step, {n:,} documents:")
        print(table(["partitions per band", "bucket tasks", "bytes read per task (max)", "(mean)", "buckets s",
                     "candidate pairs"],
                    [[r["partitions"], r["tasks"], r["max_bytes"], r["mean_bytes"], r["buckets_s"],
                      r["candidate_pairs"]] for r in rows]))
        out_json["bucket_partitions"] = rows
    print(f"load average when done: {os.getloadavg()}")
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(out_json, indent=2))


if __name__ == "__main__":
    main()
