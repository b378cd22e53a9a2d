"""Shared fixtures: tiny corpora written to tmp_path as Parquet and JSONL, and CLI runners."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")

# Nothing the test suite runs may write under the user's home: HOME (and XDG_CACHE_HOME, where
# dedupkit, Hugging Face and torch would put caches) point at fresh temporary folders for the whole
# session, subprocesses included, and `home_stays_empty` fails the run if anything appears in
# HOME or a dedupkit cache appears in XDG_CACHE_HOME. Tests pass cache folders explicitly.
_REAL_HOME = os.environ.get("HOME", "")
TEST_HOME = Path(tempfile.mkdtemp(prefix="dedupkit-test-home-"))
TEST_XDG_CACHE = Path(tempfile.mkdtemp(prefix="dedupkit-test-xdg-cache-"))
os.environ["HOME"] = str(TEST_HOME)
os.environ["XDG_CACHE_HOME"] = str(TEST_XDG_CACHE)
os.environ.pop("DEDUPKIT_CACHE_DIR", None)
# A local Ray cluster saves a new auth token to ~/.ray/auth_token unless it is given one.
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))


def _leftovers() -> list[str]:
    found = [str(p) for p in sorted(TEST_HOME.rglob("*"))]
    found += [str(p) for p in sorted(TEST_XDG_CACHE.glob("dedupkit*"))]
    return found


@pytest.fixture(scope="session", autouse=True)
def home_stays_empty():
    """Fails the session (as an error at its last test's teardown) if a test wrote under HOME."""
    yield
    left = _leftovers()
    shutil.rmtree(TEST_HOME, ignore_errors=True)
    shutil.rmtree(TEST_XDG_CACHE, ignore_errors=True)
    assert not left, ("the test suite wrote under HOME (or a dedupkit cache under XDG_CACHE_HOME); pass "
                      "cache folders explicitly:\n  " + "\n  ".join(left[:20]))

BASE_DOCS = [
    "The quick brown fox jumps over the lazy dog near the river bank today.",
    "A completely different sentence about databases, indexes and query planners.",
    "The quick brown fox jumps over the lazy dog near the river bank today.",
    "Rain is expected tomorrow across the northern region with strong winds.",
    "the  quick brown fox jumps over the lazy dog near the river bank today.\n",
    "A completely different sentence about databases, indexes and query planners.",
    "Entirely unique text number seven with nothing in common with the others.",
    "Rain is expected tomorrow across the northern region with strong winds.",
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def write_parquet(path: Path, rows: list[dict], row_group_size: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)
    return path


def make_rows(texts: list[str], prefix: str = "d") -> list[dict]:
    return [{"id": f"{prefix}{i}", "text": t, "n": i} for i, t in enumerate(texts)]


@pytest.fixture(params=["parquet", "jsonl"])
def fmt(request) -> str:
    return request.param


@pytest.fixture
def corpus(tmp_path, fmt) -> Path:
    """Two shards of BASE_DOCS in the parametrized format; returns the folder."""
    d = tmp_path / "data"
    half = len(BASE_DOCS) // 2
    for i, chunk in enumerate([BASE_DOCS[:half], BASE_DOCS[half:]]):
        rows = make_rows(chunk, prefix=f"s{i}-")
        if fmt == "parquet":
            write_parquet(d / f"part{i}.parquet", rows)
        else:
            write_jsonl(d / f"part{i}.jsonl", rows)
    return d


def read_manifest(out: Path) -> list[dict]:
    t = ds.dataset(str(Path(out) / "manifest"), format="parquet").to_table()
    return t.sort_by([("shard", "ascending"), ("row", "ascending")]).to_pylist()


def run_subprocess(*args: str, cwd: str | os.PathLike | None = None, input: str | None = None,
                   env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real ``dedupkit`` command line in a subprocess (this checkout's src first)."""
    e = dict(os.environ)
    e["PYTHONPATH"] = SRC + os.pathsep + e.get("PYTHONPATH", "")
    if env:
        e.update(env)
    return subprocess.run([sys.executable, "-m", "dedupkit", *args], cwd=cwd, input=input,
                          capture_output=True, text=True, env=e, timeout=600)
