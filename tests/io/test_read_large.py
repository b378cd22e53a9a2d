"""Huge records: a 100 MB document and a billion-character line, with the process's peak memory.

Peak memory is the child's ``ru_maxrss``, taken by a small launcher process so that the (large)
test process's own memory is not counted in the child (a forked child inherits its parent's
resident size until it execs). The bounds are generous; the measured numbers are printed and
recorded in docs/reliability.md.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import pyarrow.dataset as ds
import pytest

from tests.support import SRC

pytestmark = pytest.mark.slow

LAUNCH = r"""
import json, os, subprocess, sys
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
err = p.stderr.read()
_, status, ru = os.wait4(p.pid, 0)
print(json.dumps({"rc": os.waitstatus_to_exitcode(status), "peak_mb": ru.ru_maxrss / 1024,
                  "stderr": err.decode(errors="replace")}))
"""


def peak(*args: str) -> dict:
    """Run ``dedupkit ARGS`` and return its exit code, stderr and peak resident memory in MB."""
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    p = subprocess.run([sys.executable, "-c", LAUNCH, sys.executable, "-m", "dedupkit", *args],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_100mb_document(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    size = 100 * 1024 * 1024
    with open(d / "a.jsonl", "w") as fh:
        fh.write('{"id": "big", "text": "')
        unit = "lorem ipsum  dolor\\tsit amet "
        for _ in range(size // len(unit)):
            fh.write(unit)
        fh.write('"}\n{"id": "small", "text": "small"}\n{"id": "small2", "text": "small"}\n')
    r = peak("exact", str(d), "-o", str(tmp_path / "out"), "--id-column", "id", "-q")
    print(f"100 MB document: exact peak {r['peak_mb']:.0f} MB")
    assert r["rc"] == 0, r["stderr"]
    t = ds.dataset(str(tmp_path / "out" / "manifest")).to_table().sort_by("row").to_pylist()
    assert [x["keep"] for x in t] == [True, True, False]
    # One batch holds the document, its normalized copy and the read buffers: a small multiple of
    # 100 MB, not a function of the corpus size.
    assert r["peak_mb"] < 2048
    a = peak("apply", str(d), "--manifest", str(tmp_path / "out"), "-o", str(tmp_path / "clean"))
    print(f"100 MB document: apply peak {a['peak_mb']:.0f} MB")
    assert a["rc"] == 0, a["stderr"]
    assert (tmp_path / "clean" / "a.jsonl").stat().st_size == (d / "a.jsonl").stat().st_size - len(
        '{"id": "small2", "text": "small"}\n')
    assert a["peak_mb"] < 512  # apply streams lines in 1 MB pieces


def test_billion_character_line(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    n = 1_000_000_000
    with gzip.open(d / "a.jsonl.gz", "wb", compresslevel=1) as g:
        g.write(b'{"text": "ok 1"}\n{"text": "')
        chunk = b"a" * (1 << 24)
        written = 0
        while written < n:
            g.write(chunk[: min(len(chunk), n - written)])
            written += min(len(chunk), n - written)
        g.write(b'"}\n{"text": "ok 1"}\n')
    out = tmp_path / "out"
    r = peak("exact", str(d), "-o", str(out), "-q")
    assert r["rc"] == 1
    assert "a.jsonl.gz: line 2: record longer than 268435456 bytes (max_record_bytes)" in r["stderr"]
    assert not (out / "summary.json").exists()
    r = peak("exact", str(d), "-o", str(out), "-q", "--on-bad-record", "skip")
    print(f"1e9-character line: exact peak {r['peak_mb']:.0f} MB")
    assert r["rc"] == 0, r["stderr"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["rows"] == 3 and summary["counts"]["bad_records"] == 1
    assert summary["counts"]["kept"] == 1 and summary["counts"]["dropped"] == 2
    # Far below the line's 1000 MB: the reader holds at most ~max_record_bytes of it.
    assert r["peak_mb"] < 1000
    a = peak("apply", str(d), "--manifest", str(out), "-o", str(tmp_path / "clean"))
    print(f"1e9-character line: apply peak {a['peak_mb']:.0f} MB")
    assert a["rc"] == 0, a["stderr"]
    with gzip.open(tmp_path / "clean" / "a.jsonl.gz") as fh:
        assert fh.read() == b'{"text": "ok 1"}\n'
    assert a["peak_mb"] < 300
