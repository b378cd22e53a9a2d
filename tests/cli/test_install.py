"""The first hour of a new user: build the sdist and wheel, install the wheel into a fresh
virtualenv, and run every command of the README's tour with it.

The tour is read from README.md (the first ```bash block of "A five-minute tour"), so the README
and this test cannot drift apart. The virtualenv is new and empty: pip fetches the core
dependencies from the configured package index, so the test is marked slow.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
DIST_NAME = "dedupkit-corpus"


def tour_commands() -> list[str]:
    """The commands of the README's tour, in order (comments and blank lines left out)."""
    section = README.split("## A five-minute tour", 1)[1]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    cmds, cur = [], ""
    for line in block.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cur += line.rstrip("\\").rstrip() + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            cmds.append(cur.strip())
            cur = ""
    return cmds


def test_the_tour_is_found_and_uses_the_bundled_corpus():
    cmds = tour_commands()
    assert len(cmds) >= 8 and all(c.split()[0] in ("dedupkit", "python") for c in cmds)
    assert cmds[0].startswith("dedupkit exact examples/corpus")
    assert any(c.startswith("dedupkit run ") for c in cmds)


def test_the_readme_installs_this_distribution_and_says_how():
    assert re.search(r"^name = \"dedupkit-corpus\"", (ROOT / "pyproject.toml").read_text(), re.M)
    assert "pip install dedupkit-corpus" in README and "python -m build" in README
    install = README.split("### Install", 1)[1].split("## ", 1)[0]
    assert "pip install ." in install and "dist/dedupkit_corpus-*.whl" in install


def _run(cmd: list[str] | str, cwd: Path, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                       shell=isinstance(cmd, str), executable="/bin/bash" if isinstance(cmd, str) else None)
    return p


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("build") is None, reason="`build` is not installed (dev extra)")
def test_built_wheel_in_a_fresh_virtualenv_runs_the_readme_tour(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "DEDUPKIT_"))}
    env["PIP_CACHE_DIR"] = str(tmp_path / "pip-cache")  # never the user's ~/.cache/pip
    # the build tools may touch their own folders in HOME (rustup, pip): give them one of their own
    env["HOME"] = str(tmp_path / "build-home")
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

    # 1. python -m build: an sdist and a wheel (the wheel built from the sdist, so the sdist is complete)
    dist = tmp_path / "dist"
    p = _run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)], tmp_path, env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    sdists = list(dist.glob("dedupkit_corpus-*.tar.gz"))
    wheels = list(dist.glob("dedupkit_corpus-*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, sorted(x.name for x in dist.iterdir())

    # 2. a fresh virtualenv with only the wheel (and its core dependencies) installed
    venv = tmp_path / "venv"
    p = _run([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
    assert p.returncode == 0, p.stderr
    vbin = venv / "bin"
    p = _run([str(vbin / "python"), "-m", "pip", "install", "-q", str(wheels[0])], tmp_path, env, timeout=1800)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    show = _run([str(vbin / "python"), "-m", "pip", "show", DIST_NAME], tmp_path, env)
    assert show.returncode == 0 and f"Name: {DIST_NAME}" in show.stdout

    # 3. the tour, from a folder holding only what it names (the example corpus, the configs),
    # with the virtualenv first on PATH: `dedupkit` and `python` are the installed ones
    tour = tmp_path / "tour"
    shutil.copytree(ROOT / "examples" / "corpus", tour / "examples" / "corpus")
    shutil.copytree(ROOT / "configs", tour / "configs")
    tour_home = tmp_path / "tour-home"
    tour_home.mkdir()
    tenv = {**env, "PATH": f"{vbin}{os.pathsep}{env['PATH']}", "VIRTUAL_ENV": str(venv), "HOME": str(tour_home)}
    where = _run(["python", "-c", "import dedupkit; print(dedupkit.__file__)"], tour, tenv)
    assert where.returncode == 0 and str(venv) in where.stdout, where.stdout + where.stderr
    outputs = {}
    for cmd in tour_commands():
        p = _run(cmd, tour, tenv)
        assert p.returncode == 0, f"README tour step failed: {cmd}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
        outputs.setdefault(cmd, []).append(p)

    # the tour wrote nothing in HOME, and only under out/ in its folder
    assert not list(tour_home.rglob("*")), sorted(map(str, tour_home.rglob("*")))
    assert sorted(p.name for p in tour.iterdir()) == ["configs", "examples", "out"]
    # what the tour promises is there
    assert (tour / "out" / "clean").is_dir() and (tour / "out" / "report.html").stat().st_size > 10_000
    fuzzy = [c for c in outputs if c.startswith("dedupkit fuzzy")]
    first, again = outputs[fuzzy[0]][0], outputs[fuzzy[0]][-1]
    assert re.search(r"fuzzy: stage input \d+ of \d+ rows, dropped by stage \d+", first.stderr), first.stderr
    assert len(outputs[fuzzy[0]]) == 2 and "up to date, reused" in again.stderr  # step 6 reran step 2
    reasons = next(p for c, ps in outputs.items() if c.startswith("python -c") for p in ps).stdout
    assert "'reason': 'exact duplicate of " in reasons
    stats = next(ps for c, ps in outputs.items() if c.startswith("dedupkit stats"))[0].stdout
    assert "stage input" in stats and "dropped in total" in stats
