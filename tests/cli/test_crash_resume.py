"""Crash and resume: SIGKILL the real command line at random points, rerun, compare to a clean run.

The harness is generic: a :class:`Case` is a command line (built from the corpus folder, the output
folder and the clean outputs of earlier cases) plus how to read its result. Adding a stage to the
crash test is one line in ``CASES``.

For every case the test
1. runs the command once without interruption (the reference, and its wall time),
2. runs it again into a fresh folder and kills the whole process group with SIGKILL after a seeded
   random delay, sometimes several times in a row (each restart resumes what the killed run left),
3. after every kill checks that nothing looks complete unless it is complete and equal to the
   reference (``summary.json`` is a stage's completion mark; the output folder itself is apply's),
4. reruns the command to completion and checks that its output is byte-identical to the reference
   and that no temporary file is left behind.

``DEDUPKIT_CRASH_POINTS`` (default 20) sets the number of kill points per case and
``DEDUPKIT_CRASH_SEED`` the seed. The per-case report (kill points per phase) is printed and
appended to ``$DEDUPKIT_CRASH_REPORT`` when that is set.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support import SRC

POINTS = int(os.environ.get("DEDUPKIT_CRASH_POINTS", "20"))
SEED = int(os.environ.get("DEDUPKIT_CRASH_SEED", "20261127"))

pytestmark = pytest.mark.slow

# The stages `dedupkit run` chains in its crash case: exact and, once this checkout has it, fuzzy
# (semantic has its own case: loading the model makes each of its runs slow).
RUN_STAGES = ",".join(s for s in ("exact", "fuzzy") if importlib.util.find_spec(f"dedupkit.stages.{s}") is not None)


# -- the corpus ---------------------------------------------------------------------------------
def make_crash_corpus(folder: Path, rows_per_shard: int = 6_000, seed: int = 7) -> int:
    """Six shards (Parquet with several row groups, JSONL, JSONL.gz), ~40% duplicates, a few bad
    JSONL lines (skipped and counted with --on-bad-record skip). Returns the number of rows."""
    rnd = random.Random(seed)
    words = [f"w{i}" for i in range(3000)]
    base = [" ".join(rnd.choice(words) for _ in range(25)) for _ in range(rows_per_shard)]
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for s in range(6):
        rows = []
        for i in range(rows_per_shard):
            text = rnd.choice(base) if rnd.random() < 0.4 else " ".join(rnd.choice(words) for _ in range(25))
            rows.append({"id": f"s{s}-{i}", "text": text, "n": i})
        kind = s % 3
        if kind == 0:
            pq.write_table(pa.Table.from_pylist(rows), folder / f"part{s}.parquet", row_group_size=4000)
        else:
            lines = [json.dumps(r) + "\n" for r in rows]
            for j in (17, rows_per_shard // 3):  # two malformed records per JSONL shard
                lines[j] = '{"id": "bad", "text": \n'
            data = "".join(lines).encode()
            if kind == 1:
                (folder / f"part{s}.jsonl").write_bytes(data)
            else:
                (folder / f"part{s}.jsonl.gz").write_bytes(gzip.compress(data, mtime=0))
        total += rows_per_shard
    return total


# -- the harness --------------------------------------------------------------------------------
@dataclass
class Case:
    """One command under test.

    Attributes:
        name: test id (the command is the first word of argv).
        argv: (data folder, output folder, clean outputs of earlier cases by name) -> CLI args.
        kind: ``"stage"`` (OUT/manifest + OUT/summary.json), ``"run"`` (the same plus NN-stage/
            folders, each compared too) or ``"apply"`` (a clean-corpus folder).
        needs: cases whose clean output this one reads (e.g. apply needs a manifest).
    """

    name: str
    argv: Callable[[Path, Path, dict], list[str]]
    kind: str = "stage"
    needs: tuple[str, ...] = ()
    victim: str = "group"  # "group": every process; "main": only the main one; "worker": one worker
    sig: int = signal.SIGKILL  # SIGINT to the group is a Ctrl-C in a terminal
    share: float = 1.0  # share of DEDUPKIT_CRASH_POINTS for this case (variants of one stage: less)


def _stage(name: str, *extra: str) -> Case:
    return Case(name, lambda data, out, ref: [name, str(data), "-o", str(out), "--id-column", "id",
                                              "--on-bad-record", "skip", "-q", *extra])


CASES: list[Case] = [
    _stage("exact", "--workers", "2"),
    # The OOM killer often picks the main process alone: its worker processes must notice, stop,
    # and whatever they still write must not spoil the rerun.
    Case("exact-main-process-only", _stage("exact", "--workers", "2").argv, victim="main", share=0.5),
    # The OOM killer picks a worker: the run must stop with a clear error, not hang or trace back.
    Case("exact-one-worker", _stage("exact", "--workers", "2").argv, victim="worker", share=0.5),
    # Ctrl-C: SIGINT to the whole group; the run must exit (not hang in the worker pool) with
    # code 130 and a one-line message, and leave a resumable folder.
    Case("exact-ctrl-c", _stage("exact", "--workers", "2").argv, sig=signal.SIGINT, share=0.5),
    Case("apply", lambda data, out, ref: ["apply", str(data), "--manifest", str(ref["exact"]), "-o", str(out)],
         kind="apply", needs=("exact",)),
    _stage("fuzzy", "--workers", "2"),
    # A small real model2vec model (random 32-d vectors over MiniLM's tokenizer, made by the
    # fixture) keeps each run short; a fresh embedding cache per chain, so kills also land while
    # embeddings are computed and cached.
    Case("semantic", lambda data, out, ref: ["semantic", str(data), "-o", str(out), "--id-column", "id",
                                             "--on-bad-record", "skip", "-q", "--model", f"model2vec:{ref['_m2v']}",
                                             "--cache-dir", f"{out}.cache", "--eps", "0.01"]),
    Case("run", lambda data, out, ref: ["run", str(data), "-o", str(out), "--stages", RUN_STAGES, "--id-column", "id",
                                        "--on-bad-record", "skip", "-q", "--workers", "2"], kind="run"),
]


@dataclass
class Outcome:
    phases: dict[str, int] = field(default_factory=dict)
    kills: int = 0
    reruns: int = 0


def _env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = SRC + os.pathsep + e.get("PYTHONPATH", "")
    return e


def _start(args: list[str]) -> subprocess.Popen:
    # A new session, so that SIGKILL to the group also takes the worker processes down, as a
    # power cut or the OOM killer would.
    return subprocess.Popen([sys.executable, "-m", "dedupkit", *args], env=_env(), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _run(args: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "dedupkit", *args], env=_env(), capture_output=True,
                       text=True, timeout=300)
    return p, time.perf_counter() - t


def _files(root: Path) -> dict[str, bytes]:
    """Every file below root (hidden ones too), relative path -> bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def result_files(case: Case, out: Path) -> dict[str, bytes]:
    """The files that must be byte-identical to a clean run's."""
    if case.kind in ("stage", "run"):
        files = _files(out / "manifest")
        if case.kind == "run":  # and every stage's own manifest
            for sub in sorted(p for p in out.iterdir() if p.is_dir() and p.name[:2].isdigit()):
                files.update({f"{sub.name}/{k}": v for k, v in _files(sub / "manifest").items()})
        return files
    return {k: v for k, v in _files(out).items()}


def looks_complete(case: Case, out: Path) -> bool:
    if case.kind in ("stage", "run"):
        return (out / "summary.json").exists()
    return out.exists()


def leftovers(case: Case, out: Path) -> list[str]:
    """Temporary files a finished run must not leave behind."""
    if case.kind == "apply":
        return [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.dedupkit")]
    return [str(p.relative_to(out)) for p in out.rglob("*")
            if ".tmp" in p.name or p.name in (".work", ".work.trash")]


STAGE_PHASES = ("startup", "scan", "identify", "write", "finish", "summary")
RUN_PHASES = ("startup", "scan", "identify", "write", "finish", "combine", "summary")
APPLY_PHASES = ("startup", "write", "rename")


def phase_of(case: Case, out: Path, pid: int | None = None) -> str:
    """How far a run has got, judged from what it has written so far.

    With ``pid``, a stage run counts as started only once it holds the output folder's lock (the
    lock file names its pid), so leftovers of an earlier killed run are not taken for progress.
    """
    try:
        if case.kind == "run":
            if (out / "summary.json").exists():
                return "summary"
            subs = sorted(p for p in out.iterdir() if p.is_dir() and p.name[:2].isdigit()) if out.exists() else []
            ours = [p for p in subs if pid is None or _lock_pid(p) == pid]
            if not ours:
                return "startup"
            inner = phase_of(Case(case.name, case.argv), ours[-1], pid)
            if inner in ("summary", "finish") and (out / ".manifest.tmp").exists():
                return "combine"
            return "finish" if inner == "summary" else inner
        if pid is not None and case.kind == "stage":
            lock = out / ".dedupkit.lock"
            if not lock.exists() or lock.read_text().strip() != f"pid {pid}":
                return "startup"
        if case.kind == "apply":
            tmp = out.with_name(f".{out.name}.dedupkit-apply")
            if out.exists():
                return "rename"
            if tmp.exists() and any(tmp.iterdir()):
                return "write"
            return "startup"
        work = out / ".work"
        if (out / "summary.json").exists():
            return "summary"
        if (out / "manifest").exists():
            return "finish"
        if (out / ".manifest.tmp").exists():
            return "write"
        if not work.exists():
            return "startup"
        if any(not d.name.endswith("-scan") for d in work.iterdir()):
            return "identify"
        return "scan"
    except FileNotFoundError:  # the run renamed or removed something while we looked
        return phase_of(case, out, pid)


def _lock_pid(folder: Path) -> int | None:
    try:
        text = (folder / ".dedupkit.lock").read_text().strip()
    except OSError:
        return None
    return int(text[4:]) if text.startswith("pid ") and text[4:].isdigit() else None


def _workers(pid: int) -> list[int]:
    """Live worker processes of ``pid``: its multiprocessing children (spawn), or the children of
    its fork server (dedupkit.engine.local forks its workers there)."""
    procs = {}
    for d in Path("/proc").glob("[0-9]*"):
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        procs[int(d.name)] = (int(fields[1]), fields[0], cmd)
    servers = {p for p, (ppid, _, cmd) in procs.items() if ppid == pid and b"forkserver" in cmd}
    return sorted(p for p, (ppid, state, cmd) in procs.items() if state != "Z" and (
        (ppid == pid and b"spawn_main" in cmd) or ppid in servers))


def _group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is left in process group ``pgid``."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def kill_at(case: Case, data: Path, out: Path, ref_outs: dict, target: str, extra_delay: float,
            phases: tuple[str, ...]) -> str:
    """Start the command, wait until it reaches ``target`` (polling its output folder), wait a
    further random ``extra_delay``, SIGKILL its process group. Returns where the kill landed
    ("exited" if the command finished first)."""
    proc = _start(case.argv(data, out, ref_outs))
    try:
        want = phases.index(target)
        while proc.poll() is None and phases.index(phase_of(case, out, proc.pid)) < want:
            time.sleep(0.002)
        time.sleep(extra_delay)
        if proc.poll() is not None:
            return "exited"
        if case.victim == "worker":
            while proc.poll() is None and not _workers(proc.pid):
                time.sleep(0.002)
            workers = _workers(proc.pid)
            if not workers:
                return "exited"
            os.kill(workers[0], case.sig)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"{case.name}: the run hung after a worker was killed") from None
            err = proc.stderr.read().decode()
            if proc.returncode != 0:  # 0: the worker had already finished its last task
                assert proc.returncode == 1 and "a worker process died unexpectedly" in err, err
                assert "Traceback" not in err, err
        elif case.victim == "group":
            os.killpg(proc.pid, case.sig)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"{case.name}: the run did not exit within 120 s of the signal") from None
            if case.sig == signal.SIGINT:
                err = proc.stderr.read().decode()
                # 130, or death by SIGINT (-2 here): a shell reports both as status 130. CPython
                # itself re-raises SIGINT at exit when it counts a KeyboardInterrupt as unhandled,
                # which happens now and then even though dedupkit's handler caught it and exited
                # with 130 (the line below is printed in both cases).
                assert proc.returncode in (130, -signal.SIGINT, 0), (proc.returncode, err)
                if proc.returncode != 0:
                    assert "Interrupted; rerun the same command to resume" in err and "Traceback" not in err, err
        else:
            os.kill(proc.pid, case.sig)
            proc.wait()
            deadline = time.time() + 60
            while _group_alive(proc.pid):
                assert time.time() < deadline, "worker processes kept running after the main one died"
                time.sleep(0.01)
        return phase_of(case, out)
    finally:
        if proc.poll() is None or _group_alive(proc.pid):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def crash_case(case: Case, data: Path, tmp: Path, ref_outs: dict, rng: random.Random,
               points: int) -> tuple[Outcome, Path]:
    clean = tmp / f"{case.name}-clean"
    p, wall = _run(case.argv(data, clean, ref_outs))
    assert p.returncode == 0, p.stderr
    ref = result_files(case, clean)
    assert ref, "the clean run wrote nothing"
    phases = {"stage": STAGE_PHASES, "run": RUN_PHASES, "apply": APPLY_PHASES}[case.kind]
    # Kills aimed at start-up teach little (nothing is written yet) and one aimed at the completion
    # mark only tests an exited process; kills still land there when a phase is short. Workers
    # only live during the scan.
    targets = ("scan",) if case.victim == "worker" else phases[1:-1]
    outcome = Outcome()
    run_no = 0
    while outcome.kills < points:
        run_no += 1
        out = tmp / f"{case.name}-crash{run_no}"
        # Usually one kill then a rerun; sometimes two or three kills in a row, so that a resumed
        # run is itself killed while reusing what the first one left.
        chain = rng.choice([1, 1, 2, 3])
        for _ in range(chain):
            if outcome.kills >= points:
                break
            target = rng.choice(targets)
            # After the target phase starts, a random further delay: long phases (the scan) get
            # kills spread over them, short ones a delay short enough to land inside them.
            spread = {"scan": 0.3, "write": 0.03, "identify": 0.03}.get(target, 0.0)
            where = kill_at(case, data, out, ref_outs, target, rng.uniform(0, spread * wall), phases)
            outcome.kills += 1
            outcome.phases[where] = outcome.phases.get(where, 0) + 1
            if looks_complete(case, out):
                # Complete-looking means complete: the output equals the clean run's.
                assert result_files(case, out) == ref, f"{case.name}: kill {outcome.kills} left a " \
                    f"complete-looking but different output ({where})"
                break
        if not looks_complete(case, out):
            p, _ = _run(case.argv(data, out, ref_outs))
            outcome.reruns += 1
            assert p.returncode == 0, f"{case.name}: rerun after kill failed: {p.stderr}"
        got = result_files(case, out)
        assert got.keys() == ref.keys(), f"{case.name}: rerun wrote {sorted(got)} not {sorted(ref)}"
        for k in ref:
            assert got[k] == ref[k], f"{case.name}: {k} differs from the clean run's after a crash"
        assert leftovers(case, out) == [], f"{case.name}: temporary files left: {leftovers(case, out)}"
    return outcome, clean


@pytest.fixture(scope="module")
def crash_corpus(tmp_path_factory) -> tuple[Path, int]:
    d = tmp_path_factory.mktemp("crash") / "data"
    n = make_crash_corpus(d)
    return d, n


@pytest.fixture(scope="module")
def clean_outputs(tmp_path_factory) -> dict:
    outs: dict = {}
    if (Path(SRC) / "dedupkit" / "stages" / "semantic.py").exists():
        outs["_m2v"] = make_static_model(tmp_path_factory.mktemp("m2v") / "model")
    return outs


def make_static_model(path: Path) -> Path:
    """A real model2vec model: random 32-d token vectors over the packaged MiniLM tokenizer."""
    np = pytest.importorskip("numpy")
    model2vec = pytest.importorskip("model2vec")
    from tokenizers import Tokenizer

    from dedupkit.embed import packaged_model_path

    tok = Tokenizer.from_file(str(Path(packaged_model_path()) / "tokenizer.json"))
    vectors = np.random.default_rng(0).standard_normal((tok.get_vocab_size(), 32)).astype("float32")
    model2vec.StaticModel(vectors=vectors, tokenizer=tok, normalize=True).save_pretrained(str(path))
    return path


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_kill_and_resume(case: Case, crash_corpus, clean_outputs, tmp_path):
    data, n_rows = crash_corpus
    for need in case.needs:
        if need not in clean_outputs:
            pytest.skip(f"needs the clean output of {need!r}, which did not run")
    if case.argv is not None and case.kind == "stage" and importlib.util.find_spec(
            f"dedupkit.stages.{case.argv(Path('d'), Path('o'), {'_m2v': ''})[0]}") is None:
        pytest.skip(f"{case.name}: this checkout has no such stage yet")
    rng = random.Random(f"{SEED}-{case.name}")
    points = max(1, round(POINTS * case.share))
    outcome, clean = crash_case(case, data, tmp_path, clean_outputs, rng, points)
    if case.kind in ("stage", "run"):
        manifest = pq.read_table(clean / "manifest")
        assert manifest.num_rows == n_rows  # no row lost, none doubled
        pairs = set(zip(manifest.column("shard").to_pylist(), manifest.column("row").to_pylist()))
        assert len(pairs) == n_rows
        # Keep the clean output for the cases that need it (moved out of tmp_path's cleanup).
        keep = tmp_path.parent / f"clean-{case.name}"
        os.replace(clean, keep)
        clean_outputs[case.name] = keep
    line = (f"{case.name}: {outcome.kills} kill points survived, {outcome.reruns} completing reruns, "
            f"phases {json.dumps(dict(sorted(outcome.phases.items())))}")
    print(line)
    if os.environ.get("DEDUPKIT_CRASH_REPORT"):
        with open(os.environ["DEDUPKIT_CRASH_REPORT"], "a") as fh:
            fh.write(line + "\n")
    assert outcome.kills >= points
    in_work = sum(v for k, v in outcome.phases.items() if k not in ("startup", "exited", "summary"))
    assert in_work >= points // 2, f"too few kills landed in the work phases: {outcome.phases}"
