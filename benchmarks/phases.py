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
# every task an engine ran, in this process (--workers 1) or a worker:
# (function, start, end (epoch seconds), CPU seconds, pid)
_TASKS: list[tuple[str, float, float, float, int]] = []


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


def _timed_call(fn, task):
    """A task as the engine runs it (here or in a worker), with its times: ``(result, record)``."""
    start, cpu = time.time(), time.process_time()
    out = fn(task)
    return out, (getattr(fn, "__name__", str(fn)), start, time.time(), time.process_time() - cpu, os.getpid())


def _wrap_map(engine_cls) -> None:
    """Time every task of every ``map`` where it runs (a worker process too: the task function is
    sent wrapped, by reference to this script, which workers import as their main module)."""
    fn0 = engine_cls.map

    @functools.wraps(fn0)
    def wrapper(self, fn, tasks, desc="", sizes=None):
        t = f"map[{desc}]" if desc else "map"
        mark(f"> {t}")
        try:
            out = fn0(self, functools.partial(_timed_call, fn), tasks, desc=desc, sizes=sizes)
        finally:
            mark(f"< {t}")
        _TASKS.extend(rec for _, rec in out)
        return [res for res, _ in out]

    engine_cls.map = wrapper


def instrument() -> None:
    """Wrap the steps of a stage run (imports the modules they live in)."""
    import dedupkit.cli.exact  # noqa: F401 - the commands import these anyway
    import dedupkit.cli.fuzzy  # noqa: F401
    import dedupkit.engine.graph as graph
    import dedupkit.explain as explain
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
    _wrap(shards, "discover")
    _wrap(scan, "plan_tasks")
    _wrap_map(local.LocalEngine)
    _wrap(local.LocalEngine, "close", "pool close")
    _wrap(scan.Corpus, "__init__", "corpus")
    _wrap(fstage.FuzzyStage, "prepare_buckets")
    _wrap(fstage.FuzzyStage, "verify")
    _wrap(fstage.FuzzyStage, "decisions")
    _wrap(single, "_unique_pairs", "unique pairs")
    _wrap(single, "identify_single")
    _wrap(graph, "centre_clusters")
    _wrap(policy, "cluster_ids")
    _wrap(explain, "drop_reasons")
    _wrap(runner, "_publish", "publish")
    _wrap(outdir.OutputDir, "finish", "finish (swap, rm .work)")
    _wrap(manifest, "write_table_atomic", "write part")
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
    """Per task function: how many tasks, their CPU seconds, the longest, the wall time from the
    first one's start to the last one's end (``span_s``), and ``makespan_2_s``, the longest worker's
    share when ``workers`` processes take the tasks in order (the engine submits every task at once;
    a free worker takes the next): the phase's wall time on ``workers`` idle cores, without start-up
    or pickling."""
    out: dict[str, list] = {}
    for rec in tasks:
        out.setdefault(rec[0], []).append(rec)
    rows = []
    for name, recs in out.items():
        cpus = [r[3] for r in recs]
        free = [0.0] * workers
        for c in cpus:
            i = free.index(min(free))
            free[i] += c
        per_pid: dict[int, float] = {}
        for r in recs:
            per_pid[r[4]] = per_pid.get(r[4], 0.0) + r[3]
        rows.append({"function": name, "tasks": len(cpus), "cpu_s": sum(cpus), "max_task_s": max(cpus),
                     "span_s": max(r[2] for r in recs) - min(r[1] for r in recs),
                     "cpu_per_process_s": sorted(per_pid.values(), reverse=True),
                     f"makespan_{workers}_s": max(free)})
    return rows


def describe(t: dict) -> str:
    """One line of :func:`makespans`' output."""
    per = "/".join(f"{c:.2f}" for c in t["cpu_per_process_s"])
    return (f"  tasks {t['function']}: {t['tasks']}, {t['cpu_s']:.3f} CPU s (per process {per}), longest "
            f"{t['max_task_s']:.3f} s, first start to last end {t['span_s']:.3f} s, on 2 idle workers "
            f"{t['makespan_2_s']:.3f} s")


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
            print(describe(r), file=sys.stderr)
        return
    if args[:1] == ["--json-out"]:
        json_out, args = args[1], args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    start = _proc_start_epoch()
    # Wrap the steps once the command has started its worker pool (the CLI does that before its
    # heavy imports, which instrument() makes), so that the pool starts when it does in a plain run.
    import dedupkit.cli.options as options

    prestart = options._prestart_workers

    def prestart_then_instrument(kwargs):
        try:
            return prestart(kwargs)
        finally:
            mark("prestart")
            instrument()

    options._prestart_workers = prestart_then_instrument

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
