"""Every docstring example in src/dedupkit runs (``pytest --doctest-modules src/dedupkit``), so the
examples cannot rot. The root conftest.py gives each example ``data`` (the four-row JSONL corpus of
:data:`tests.support.DOC_ROWS`) and ``tmp`` (its working folder); an example that needs a service or
remote storage marks every line ``# doctest: +SKIP``."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.support import ROOT


@pytest.mark.slow
def test_every_docstring_example_runs():
    # HOME and XDG_CACHE_HOME are the session's empty temporary folders (tests/conftest.py), so an
    # example that forgets its cache_dir fails the session's home_stays_empty check
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--doctest-modules",
                        "src/dedupkit"], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stdout[-6000:] + p.stderr[-2000:]
    passed = re.search(r"(\d+) passed", p.stdout)
    # 67 examples run (6 are skipped: they need Redis, Ray, object storage, a user's embedder); a
    # collection that finds none would also exit 0
    assert passed and int(passed.group(1)) >= 65, p.stdout[-3000:]
