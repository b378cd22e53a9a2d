"""examples/: the shell chain script and the CI gate are run for real."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
import pytest
import yaml

from dedupkit.config import stage_available

from tests.support import SRC, make_rows, read_manifest, write_jsonl

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
DEDUPKIT = f"{sys.executable} -m dedupkit"


def bash(script: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {**os.environ, "PYTHONPATH": SRC, "DEDUPKIT": DEDUPKIT, **(env or {})}
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, env=e, cwd=ROOT,
                          timeout=600)


def count_rows(folder: Path) -> int:
    n = 0
    for f in sorted(folder.rglob("*")):
        if f.suffix == ".jsonl":
            n += len(f.read_text().splitlines())
        elif f.suffix == ".parquet":
            n += ds.dataset(str(f)).count_rows()
    return n


@pytest.mark.slow
@pytest.mark.skipif(not (stage_available("fuzzy") and stage_available("semantic")),
                    reason="the fuzzy and semantic stages are not merged into this checkout yet")
def test_chain_script_runs_on_the_bundled_corpus(tmp_path):
    out = tmp_path / "chain"
    p = bash(EXAMPLES / "chain.sh", "examples/corpus", str(out), env={"DEDUPKIT_CACHE_DIR": str(tmp_path / "cache")})
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"{out}/clean"
    last = read_manifest(out / "semantic")
    kept = sum(r["keep"] for r in last)
    assert len(last) == 305 and count_rows(out / "clean") == kept
    # each stage saw only what the one before kept
    stats = [json.loads((out / s / "summary.json").read_text())["counts"] for s in ("exact", "fuzzy", "semantic")]
    assert stats[1]["considered"] == stats[0]["kept"] and stats[2]["considered"] == stats[1]["kept"]
    assert all(s["dropped_by_stage"] > 0 for s in stats[:2])


def test_chain_script_stops_on_a_failing_stage(tmp_path):
    """pipefail: a failing first stage fails the script (and nothing is applied)."""
    p = bash(EXAMPLES / "chain.sh", str(tmp_path / "missing"), str(tmp_path / "chain"))
    assert p.returncode != 0
    assert "no such file or folder" in p.stderr
    assert not (tmp_path / "chain" / "clean").exists()


WORKFLOW = EXAMPLES / "ci" / "dedup-gate.yml"


def test_ci_workflow_is_a_valid_gate():
    wf = yaml.safe_load(WORKFLOW.read_text())
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "pull_request" in on
    job = wf["jobs"]["dedup-gate"]
    steps = job["steps"]
    # self-contained: no step calls a file of this repository
    runs = "\n".join(s.get("run", "") for s in steps)
    assert "examples/" not in runs and ".sh" not in runs
    assert {"TEXT_COLUMN", "ID_COLUMN", "MAX_DUP_RATE", "CORPUS", "DROPS"} <= set(job["env"])
    # installs this project's distribution, never the unrelated `dedupkit` on the package index
    assert job["env"]["DEDUPKIT_PIP"] == "dedupkit-corpus" and 'pip install "$DEDUPKIT_PIP"' in runs
    assert any(s.get("uses", "").startswith("actions/cache") for s in steps)
    assert any(s.get("if") == "always()" for s in steps)


def _git(cwd: Path, *args: str) -> str:
    e = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
         "GIT_COMMITTER_EMAIL": "t@example.com"}
    p = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=e, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def _run_workflow(repo: Path, tmp_path: Path, base: str) -> tuple[int, str, str]:
    """Run the workflow's `run:` steps with bash -e, as GitHub does on a pull request from HEAD
    into ``base``; the install step is replaced by this checkout's dedupkit on PATH (the wheel
    test installs the built distribution)."""
    wf = yaml.safe_load((repo / ".github" / "workflows" / "dedup-gate.yml").read_text())
    job = wf["jobs"]["dedup-gate"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, cmd in (("dedupkit", f'exec "{sys.executable}" -m dedupkit "$@"'),
                      ("python", f'exec "{sys.executable}" "$@"')):
        (bin_dir / name).write_text(f"#!/bin/sh\n{cmd}\n")
        (bin_dir / name).chmod(0o755)
    summary = tmp_path / f"summary-{base}.md"
    summary.write_text("")
    env = {**os.environ, **{k: str(v) for k, v in job["env"].items()}, "PYTHONPATH": SRC,
           "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "GITHUB_BASE_REF": base,
           "GITHUB_STEP_SUMMARY": str(summary), "CI": "true"}
    log = []
    for step in job["steps"]:
        if "run" not in step or step.get("name", "").startswith("Install"):
            continue
        script = tmp_path / "step.sh"
        script.write_text(step["run"])
        p = subprocess.run(["bash", "-e", str(script)], cwd=repo, capture_output=True, text=True, env=env,
                           timeout=600)
        log.append(p.stderr)
        if p.returncode != 0:
            return p.returncode, summary.read_text(), "\n".join(log)
    return 0, summary.read_text(), "\n".join(log)


@pytest.mark.skipif(importlib.util.find_spec("dedupkit.cli.index") is None,
                    reason="`dedupkit index`/`check` are not merged into this checkout yet")
def test_ci_workflow_copied_alone_into_a_new_repo_passes_a_clean_drop_and_fails_duplicates(tmp_path):
    """Only the documented file is copied; the data has no id column."""
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    _git(upstream, "init", "-q", "-b", "main")
    (upstream / ".github" / "workflows").mkdir(parents=True)
    (upstream / ".github" / "workflows" / "dedup-gate.yml").write_text(WORKFLOW.read_text())
    corpus = [f"Report number {i} about the harbour, the council and a new bridge in town {i}." for i in range(40)]
    write_jsonl(upstream / "data" / "corpus" / "a.jsonl", [{"text": t} for t in corpus])
    _git(upstream, "add", "-A")
    _git(upstream, "commit", "-qm", "corpus")
    repo = tmp_path / "repo"
    _git(tmp_path, "clone", "-q", str(upstream), str(repo))

    # a pull request adding a drop of new texts: passes
    _git(repo, "checkout", "-qb", "clean-drop")
    write_jsonl(repo / "data" / "drops" / "2024-06" / "d.jsonl",
                [{"text": f"Entirely new item {i}: weather, markets and sport {i * 7}."} for i in range(20)])
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "clean drop")
    rc, summary, log = _run_workflow(repo, tmp_path, "main")
    assert rc == 0, log
    assert "### data/drops/2024-06: passed" in summary and "0 duplicate documents." in summary
    assert (repo / ".dedupkit" / "index").is_dir()

    # a pull request adding a drop that copies ten corpus documents: exit 3, each one named
    _git(repo, "checkout", "-q", "main")
    _git(repo, "checkout", "-qb", "copied-drop")
    write_jsonl(repo / "data" / "drops" / "2024-07" / "d.jsonl", [{"text": t} for t in corpus[:10]] +
                [{"text": "one new text about something else entirely"}])
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "drop with copies")
    rc, summary, log = _run_workflow(repo, tmp_path, "main")
    assert rc == 3, log
    assert "### data/drops/2024-07: FAILED" in summary and "10 duplicate documents:" in summary
    for i in range(10):  # the matched corpus document of every duplicate is named
        assert f"| `data/drops/2024-07/d.jsonl:{i}` | data/drops/2024-07/d.jsonl | {i} | " \
               f"exact duplicate of data/corpus/a.jsonl:{i} in the index |" in summary
    assert "2024-06" not in summary  # only the pull request's own drop is checked
