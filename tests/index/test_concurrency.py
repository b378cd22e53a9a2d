"""A shared index under concurrent writers and faults (issue 21), with real subprocesses.

- Concurrent ``check --update`` runs over drops that overlap each other and the index give the
  manifests and the index of some serial order (replayed here one at a time to compare).
- ``check --update`` and ``index add`` killed (SIGKILL) at every crash point of their write path
  (``dedupkit.index.faults``): the index is as before or as after, ``index info`` verifies, and a
  rerun ends with exactly the index (and manifest) of an uninterrupted run.
- A Redis server restarted in the middle of a ``check --update``.

Every test runs against a local index and a real redis-server on a free port, in its own folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support import SRC, free_port, make_texts, read_manifest, write_jsonl
from tests.support import near_copy as near
from dedupkit import api
from dedupkit.index import open_index
MANIFEST_COLS = ("doc_id", "keep", "duplicate_of", "match", "matched_doc_id")


def texts(n: int, seed: int) -> list[str]:
    return make_texts(n, seed, words=120)


# -- a real redis-server with persistence, that a test can restart ------------------------------

class RedisServer:
    """redis-server on a free port with an append-only file in its own folder."""

    def __init__(self, folder: Path):
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        self.exe, self.dir = exe, folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        import redis

        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", "",
             "--appendonly", "yes", "--appendfsync", "always"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        for _ in range(200):
            try:
                client.ping()
                return
            except (redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError):
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # SIGTERM: a clean shutdown that flushes the append-only file
            self.proc.wait(timeout=30)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def url(self, prefix: str) -> str:
        return f"redis://127.0.0.1:{self.port}/0?prefix={prefix}"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    srv = RedisServer(tmp_path_factory.mktemp("redis"))
    yield srv
    srv.stop()


@pytest.fixture(params=["local", pytest.param("redis", marks=pytest.mark.redis)])
def kind(request):
    return request.param


def make_location(kind: str, tmp_path: Path, name: str, request) -> str:
    if kind == "local":
        return str(tmp_path / f"{name}.idx")
    srv = request.getfixturevalue("redis_server")
    return srv.url(f"{name}{abs(hash(str(tmp_path))) % 10**8}")


# -- helpers --------------------------------------------------------------------------------------

def spawn(*args: str, env: dict | None = None, stderr: Path | None = None) -> subprocess.Popen:
    e = dict(os.environ)
    e["PYTHONPATH"] = SRC + os.pathsep + e.get("PYTHONPATH", "")
    e.pop("DEDUPKIT_FAULT", None)
    e.update(env or {})
    err = open(stderr, "w") if stderr else subprocess.PIPE
    return subprocess.Popen([sys.executable, "-m", "dedupkit", *args], stdout=subprocess.PIPE,
                            stderr=err, text=True, env=e)


def index_docs(loc: str) -> list[tuple[int, list[str]]]:
    """Every committed segment, in commit order: (first doc number, its doc_ids)."""
    with open_index(loc) as idx:
        out = []
        for c in idx.commits():
            ids, _ = idx.resolve(np.arange(c["base"], c["base"] + c["n"]))
            out.append((c["base"], ids))
        return out


def raw_state(loc: str):
    """The index's stored content, to compare byte for byte: Redis keys (but the lock and the
    commit records' times) or the local index.json segment list with every file's checksum."""
    if not loc.startswith("redis://"):
        meta = json.loads((Path(loc) / "index.json").read_text())
        return meta["count"], meta["segments"]
    import redis

    url, prefix = loc.split("?prefix=")
    r = redis.Redis.from_url(url)
    out = {}
    for k in r.scan_iter(match=f"{prefix}:*"):
        name = k.decode()[len(prefix) + 1:]
        t = r.type(k).decode()
        if name in ("lock", "meta"):
            continue
        if name == "segments":
            out[name] = [{x: v for x, v in json.loads(s).items() if x not in ("time", "writer")}
                         for s in r.lrange(k, 0, -1)]
        elif t == "hash":
            out[name] = r.hgetall(k)
        elif t == "list":
            out[name] = r.lrange(k, 0, -1)
        else:
            out[name] = r.get(k)
    return out


def manifest(out: Path) -> list[tuple]:
    return [tuple(r[c] for c in MANIFEST_COLS) for r in read_manifest(out)]


def info_ok(loc: str) -> dict:
    p = spawn("index", "info", loc, "--json")
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 0, stderr
    return json.loads(stdout)


# -- concurrent checks equal some serial order ---------------------------------------------------

K = 4
HELD = texts(30, 100)
SHARED = texts(24, 200)  # new documents that several drops hold


def write_drops(root: Path, seed: int) -> list[Path]:
    """K drops: copies of held documents, shared new documents (exact and near copies) that
    overlap other drops, and documents of their own."""
    rng = np.random.default_rng(seed)
    drops = []
    for k in range(K):
        rows = []
        for i in rng.choice(len(HELD), 4, replace=False):
            rows.append(HELD[i])
        for i in rng.choice(len(SHARED), 10, replace=False):
            rows.append(SHARED[i] if rng.random() < 0.7 else near(SHARED[i], int(rng.integers(1000))))
        rows += texts(5, 1000 + seed * 10 + k)
        rng.shuffle(rows)
        drops.append(write_jsonl(root / f"drop{k}.jsonl", [{"id": f"d{k}-{j}", "text": t} for j, t in enumerate(rows)]))
    return drops


def family(text: str) -> str:
    """The held or shared document a text is (a copy or a near copy of), else the text itself."""
    for t in HELD + SHARED:
        if text == t:
            return t
        a, b = t.split(" "), text.split(" ")
        if len(a) == len(b) and sum(x != y for x, y in zip(a, b)) == 1:
            return t
    return text


@pytest.mark.slow
def test_concurrent_checks_equal_a_serial_order(tmp_path, kind, request):
    write_jsonl(tmp_path / "held.jsonl", [{"id": f"h{i}", "text": t} for i, t in enumerate(HELD)])
    for rnd in range(3):
        rng = np.random.default_rng(rnd)
        work = tmp_path / f"round{rnd}"
        drops = write_drops(work, seed=rnd)
        loc = make_location(kind, work, f"conc{rnd}", request)
        api.index_create(loc, [str(tmp_path / "held.jsonl")], stages="exact,fuzzy", id_column="id")
        procs = []
        for k in rng.permutation(K):
            time.sleep(float(rng.uniform(0, 0.4)))
            # Hold the lock a random while once taken (crash point 1 is "writer: locked").
            env = {"DEDUPKIT_FAULT": f"sleep:1:{rng.uniform(0, 0.6):.2f}"}
            procs.append((k, spawn("check", str(drops[k]), "--against", loc, "-o", str(work / f"out{k}"),
                                   "--update", "--id-column", "id", "-q", env=env)))
        for k, p in procs:
            _, err = p.communicate(timeout=600)
            assert p.returncode == 0, err
        # The order the index committed the drops in.
        segs = index_docs(loc)
        assert len(segs) == K + 1
        order = [int(ids[0].split("-")[0][1:]) for _, ids in segs[1:]]
        assert sorted(order) == list(range(K))
        # Replay in that order, one at a time, against a fresh index: the same manifests and index.
        loc2 = make_location(kind, work, f"serial{rnd}", request)
        api.index_create(loc2, [str(tmp_path / "held.jsonl")], stages="exact,fuzzy", id_column="id")
        for k in order:
            api.check([str(drops[k])], str(work / f"serial{k}"), loc2, update=True, id_column="id")
            assert manifest(work / f"out{k}") == manifest(work / f"serial{k}"), (rnd, order, k)
        assert index_docs(loc) == index_docs(loc2)
        # Each document (family of exact and near copies) is kept exactly once, index included.
        kept: dict[str, int] = {family(t): 1 for t in HELD}
        for k in range(K):
            rows = {r["doc_id"]: r for r in read_manifest(work / f"out{k}")}
            for line in drops[k].read_text().splitlines():
                d = json.loads(line)
                if rows[d["id"]]["keep"]:
                    kept[family(d["text"])] = kept.get(family(d["text"]), 0) + 1
                else:
                    kept.setdefault(family(d["text"]), 0)
        assert set(kept.values()) == {1}, {f[:30]: c for f, c in kept.items() if c != 1}
        assert info_ok(loc)["documents"] == len(kept)


def test_a_waiting_writer_says_so_and_decides_after_the_holder(tmp_path, kind, request):
    base = texts(6, 7)
    write_jsonl(tmp_path / "a.jsonl", [{"id": f"a{i}", "text": t} for i, t in enumerate(base)])
    write_jsonl(tmp_path / "b.jsonl", [{"id": f"b{i}", "text": t} for i, t in enumerate(base[:3] + texts(2, 8))])
    loc = make_location(kind, tmp_path, "wait", request)
    api.index_create(loc, [], id_column="id")
    holder = open_index(loc)
    holder.acquire_writer("a test holding the lock")
    p = spawn("check", str(tmp_path / "b.jsonl"), "--against", loc, "-o", str(tmp_path / "out_b"), "--update",
              "--id-column", "id", stderr=tmp_path / "err.txt")  # no -q: it would silence the waiting note
    deadline = time.monotonic() + 180
    while "waiting" not in (tmp_path / "err.txt").read_text():  # it reached the lock and waits
        assert p.poll() is None and time.monotonic() < deadline, (tmp_path / "err.txt").read_text()
        time.sleep(0.1)
    time.sleep(0.5)
    assert p.poll() is None
    # The holder adds a.jsonl's documents while b's check waits, then lets go: b decides after.
    import pyarrow as pa

    from dedupkit.index.base import Segment
    from dedupkit.stages.exact import normalized_hash128

    h = normalized_hash128(pa.array(base), holder.settings.normalize)
    holder.append(Segment(doc_ids=pa.array([f"a{i}" for i in range(6)]), shard_names=["a.jsonl"],
                          shard_index=np.zeros(6, np.int32), exact=np.asarray(h, np.uint64).reshape(-1, 2)))
    holder.release_writer()
    holder.close()
    p.communicate(timeout=300)
    err = (tmp_path / "err.txt").read_text()
    assert p.returncode == 0, err
    assert "is being written by pid" in err and "a test holding the lock" in err and "got the lock after" in err
    rows = {r["doc_id"]: r for r in read_manifest(tmp_path / "out_b")}
    assert [rows[f"b{i}"]["matched_doc_id"] for i in range(3)] == ["a0", "a1", "a2"]
    assert rows["b3"]["keep"] and rows["b4"]["keep"]
    assert [len(ids) for _, ids in index_docs(loc)] == [6, 2]


# -- kills at every crash point ------------------------------------------------------------------

def crash_points(trace: Path) -> list[str]:
    return [line.split(" ", 1)[1] for line in trace.read_text().splitlines()]


def pick(n: int, want: int = 12) -> list[int]:
    """Crash points to kill at: all when few, else ``want`` spread over 1..n (first and last)."""
    if n <= want:
        return list(range(1, n + 1))
    return sorted({int(round(x)) for x in np.linspace(1, n, want)})


def _command(cmd: str, loc: str, drop: Path, out: Path) -> list[str]:
    if cmd == "add":
        return ["index", "add", loc, str(drop), "--id-column", "id", "-q"]
    return ["check", str(drop), "--against", loc, "-o", str(out), "--update", "--id-column", "id", "-q"]


def _rerun(cmd: str, loc: str, drop: Path, out: Path) -> None:
    if cmd == "add":
        api.index_add(loc, [str(drop)], id_column="id")
    else:
        api.check([str(drop)], str(out), loc, update=True, id_column="id")


@pytest.mark.slow
@pytest.mark.parametrize("cmd", ["check", "add"])
def test_killed_at_every_crash_point_the_index_is_before_or_after(tmp_path, kind, request, cmd):
    held = texts(40, 300)
    new = texts(25, 301)
    write_jsonl(tmp_path / "held.jsonl", [{"id": f"h{i}", "text": t} for i, t in enumerate(held)])
    drop = write_jsonl(tmp_path / "drop.jsonl", [{"id": f"n{i}", "text": t} for i, t in
                                                 enumerate(new + held[:5] + [near(held[9], 1), new[3]])])

    def fresh(name: str) -> str:
        loc = make_location(kind, tmp_path, name, request)
        api.index_create(loc, [str(tmp_path / "held.jsonl")], stages="exact,fuzzy", id_column="id")
        return loc

    before_loc = fresh("before")
    before = index_docs(before_loc)
    # The uninterrupted run, tracing its crash points.
    ref = fresh("ref")
    trace = tmp_path / "trace.txt"
    p = spawn(*_command(cmd, ref, drop, tmp_path / "out_ref"), env={"DEDUPKIT_FAULT_TRACE": str(trace)})
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    names = crash_points(trace)
    points = pick(len(names))
    assert len(points) >= 10, names
    after = index_docs(ref)
    assert len(after) == len(before) + 1
    for k in points:
        loc = fresh(f"k{k}")
        out = tmp_path / f"out{k}"
        p = spawn(*_command(cmd, loc, drop, out), env={"DEDUPKIT_FAULT": f"kill:{k}"})
        _, err = p.communicate(timeout=300)
        assert p.returncode == -signal.SIGKILL, (k, names[k - 1], err)
        # As before or as after, never half; `index info` verifies it.
        info = info_ok(loc)
        state = index_docs(loc)
        assert state in (before, after), (k, names[k - 1])
        assert info["documents"] == sum(len(ids) for _, ids in state)
        if kind == "redis" and state == before and names[k - 1] not in ("writer: locked", "writer: recovered"):
            assert info["pending"] is not None and "interrupted" in info["pending"]["state"], (k, names[k - 1])
        if kind == "redis" and info.get("pending") and k == points[len(points) // 2]:
            # Kill the next writer too, in the middle of its rollback (crash point 2 is after the
            # rollback of the first journal chunk): the rollback is redone by the one after.
            trace2 = tmp_path / f"trace{k}.txt"
            p = spawn(*_command(cmd, loc, drop, out), env={"DEDUPKIT_FAULT": "kill:2",
                                                           "DEDUPKIT_FAULT_TRACE": str(trace2)})
            p.communicate(timeout=300)
            assert p.returncode == -signal.SIGKILL
            assert crash_points(trace2)[1] == "redis: rollback of a journal chunk"
            assert index_docs(loc) == before and info_ok(loc)["pending"]
        # A rerun ends where the uninterrupted run did, byte for byte.
        _rerun(cmd, loc, drop, out)
        assert index_docs(loc) == after, (k, names[k - 1])
        assert raw_state(loc) == raw_state(ref), (k, names[k - 1])
        if cmd == "check":
            assert manifest(out) == manifest(tmp_path / "out_ref"), (k, names[k - 1])
        info = info_ok(loc)
        assert not info.get("pending") and not info.get("leftovers") and not info.get("writer")


@pytest.mark.slow
@pytest.mark.redis
def test_redis_restarted_during_a_check_update(tmp_path):
    srv = RedisServer(tmp_path / "redis")
    try:
        held = texts(40, 400)
        new = texts(30, 401)
        write_jsonl(tmp_path / "held.jsonl", [{"id": f"h{i}", "text": t} for i, t in enumerate(held)])
        drop = write_jsonl(tmp_path / "drop.jsonl", [{"id": f"n{i}", "text": t} for i, t in enumerate(new + held[:4])])
        ref, loc = srv.url("ref"), srv.url("run")
        for x in (ref, loc):
            api.index_create(x, [str(tmp_path / "held.jsonl")], stages="exact,fuzzy", id_column="id")
        api.check([str(drop)], str(tmp_path / "out_ref"), ref, update=True, id_column="id")
        trace = tmp_path / "trace.txt"
        # Pause after the document records (mid-append), restart the server meanwhile.
        p = spawn("check", str(drop), "--against", loc, "-o", str(tmp_path / "out"), "--update", "--id-column",
                  "id", "-q", env={"DEDUPKIT_FAULT_TRACE": str(trace), "DEDUPKIT_FAULT": "sleep:6:4"})
        deadline = time.monotonic() + 120
        while not (trace.exists() and len(trace.read_text().splitlines()) >= 6):
            assert p.poll() is None and time.monotonic() < deadline, p.stderr.read() if p.poll() is not None else ""
            time.sleep(0.05)
        assert crash_points(trace)[5] == "redis: document records written"
        srv.restart()
        _, err = p.communicate(timeout=300)
        # The writer reconnects and finishes (its writes are idempotent and fenced by the lock,
        # which the server kept); either way the index is whole.
        assert p.returncode == 0, err
        assert index_docs(loc) == index_docs(ref)
        assert raw_state(loc) == raw_state(ref)
        assert manifest(tmp_path / "out") == manifest(tmp_path / "out_ref")
        info = info_ok(loc)
        assert info["documents"] == 40 + 30 and not info["pending"]
    finally:
        srv.stop()


# -- the lock: a wait that ends, and a writer that lost its lock cannot write ---------------------

def test_a_writer_gives_up_after_the_lock_wait_naming_the_holder(tmp_path, kind, request, monkeypatch):
    from dedupkit.index import IndexStoreError

    write_jsonl(tmp_path / "a.jsonl", [{"id": "a0", "text": "some text"}])
    loc = make_location(kind, tmp_path, "giveup", request)
    api.index_create(loc, [], id_column="id")
    holder = open_index(loc)
    holder.acquire_writer("a test holding the lock")
    try:
        monkeypatch.setenv("DEDUPKIT_INDEX_LOCK_WAIT", "0.5")
        with pytest.raises(IndexStoreError, match="a test holding the lock.*DEDUPKIT_INDEX_LOCK_WAIT"):
            api.index_add(loc, [str(tmp_path / "a.jsonl")], id_column="id")
        p = spawn("index", "info", loc)
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0 and "writer:     pid" in out and "a test holding the lock" in out, err
    finally:
        holder.release_writer()
        holder.close()
    assert api.index_add(loc, [str(tmp_path / "a.jsonl")], id_column="id").added == 1
    assert api.index_add(loc, [str(tmp_path / "a.jsonl")], id_column="id").already_indexed == 1
    assert info_ok(loc)["documents"] == 1


@pytest.mark.redis
def test_a_redis_writer_that_lost_its_lock_commits_nothing(tmp_path, redis_server):
    import pyarrow as pa
    import redis

    from dedupkit.index import IndexSettings, IndexStoreError, create_index
    from dedupkit.index.base import Segment

    loc = redis_server.url("lost")
    create_index(loc, IndexSettings()).close()
    seg = Segment(doc_ids=pa.array(["x", "y"]), shard_names=["s"], shard_index=np.zeros(2, np.int32),
                  exact=np.array([[1, 2], [3, 4]], np.uint64))
    w = open_index(loc)
    w.acquire_writer("stalled writer")
    # Another writer took over (the stalled one's lock expired): its writes are refused.
    redis.Redis(port=redis_server.port).set("lost:lock", json.dumps({"pid": -1, "id": "other"}))
    with pytest.raises(IndexStoreError, match="lost the index lock"):
        w.append(seg)
    w.release_writer()
    w.close()
    redis.Redis(port=redis_server.port).delete("lost:lock")
    assert info_ok(loc)["documents"] == 0
    with open_index(loc) as idx:
        assert idx.append(seg) == 0 and idx.count == 2
    assert info_ok(loc)["documents"] == 2
