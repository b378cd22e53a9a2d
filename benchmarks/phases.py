#!/usr/bin/env python
"""Where one `dedupkit` command's time goes: a timeline of its phases with wall and CPU seconds.

Runs the CLI in this process with the library's main steps wrapped (nothing of the library is
changed): each wrapped call records, at its start and its end, the wall clock, this process's CPU
time and the CPU time of its worker processes (live ones from /proc, exited ones from
RUSAGE_CHILDREN). The phases are the intervals between consecutive records; the process's start
(interpreter and imports, from the kernel's start time of the process) and its exit (after the last
record) are measured too, so the phases add up to the whole process's wall time.

Usage (prints the table on stderr and, with --json-out, writes it):
  python benchmarks/phases.py --json-out /tmp/ph.json -- fuzzy docs.parquet -o /tmp/o --workers 2 -q
  python benchmarks/phases.py --report /tmp/ph.json --exit-at 12.34   # add the process's end time

`benchmarks/split.py --phases` runs it for each configuration and prints the tables side by side.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import sys
import time

_TICK = os.sysconf("SC_CLK_TCK")
_EVENTS: list[tuple[str, float, float, float]] = []  # (label, wall since epoch, own CPU, workers' CPU)
_TASKS: list[tuple[str, float, float]] = []  # tasks run in this process (--workers 1): (function, wall, CPU)


def _proc_start_epoch() -> float:
    """When the kernel started this process (epoch seconds, 1/CLK_TCK resolution)."""
    with open("/proc/self/stat") as fh:
        start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/stat") as fh:
        btime = next(int(line.split()[1]) for line in fh if line.startswith("btime"))
    return btime + start_ticks / _TICK


def _descendants(pid: int) -> list[int]:
    from _util import _children  # benchmarks/ is this script's folder

    out, stack = [], [pid]
    while stack:
        kids = _children(stack.pop())
        out += kids
        stack += kids
    return out


def _cpu_of(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            f = fh.read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / _TICK
    except (OSError, IndexError):
        return 0.0


def _workers_cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime + sum(_cpu_of(p) for p in _descendants(os.getpid()))


def mark(label: str) -> None:
    """Record a point of the timeline."""
    _EVENTS.append((label, time.time(), time.process_time(), _workers_cpu()))


def _wrap(owner, name: str, label: str | None = None) -> None:
    fn = getattr(owner, name)
    tag = label or name

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        desc = kwargs.get("desc") or ""
        t = f"{tag}[{desc}]" if desc else tag
        mark(f"> {t}")
        try:
            return fn(*args, **kwargs)
        finally:
            mark(f"< {t}")

    # every module that imported the function by name gets the wrapper too
    for mod in list(sys.modules.values()):
        if mod is not None and getattr(mod, name, None) is fn and mod is not owner:
            setattr(mod, name, wrapper)
    setattr(owner, name, wrapper)


def _wrap_task(owner, name: str) -> None:
    """Time every call of a task function run in this process (with --workers 1: all of them)."""
    fn = getattr(owner, name)

    @functools.wraps(fn)
    def wrapper(task):
        w, c = time.perf_counter(), time.process_time()
        try:
            return fn(task)
        finally:
            _TASKS.append((name, time.perf_counter() - w, time.process_time() - c))

    for mod in list(sys.modules.values()):
        if mod is not None and getattr(mod, name, None) is fn and mod is not owner:
            setattr(mod, name, wrapper)
    setattr(owner, name, wrapper)


def instrument() -> None:
    """Wrap the steps of a stage run (imports the modules they live in)."""
    import dedupkit.cli.exact  # noqa: F401 - the commands import these anyway
    import dedupkit.cli.fuzzy  # noqa: F401
    import dedupkit.engine.graph as graph
    import dedupkit.engine.local as local
    import dedupkit.io.shards as shards
    import dedupkit.manifest as manifest
    import dedupkit.outdir as outdir
    import dedupkit.policy as policy
    import dedupkit.runner as runner
    import dedupkit.scan as scan
    import dedupkit.stages.fuzzy.single as single
    import dedupkit.stages.fuzzy.stage as fstage

    mark("imports")
    _wrap(local, "prestart")
    _wrap(shards, "discover")
    _wrap(scan, "plan_tasks")
    _wrap(local.LocalEngine, "map", "map")
    _wrap(local.LocalEngine, "close", "pool close")
    _wrap(scan.Corpus, "__init__", "corpus")
    _wrap(fstage.FuzzyStage, "prepare_buckets")
    _wrap(fstage.FuzzyStage, "verify")
    _wrap(fstage.FuzzyStage, "decisions")
    _wrap(single, "_unique_pairs", "unique pairs")
    _wrap(single, "identify_single")
    _wrap(graph, "centre_clusters")
    _wrap(policy, "cluster_ids")
    _wrap(runner, "drop_reasons")
    _wrap(runner, "_publish", "publish")
    _wrap(outdir.OutputDir, "finish", "finish (swap, rm .work)")
    _wrap(manifest, "write_table_atomic", "write part")
    import dedupkit.stages.fuzzy.tasks as ftasks

    _wrap_task(scan, "run_scan_task")
    for name in ("band_split_task", "bucket_task", "verify_task", "shingle_set_task"):
        _wrap_task(ftasks, name)
    try:
        import dedupkit.stages.exact as exact

        _wrap(exact.ExactStage, "identify", "exact identify")
    except (ImportError, AttributeError):
        pass


def timeline(events: list, start: float, end: float | None) -> list[dict]:
    """Phases between consecutive records: ``{"from", "to", "wall_s", "cpu_main_s", "cpu_workers_s"}``."""
    rows = []
    prev = ("process start", start, 0.0, 0.0)
    for ev in events:
        rows.append({"from": prev[0], "to": ev[0], "wall_s": ev[1] - prev[1], "cpu_main_s": ev[2] - prev[2],
                     "cpu_workers_s": ev[3] - prev[3]})
        prev = ev
    if end is not None:
        rows.append({"from": prev[0], "to": "process end", "wall_s": end - prev[1], "cpu_main_s": float("nan"),
                     "cpu_workers_s": float("nan")})
    return rows


def makespans(tasks: list, workers: int = 2) -> list[dict]:
    """Per task function: the tasks' CPU seconds, and the longest worker's share when ``workers``
    processes take them in order (the engine submits every task at once; a free worker takes the
    next): the phase's wall time on ``workers`` idle cores, without start-up or pickling."""
    out: dict[str, list[float]] = {}
    for name, _, cpu in tasks:
        out.setdefault(name, []).append(cpu)
    rows = []
    for name, cpus in out.items():
        free = [0.0] * workers
        for c in cpus:
            i = free.index(min(free))
            free[i] += c
        rows.append({"function": name, "tasks": len(cpus), "cpu_s": sum(cpus), "max_task_s": max(cpus),
                     f"makespan_{workers}_s": max(free)})
    return rows


def render(rows: list[dict]) -> str:
    lines = [f"{'wall s':>7} {'main CPU':>8} {'workers':>8}  phase (from -> to)"]
    for r in rows:
        lines.append(f"{r['wall_s']:7.3f} {r['cpu_main_s']:8.3f} {r['cpu_workers_s']:8.3f}  {r['from']} -> {r['to']}")
    total = sum(r["wall_s"] for r in rows)
    lines.append(f"{total:7.3f} {'':8} {'':8}  total")
    return "\n".join(lines)


def main() -> None:
    args = sys.argv[1:]
    json_out = None
    if args[:1] == ["--report"]:
        data = json.loads(open(args[1]).read())
        end = float(args[3]) if args[2:3] == ["--exit-at"] else None
        print(render(timeline(data["events"], data["start"], end)), file=sys.stderr)
        for r in makespans(data.get("tasks", [])):
            print(f"{r['function']:>18}: {r['tasks']:3d} tasks, {r['cpu_s']:.3f} CPU s, longest {r['max_task_s']:.3f}, "
                  f"on 2 workers {r['makespan_2_s']:.3f} s ({r['cpu_s'] / max(r['makespan_2_s'], 1e-9):.2f}x)",
                  file=sys.stderr)
        return
    if args[:1] == ["--json-out"]:
        json_out, args = args[1], args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    start = _proc_start_epoch()
    instrument()

    def dump() -> None:
        mark("atexit")
        if json_out:
            with open(json_out, "w") as fh:
                json.dump({"start": start, "events": _EVENTS, "tasks": _TASKS, "argv": args}, fh)

    atexit.register(dump)
    from dedupkit.cli import main as cli_main

    cli = getattr(cli_main, "entry", cli_main.main)  # the program's own exit, where it has one

    sys.argv = ["dedupkit", *args]
    cli()


if __name__ == "__main__":
    main()
