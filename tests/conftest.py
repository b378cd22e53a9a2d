"""Shared fixtures (tiny corpora in tmp_path) and a test session that never writes under HOME.

Helpers that tests import (corpus writers, manifest readers, the subprocess runner) live in
:mod:`tests.support`."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.support import BASE_DOCS, make_rows, write_jsonl, write_parquet

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
        if fmt == "parquet":
            write_parquet(d / f"part{i}.parquet", rows)
        else:
            write_jsonl(d / f"part{i}.jsonl", rows)
    return d
