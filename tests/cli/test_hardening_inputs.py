"""Issue 15 item 13: inputs that used to hang for ever, or fail only after the whole scan, are
refused at the start with a message naming the file and the fix.

The class: a path that is not a regular file (FIFO, character device, socket), a file that
cannot be opened, a file whose first bytes contradict its suffix, an id column of a type that
cannot be an id. Every stage command and `apply` share discovery, so each is tried with the
real command line in a subprocess (a hang shows as a timeout) and must finish within seconds.
"""

from __future__ import annotations

import gzip
import os
import socket
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support import SRC, write_jsonl


def _run(*args, timeout=60):
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-m", "dedupkit", *map(str, args)], capture_output=True, text=True,
                           env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"dedupkit {' '.join(map(str, args))} hung for {timeout} s")
    return p, time.perf_counter() - t0


def _fifo(d):
    os.mkfifo(d / "f.jsonl")


def _device(d):
    os.symlink("/dev/zero", d / "z.jsonl")


def _socket(d):
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(d / "s.jsonl"))
    d.joinpath(".keep-socket").write_text("")  # the socket file stays after close


def _parquet_named_jsonl(d):
    pq.write_table(pa.table({"text": ["a"] * 1000}), d / "p.jsonl")


def _gzip_named_jsonl(d):
    (d / "g.jsonl").write_bytes(gzip.compress(b'{"text": "a"}\n' * 1000))


def _jsonl_named_parquet(d):
    (d / "j.parquet").write_bytes(b'{"text": "a"}\n' * 1000)


def _jsonl_named_zst(d):
    (d / "j.jsonl.zst").write_bytes(b'{"text": "a"}\n' * 1000)


def _utf16(d):
    (d / "u.jsonl").write_bytes('{"text": "a"}\n'.encode("utf-16") * 100)


def _truncated_parquet(d):
    pq.write_table(pa.table({"text": ["a"] * 1000}), d / "t.parquet")
    data = (d / "t.parquet").read_bytes()
    (d / "t.parquet").write_bytes(data[: len(data) // 2])


def _struct_id(d):
    pq.write_table(pa.table({"text": ["a", "b"], "id": [{"k": 1}, {"k": 2}]}), d / "s.parquet")


CASES = {
    "fifo": (_fifo, r"f\.jsonl:? .*not a regular file"),
    "device": (_device, r"z\.jsonl:? .*not a regular file"),
    "socket": (_socket, r"s\.jsonl:? .*not a regular file"),
    "parquet named .jsonl": (_parquet_named_jsonl, r"p\.jsonl: named as JSON Lines but it is a Parquet file; "
                                                   r"rename it to end in \.parquet"),
    "gzip named .jsonl": (_gzip_named_jsonl, r"g\.jsonl: named as JSON Lines but it is gzip-compressed"),
    "jsonl named .parquet": (_jsonl_named_parquet, r"j\.parquet: named as Parquet but it is JSON text"),
    "jsonl named .zst": (_jsonl_named_zst, r"j\.jsonl\.zst: named as zstd-compressed"),
    "utf-16": (_utf16, r"u\.jsonl: named as JSON Lines but it is UTF-16 text"),
    "truncated parquet": (_truncated_parquet, r"t\.parquet: not a readable Parquet file \(no PAR1 mark at its end\)"),
    "struct id": (_struct_id, r"column 'id' in .*s\.parquet has type struct"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refused_at_the_start(tmp_path, case):
    make, msg = CASES[case]
    d = tmp_path / "data"
    write_jsonl(d / "a.jsonl", [{"id": f"a{i}", "text": f"good text {i}"} for i in range(3)])
    make(d)
    import re

    commands = [("exact", d, "-o", tmp_path / "e", "--id-column", "id"),
                ("exact", d, "-o", tmp_path / "s", "--id-column", "id", "--on-bad-record", "skip"),
                ("fuzzy", d, "-o", tmp_path / "f", "--id-column", "id")]
    for args in commands:
        p, secs = _run(*args)
        assert p.returncode == 1, (args, p.stderr)
        assert p.stderr.startswith("Error: ") and "Traceback" not in p.stderr, p.stderr
        assert re.search(msg, p.stderr), p.stderr
        assert secs < 30
        assert not (args[3] / "summary.json").exists()
    # apply meets the same input: refused the same way, nothing written
    good = tmp_path / "good"
    write_jsonl(good / "a.jsonl", [{"id": f"a{i}", "text": f"good text {i}"} for i in range(3)])
    p, _ = _run("exact", good / "a.jsonl", "-o", tmp_path / "m")
    assert p.returncode == 0, p.stderr
    if case != "struct id":  # (apply reads no id column)
        p, _ = _run("apply", d, "--manifest", tmp_path / "m", "-o", tmp_path / "clean")
        assert p.returncode == 1 and re.search(msg, p.stderr), p.stderr
        assert not (tmp_path / "clean").exists()


def test_named_fifo_and_device_are_refused_at_the_start(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "x"}])
    os.mkfifo(tmp_path / "f.jsonl")
    os.symlink("/dev/zero", tmp_path / "z.jsonl")
    for name, what in (("f.jsonl", "a named pipe (FIFO)"), ("z.jsonl", "a character device")):
        p, _ = _run("exact", tmp_path / "a.jsonl", tmp_path / name, "-o", tmp_path / "o")
        assert p.returncode == 1 and f"{name} is {what}, not a regular file" in p.stderr, p.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file; permissions cannot be tested")
def test_unreadable_file_is_refused_at_the_start(tmp_path):
    d = tmp_path / "data"
    write_jsonl(d / "a.jsonl", [{"text": "x"}])
    write_jsonl(d / "b.jsonl", [{"text": "y"}])
    os.chmod(d / "b.jsonl", 0)
    p, _ = _run("exact", d, "-o", tmp_path / "o")
    assert p.returncode == 1 and "b.jsonl: cannot read (Permission denied)" in p.stderr, p.stderr


def test_other_files_dedupkit_reads_cannot_hang_it(tmp_path):
    """The same class beyond shards: a summary.json, a config file, or a shard path recorded in a
    summary (read by report/inspect for texts) that is a FIFO is refused or skipped at once."""
    import json

    d = tmp_path / "data"
    write_jsonl(d / "a.jsonl", [{"id": f"a{i}", "text": "same text"} for i in range(3)])
    p, _ = _run("exact", d, "-o", tmp_path / "m", "--id-column", "id")
    assert p.returncode == 0, p.stderr
    # a FIFO as the path of a shard in the summary: report and inspect leave its texts out
    s = json.loads((tmp_path / "m" / "summary.json").read_text())
    os.mkfifo(tmp_path / "fifo-shard")
    s["inputs"][0]["path"] = str(tmp_path / "fifo-shard")
    s["inputs"][0]["size"] = 0
    (tmp_path / "m" / "summary.json").write_text(json.dumps(s))
    p, _ = _run("inspect", tmp_path / "m", "--largest", "1")
    assert p.returncode == 0 and "is not a regular file" in p.stderr, p.stderr
    p, _ = _run("report", tmp_path / "m", "-o", tmp_path / "r.html")
    assert p.returncode == 0 and "is not a regular file" in p.stderr, p.stderr
    # summary.json itself a FIFO
    (tmp_path / "m" / "summary.json").unlink()
    os.mkfifo(tmp_path / "m" / "summary.json")
    for args in (("apply", d, "--manifest", tmp_path / "m", "-o", tmp_path / "c"), ("stats", tmp_path / "m"),
                 ("inspect", tmp_path / "m", "--largest", "1")):
        p, _ = _run(*args)
        assert p.returncode == 1 and "summary.json is a named pipe (FIFO), not a regular file" in p.stderr, p.stderr
    # a config file that is a FIFO
    os.mkfifo(tmp_path / "c.toml")
    p, _ = _run("-c", tmp_path / "c.toml", "exact", d, "-o", tmp_path / "m2")
    assert p.returncode == 1 and "is a named pipe (FIFO), not a regular file" in p.stderr, p.stderr
