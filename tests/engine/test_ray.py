"""``--engine ray`` on a real local Ray instance (2 CPUs), compared with the local engine.

One Ray instance serves the whole module (Ray starts slowly on a busy 2-core machine). Its workers
get this checkout's ``src`` and its root on PYTHONPATH, so the test-only stage below (whose mapper
kills its own worker once) can be unpickled there as ``tests.engine.test_ray``.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest

from tests.support import SRC, read_manifest, run_subprocess, write_jsonl, write_parquet
from tests.support.invariants import check_output
from dedupkit import api
from dedupkit.errors import InputError
from dedupkit.io.read import ReadSpec
from dedupkit.runner import RunOptions, run_stage
from dedupkit.stages.exact import ExactConfig, ExactMapper, ExactStage
from dedupkit.stages.fuzzy import FuzzyConfig, FuzzyMapper, FuzzyStage

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.ray

ROOT = str(Path(__file__).resolve().parents[2])  # Ray workers import this module as tests.engine.test_ray

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho "
         "sigma tau upsilon phi chi psi omega river stone cloud forest harbor lantern meadow orbit "
         "pepper quartz saddle timber velvet willow yonder zephyr anchor basket candle").split()


@pytest.fixture(scope="module")
def ray_session():
    from dedupkit.engine.ray import init_local

    if ray.is_initialized():  # pragma: no cover - another module left one running
        ray.shutdown()
    # num_gpus=1 declares one (fake) GPU: enough to test that GPU tasks go to actors, one per GPU.
    init_local(2, num_gpus=1, runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([SRC, ROOT])}})
    yield
    ray.shutdown()


def _doc(rng: random.Random, n: int = 60) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _near(rng: random.Random, text: str, edits: int = 2) -> str:
    w = text.split()
    for _ in range(edits):
        w[rng.randrange(len(w))] = rng.choice(WORDS)
    return " ".join(w)


@pytest.fixture(scope="module")
def multi_shard(tmp_path_factory) -> Path:
    """Six shards (Parquet and JSONL) with exact and near duplicates within and across shards."""
    rng = random.Random(7)
    d = tmp_path_factory.mktemp("ray") / "data"
    originals = [_doc(rng) for _ in range(40)]
    texts = list(originals)
    for _ in range(25):
        texts.append(rng.choice(originals))                      # exact copies
    for _ in range(25):
        texts.append(_near(rng, rng.choice(originals)))          # near copies
    rng.shuffle(texts)
    per = len(texts) // 6
    for s in range(6):
        chunk = texts[s * per:(s + 1) * per] if s < 5 else texts[5 * per:]
        rows = [{"id": f"s{s}-{i}", "text": t} for i, t in enumerate(chunk)]
        (write_parquet if s % 2 == 0 else write_jsonl)(d / f"part{s}.{'parquet' if s % 2 == 0 else 'jsonl'}", rows)
    return d


# --- the engine on its own -------------------------------------------------------------------

def square_slowly(x: int) -> int:
    import time

    time.sleep(0.05 * (x % 3))
    return x * x


def fail_on_three(x: int) -> int:
    if x == 3:
        raise InputError(f"bad record in shard {x}: fix it")
    return x


def test_map_keeps_task_order_and_passes_dedupkit_errors(ray_session):
    from dedupkit.engine.ray import RayEngine

    eng = RayEngine(workers=2)
    assert eng.map(square_slowly, list(range(9)), desc="t") == [x * x for x in range(9)]
    assert eng.map(square_slowly, [], desc="empty") == []
    with pytest.raises(InputError, match="bad record in shard 3: fix it"):
        eng.map(fail_on_three, list(range(6)), desc="t")


def test_bad_settings_are_config_errors(ray_session, monkeypatch):
    from dedupkit.engine.ray import RayEngine
    from dedupkit.errors import ConfigError

    with pytest.raises(ConfigError, match="workers"):
        RayEngine(workers=0)
    monkeypatch.setenv("DEDUPKIT_RAY_MAX_RETRIES", "many")
    with pytest.raises(ConfigError, match="DEDUPKIT_RAY_MAX_RETRIES"):
        RayEngine(workers=1)


# --- same manifest as the local engine -------------------------------------------------------

def test_exact_manifest_equals_local(ray_session, multi_shard, tmp_path):
    local = api.exact([str(multi_shard)], str(tmp_path / "local"), id_column="id", workers=1)
    on_ray = api.exact([str(multi_shard)], str(tmp_path / "ray"), id_column="id", workers=2, engine="ray")
    a, b = check_output(local.out, stage="exact"), read_manifest(on_ray.out)
    assert a == b
    assert sum(not r["keep"] for r in a) >= 25  # the planted exact copies were found
    assert on_ray.summary["config"]["engine"] == "ray"
    assert len(a) == on_ray.summary["counts"]["rows"] == 90


def test_run_pipeline_on_ray_equals_local(ray_session, multi_shard, tmp_path):
    stages = "exact,fuzzy" if _has_fuzzy() else "exact"
    local = api.run([str(multi_shard)], str(tmp_path / "local"), stages=stages, id_column="id", workers=1,
                    engine="local", env={})
    on_ray = api.run([str(multi_shard)], str(tmp_path / "ray"), stages=stages, id_column="id", workers=2,
                     engine="ray", env={})
    assert read_manifest(on_ray.out) == read_manifest(local.out)
    assert on_ray.summary["counts"]["dropped"] >= 25


def _has_fuzzy() -> bool:
    import importlib.util

    return importlib.util.find_spec("dedupkit.stages.fuzzy") is not None


# --- a worker killed in the middle of a run --------------------------------------------------

def _kill_once(scan_glob: str, marker: str) -> None:
    """Kill this worker process once (the first caller that wins the marker file), after at least
    one scan task has finished: the worker dies mid-task, as on an OOM kill or a lost node."""
    import glob

    if not glob.glob(scan_glob):
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    os._exit(1)


class KillOnceMapper(ExactMapper):
    """Kills its own worker process once, after at least one scan task has finished."""

    def __init__(self, steps, scan_glob: str, marker: str):
        super().__init__(steps)
        self.scan_glob = scan_glob
        self.marker = marker

    def map_batch(self, batch):
        _kill_once(self.scan_glob, self.marker)
        return super().map_batch(batch)


class KillOnceExact(ExactStage):
    def __init__(self, out: Path, marker: Path):
        super().__init__(ExactConfig())
        self._glob = str(out / ".work" / "*-scan" / "*.done.json")
        self._marker = str(marker)

    def mapper(self):
        return KillOnceMapper(self.config.normalize, self._glob, self._marker)


def test_killed_worker_is_retried_and_manifest_is_unchanged(ray_session, multi_shard, tmp_path):
    local = api.exact([str(multi_shard)], str(tmp_path / "local"), id_column="id")
    out, marker = tmp_path / "ray", tmp_path / "killed.pid"
    res = run_stage(KillOnceExact(out, marker), [str(multi_shard)], out, ReadSpec(id_column="id"),
                    RunOptions(workers=2, engine="ray"))
    assert marker.exists(), "the test mapper never killed its worker"
    assert int(marker.read_text()) != os.getpid()
    assert read_manifest(res.out) == read_manifest(local.out)


def test_killed_worker_without_retries_fails_clearly_and_resumes(ray_session, multi_shard, tmp_path,
                                                                 monkeypatch):
    from dedupkit.engine.ray import RayEngineError

    local = api.exact([str(multi_shard)], str(tmp_path / "local"), id_column="id")
    out, marker = tmp_path / "ray", tmp_path / "killed.pid"
    stage = KillOnceExact(out, marker)
    monkeypatch.setenv("DEDUPKIT_RAY_MAX_RETRIES", "0")
    with pytest.raises(RayEngineError, match="rerun the same command to resume"):
        run_stage(stage, [str(multi_shard)], out, ReadSpec(id_column="id"), RunOptions(workers=2, engine="ray"))
    assert marker.exists()
    assert not (out / "summary.json").exists() and not (out / "manifest").exists()
    done_before = len(list((out / ".work").glob("*-scan/*.done.json")))
    assert done_before >= 1
    res = run_stage(stage, [str(multi_shard)], out, ReadSpec(id_column="id"), RunOptions(workers=2, engine="ray"))
    assert res.summary["timings"]["reused_scan_tasks"] >= 1
    assert read_manifest(res.out) == read_manifest(local.out)


# --- tasks that ask for a GPU run on actors ---------------------------------------------------

class GpuRecordingMapper(ExactMapper):
    """Asks Ray for a GPU and records which process and GPU ids ran each batch."""

    ray_resources = {"num_gpus": 1}

    def __init__(self, steps, log_dir: str):
        super().__init__(steps)
        self.log_dir = log_dir

    def map_batch(self, batch):
        import uuid

        line = json.dumps({"pid": os.getpid(), "gpus": [str(g) for g in ray.get_gpu_ids()]})
        Path(self.log_dir, f"{uuid.uuid4().hex}.json").write_text(line)
        return super().map_batch(batch)


class GpuExact(ExactStage):
    def __init__(self, log_dir: Path):
        super().__init__(ExactConfig())
        self._log = str(log_dir)

    def mapper(self):
        return GpuRecordingMapper(self.config.normalize, self._log)


def test_gpu_tasks_run_on_one_actor_per_gpu(ray_session, multi_shard, tmp_path):
    local = api.exact([str(multi_shard)], str(tmp_path / "local"), id_column="id")
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    res = run_stage(GpuExact(log_dir), [str(multi_shard)], tmp_path / "ray", ReadSpec(id_column="id"),
                    RunOptions(workers=2, engine="ray"))
    seen = [json.loads(p.read_text()) for p in log_dir.glob("*.json")]
    assert len(seen) == 6  # one batch per shard
    assert {tuple(s["gpus"]) for s in seen} == {("0",)}
    assert len({s["pid"] for s in seen}) == 1  # one GPU -> one actor ran every shard
    assert read_manifest(res.out) == read_manifest(local.out)


def test_gpu_tasks_without_gpus_fail_clearly(ray_session):
    from dedupkit.engine.ray import RayEngine
    from dedupkit.errors import ConfigError

    class T:
        ray_resources = {"num_gpus": 4}

    with pytest.raises(ConfigError, match="ask for 4 GPU each but the Ray cluster has 1"):
        RayEngine(workers=2).map(abs, [T(), T()], desc="embed")


# --- the command line starts its own local Ray -----------------------------------------------

def _processes_naming(text: str) -> list[int]:
    """Processes whose command line names ``text`` (a Ray temp folder), and every process below them."""
    found = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            if text.encode() in (d / "cmdline").read_bytes():
                found.append(int(d.name))
        except OSError:
            continue
    return found


def _children(pid: int) -> list[int]:
    """Processes (zombies included) whose parent is ``pid``."""
    out = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            if int((d / "stat").read_bytes().rsplit(b")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


@pytest.mark.slow
def test_cli_engine_ray_starts_local_instance(multi_shard, tmp_path):
    """The command starts its own instance, gives the local engine's manifest, and stops it: no
    process of that instance outlives the command."""
    import shutil
    import tempfile

    local = run_subprocess("exact", str(multi_shard), "-o", str(tmp_path / "local"), "--id-column", "id")
    assert local.returncode == 0, local.stderr
    ray_tmp = tempfile.mkdtemp(prefix="dk-ray-", dir="/tmp")  # short: Ray's socket paths live there
    try:
        r = run_subprocess("exact", str(multi_shard), "-o", str(tmp_path / "ray"), "--id-column", "id",
                           "--engine", "ray", "--workers", "2", "--json",
                           env={"RAY_ADDRESS": "", "DEDUPKIT_RAY_ADDRESS": "", "RAY_TMPDIR": ray_tmp})
        assert r.returncode == 0, r.stderr
        assert list(Path(ray_tmp).glob("ray/session_2*"))  # it did start one, there
        assert _processes_naming(ray_tmp) == []
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    summary = json.loads(r.stdout)
    assert summary["config"]["engine"] == "ray"
    assert read_manifest(tmp_path / "ray") == read_manifest(tmp_path / "local")


_STOP = """
import json, os, sys, time
from pathlib import Path
from dedupkit.engine import ray as engine_ray
from tests.engine.test_ray import _children

engine_ray.init_local(1)
def cmd(p):
    try:
        return (Path("/proc") / str(p) / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""
def state(p):
    try:
        return (Path("/proc") / str(p) / "stat").read_bytes().rsplit(b")", 1)[1].split()[0].decode()
    except OSError:
        return "gone"
kids = {p: cmd(p) for p in _children(os.getpid())}
monitor = [p for p, c in kids.items() if "autoscaler/_private/monitor.py" in c]
engine_ray._kill_monitor()
deadline = time.time() + 60
while monitor and state(monitor[0]) not in ("Z", "gone") and time.time() < deadline:
    time.sleep(0.05)
after_kill = {str(p): state(p) for p in kids}
engine_ray.stop()
print(json.dumps({"kids": {str(p): c for p, c in kids.items()}, "monitor": monitor, "after_kill": after_kill,
                  "left": _children(os.getpid())}))
"""


@pytest.mark.slow
def test_stop_kills_the_monitor_of_our_instance_and_leaves_no_process(tmp_path):
    """init_local's instance: _kill_monitor kills only Ray's autoscaler monitor (it would take a
    second to exit on SIGTERM), the rest runs on; stop() then leaves no child, not even a zombie."""
    import shutil
    import subprocess
    import sys
    import tempfile

    ray_tmp = tempfile.mkdtemp(prefix="dk-ray-", dir="/tmp")
    try:
        env = dict(os.environ, RAY_ADDRESS="", RAY_TMPDIR=ray_tmp, PYTHONPATH=os.pathsep.join([SRC, ROOT]))
        r = subprocess.run([sys.executable, "-c", _STOP], capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        out = json.loads(r.stdout.splitlines()[-1])
        assert len(out["monitor"]) == 1, out["kids"]
        assert out["after_kill"][str(out["monitor"][0])] in ("Z", "gone")
        others = [p for p, c in out["kids"].items() if "gcs_server" in c or "raylet" in c]
        assert len(others) == 2 and all(out["after_kill"][p] not in ("Z", "gone") for p in others)
        assert out["left"] == []
        assert _processes_naming(ray_tmp) == []
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.fixture
def running_cluster():
    """A Ray instance started apart from the tests (``ray start --head``), as on a cluster: its
    own temp folder and free ports; its workers get this checkout's src. Stopped by its process
    ids (never ``ray stop``, which would stop every Ray on the machine)."""
    import shutil
    import signal
    import subprocess
    import sys
    import tempfile
    import time

    from tests.support import free_port

    tmp = tempfile.mkdtemp(prefix="dk-rc-", dir="/tmp")
    port, client_port = free_port(), free_port()
    # no token authentication on this loopback instance (the commands then need no token either)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, ROOT]), RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    cli = [sys.executable, "-c", "import sys; from ray.scripts.scripts import main; sys.argv[0] = 'ray'; main()"]
    r = subprocess.run([*cli, "start", "--head", "--num-cpus=2", "--temp-dir", tmp, "--port", str(port),
                        "--include-dashboard=false", "--disable-usage-stats", f"--dashboard-port={free_port()}",
                        f"--ray-client-server-port={client_port}", f"--dashboard-agent-listen-port={free_port()}"],
                       env=env, capture_output=True, text=True, timeout=300)

    def pids() -> list[int]:
        # the Ray Client server names neither the temp folder nor a parent below it: its port
        found = set(_processes_naming(tmp)) | set(_processes_naming(f"--port={client_port}\0"))
        stack = list(found)
        while stack:
            for c in _children(stack.pop()):
                if c not in found:
                    found.add(c)
                    stack.append(c)
        return sorted(found)

    try:
        assert r.returncode == 0, r.stderr[-3000:]
        yield {"address": f"127.0.0.1:{port}", "pids": pids, "env": {"RAY_AUTH_MODE": "disabled"}}
    finally:
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            for p in pids():
                try:
                    os.kill(p, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + wait
            while pids() and time.time() < deadline:
                time.sleep(0.1)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.slow
def test_cli_on_a_running_cluster_leaves_it_running(multi_shard, tmp_path, running_cluster):
    """--ray-address: the command connects while it plans (no instance of its own), gives the local
    engine's manifests, and disconnects at its end; the cluster stays up and serves the next one."""
    import shutil
    import tempfile

    pids = running_cluster["pids"]()
    own_tmp = tempfile.mkdtemp(prefix="dk-ray-", dir="/tmp")
    try:
        # a stage command (one engine), and `run` (one engine per stage on one connection)
        for stage, *more in (("fuzzy",), ("exact",), ("run", "--stages", "exact,fuzzy")):
            local = run_subprocess(stage, *more, str(multi_shard), "-o", str(tmp_path / f"local-{stage}"),
                                   "--id-column", "id")
            assert local.returncode == 0, local.stderr
            r = run_subprocess(stage, *more, str(multi_shard), "-o", str(tmp_path / f"ray-{stage}"), "--id-column", "id",
                               "--engine", "ray", "--workers", "2", "--ray-address", running_cluster["address"], "-q",
                               env={"RAY_ADDRESS": "", "DEDUPKIT_RAY_ADDRESS": "", "RAY_TMPDIR": own_tmp,
                                    **running_cluster["env"]})
            assert r.returncode == 0, r.stderr[-3000:]
            assert read_manifest(tmp_path / f"ray-{stage}") == read_manifest(tmp_path / f"local-{stage}")
            alive = [p for p in pids if Path(f"/proc/{p}").exists()]
            assert alive == pids  # every process of the cluster runs on
        assert list(Path(own_tmp).iterdir()) == []  # no instance of its own was started
    finally:
        shutil.rmtree(own_tmp, ignore_errors=True)


_PRESTART = """
import os, sys, threading, ray
from dedupkit.engine import ray as engine_ray
engine_ray.prestart(2)
# the instance starts in the background while this process goes on
assert any(t.name == "dedupkit-ray-start" for t in threading.enumerate())
engine = engine_ray.RayEngine(workers=2)
paths = engine.map(os.getenv, ["PYTHONPATH", "DEDUPKIT_PROBE"])
print(paths[0].split(os.pathsep)[0])
print(paths[1])
print(os.environ.get("PYTHONPATH") == sys.argv[1])
# no job runtime_env: Ray's prestarted workers can take the first tasks
print(not dict(ray.get_runtime_context().runtime_env))
"""


@pytest.mark.slow
def test_prestarted_instance_is_adopted_and_workers_inherit_the_environment(tmp_path):
    """prestart() + RayEngine: one instance, started in the background thread; its workers (Ray's
    prestarted ones, no runtime_env) see this checkout's src first and the driver's environment;
    the driver's own PYTHONPATH is restored; the process exits cleanly (Ray shut down)."""
    import subprocess
    import sys

    env = dict(os.environ, RAY_ADDRESS="", DEDUPKIT_PROBE="seen-by-workers",
               PYTHONPATH=os.pathsep.join([str(tmp_path), SRC]))
    r = subprocess.run([sys.executable, "-c", _PRESTART, env["PYTHONPATH"]], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    first, probe, restored, no_runtime_env = r.stdout.split()
    assert first == SRC  # the driver's dedupkit comes first on the workers' path
    assert probe == "seen-by-workers"
    assert restored == "True" and no_runtime_env == "True"
    assert "SIGTERM handler" not in r.stderr


def test_cli_engine_ray_missing_input_fails_without_starting_ray(tmp_path):
    r = run_subprocess("fuzzy", str(tmp_path / "nope.parquet"), "-o", str(tmp_path / "o"), "--engine", "ray",
                       env={"RAY_ADDRESS": "", "DEDUPKIT_RAY_ADDRESS": ""})
    assert r.returncode != 0
    assert "nope.parquet" in r.stderr and "Error:" in r.stderr
    assert "Started a local Ray instance" not in r.stderr


def test_cli_unknown_engine_is_usage_error(multi_shard, tmp_path):
    from click.testing import CliRunner

    from dedupkit.cli.main import cli

    r = CliRunner().invoke(cli, ["exact", str(multi_shard), "-o", str(tmp_path / "o"), "--engine", "spark"])
    assert r.exit_code == 2
    assert "spark" in r.output


# --- partitioned components on Ray -----------------------------------------------------------

def test_partitioned_components_on_ray_equal_local(ray_session, tmp_path):
    import numpy as np

    from dedupkit.engine.graph import connected_components
    from dedupkit.engine.local import LocalEngine
    from dedupkit.engine.ray import RayEngine

    rng = np.random.default_rng(11)
    n = 3000
    pairs = rng.integers(0, n, size=(2500, 2))
    files = []
    for i, chunk in enumerate(np.array_split(pairs, 4)):
        np.save(tmp_path / f"p{i}.npy", chunk)
        files.append(str(tmp_path / f"p{i}.npy"))
    local, _ = connected_components(n, files, tmp_path / "wl", LocalEngine(), nparts=4)
    on_ray, stats = connected_components(n, files, tmp_path / "wr", RayEngine(workers=2), nparts=4)
    assert on_ray.tolist() == local.tolist()
    assert (local <= np.arange(n)).all() and len(np.unique(local)) < n


def test_cuda_embedding_tasks_ask_ray_for_a_gpu(tmp_path):
    from dedupkit.embed import EmbedConfig
    from dedupkit.engine.ray import _task_resources
    from dedupkit.io.shards import discover
    from dedupkit.stages.semantic import EmbedTask

    shard = discover([str(write_jsonl(tmp_path / "a.jsonl", [{"text": "x"}]))])[0]

    def task(device):
        return EmbedTask(index=0, shard=shard, text_spec=ReadSpec(), n_rows=1, rows=np.zeros(1, np.int64),
                         fingerprint="", config=EmbedConfig(device=device), factory=None, arg="",
                         cache_dir=None, use_cache=False, out_path=str(tmp_path / "e.npy"))

    assert _task_resources([task("cuda")]) == {"num_gpus": 1}
    assert _task_resources([task("cpu")]) == {}


# --- fuzzy: same manifest as the local engine, partitioned global step -----------------------

@pytest.mark.parametrize("verify,more", [
    ("signature", {}),
    ("sets", {"measure": "jaccard,containment,char", "candidate_threshold": 0.4, "keep": "longest",
              "containment_min": 5}),
])
def test_fuzzy_manifest_equals_local(ray_session, multi_shard, tmp_path, monkeypatch, verify, more):
    from dedupkit.engine import graph
    from dedupkit.stages.fuzzy import partitioned as fuzzy_partitioned

    # Small partitions, so that the pair shuffle and the components really span several tasks.
    monkeypatch.setattr(fuzzy_partitioned, "PAIRS_PER_PARTITION", 8)
    monkeypatch.setattr(graph, "EDGES_PER_PARTITION", 16)
    kw = dict(id_column="id", verify=verify, threshold=0.7, **more)
    local = api.fuzzy([str(multi_shard)], str(tmp_path / "local"), workers=1, **kw)
    on_ray = api.fuzzy([str(multi_shard)], str(tmp_path / "ray"), workers=2, engine="ray", **kw)
    a, b = read_manifest(local.out), read_manifest(on_ray.out)
    assert a == b
    assert sum(not r["keep"] for r in a) >= 30  # the 25 exact copies and near copies
    g = on_ray.summary["stats"]["global_step"]
    # every keep policy: the driver touches no rows (dedupkit.engine.driver)
    assert g["mode"] == "rowless" and g["pair_partitions"] > 1 and g["component_partitions"] > 1
    assert on_ray.summary["stats"]["verified_pairs"] == local.summary["stats"]["verified_pairs"]


class KillOnceFuzzyMapper(FuzzyMapper):
    """FuzzyMapper that kills its own worker once, after at least one scan task has finished."""

    def __init__(self, cfg, word_sets: bool, scan_glob: str, marker: str):
        super().__init__(cfg, word_sets)
        self.scan_glob = scan_glob
        self.marker = marker

    def map_batch(self, batch):
        _kill_once(self.scan_glob, self.marker)
        return super().map_batch(batch)


class KillOnceFuzzy(FuzzyStage):
    def __init__(self, out: Path, marker: Path):
        super().__init__(FuzzyConfig())
        self._glob = str(out / ".work" / "*-scan" / "*.done.json")
        self._marker = str(marker)

    def mapper(self):
        return KillOnceFuzzyMapper(self.config.minhash, self.word_sets(), self._glob, self._marker)


def test_fuzzy_worker_killed_mid_run_gives_same_manifest(ray_session, multi_shard, tmp_path):
    local = api.fuzzy([str(multi_shard)], str(tmp_path / "local"), id_column="id")
    out, marker = tmp_path / "ray", tmp_path / "killed.pid"
    res = run_stage(KillOnceFuzzy(out, marker), [str(multi_shard)], out, ReadSpec(id_column="id"),
                    RunOptions(workers=2, engine="ray"))
    assert marker.exists(), "the test mapper never killed its worker"
    assert read_manifest(res.out) == read_manifest(local.out)
