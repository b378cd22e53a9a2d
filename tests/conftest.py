"""Shared fixtures (tiny corpora in tmp_path) and a test session that never writes under HOME.

Helpers that tests import (corpus writers, manifest readers, the subprocess runner) live in
:mod:`tests.support`."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.support import BASE_DOCS, free_port, make_rows, write_rows

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
        write_rows(d / f"part{i}", rows, fmt)
    return d


@pytest.fixture(scope="module")
def redis_server():
    """A real redis-server on a free port for the module; yields the port (skips without one)."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server); the Redis index is untested")
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError("redis-server did not start")
    yield port
    proc.terminate()
    proc.wait(timeout=10)


# ---- slow tests ------------------------------------------------------------------------------
# A plain `pytest` skips tests marked `slow` (more than ~10 s: wheel installs, SIGKILL and
# concurrency harnesses, resource limits, fuzzing, Ray, the browser); `--run-slow` (or
# DEDUPKIT_TEST_SLOW=1) runs them too, and scripts/test.sh, which .ci/run calls, passes it.
# Ray and browser tests count as slow whatever their own marks say: each starts a heavy service.
SLOW_MARKS = ("slow", "ray", "browser")


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run tests marked slow (and the ray and browser tests)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow") or os.environ.get("DEDUPKIT_TEST_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow (scripts/test.sh does)")
    for item in items:
        if any(item.get_closest_marker(m) for m in SLOW_MARKS):
            item.add_marker(skip)
