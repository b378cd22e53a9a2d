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

from conftest import SRC, make_rows, read_manifest, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
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
    p = bash(EXAMPLES / "chain.sh", "examples/corpus", str(out))
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


def test_ci_workflow_is_a_valid_gate():
    wf = yaml.safe_load((EXAMPLES / "ci" / "dedup-gate.yml").read_text())
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "pull_request" in on
    steps = wf["jobs"]["dedup-gate"]["steps"]
    runs = "\n".join(s.get("run", "") for s in steps)
    assert "examples/ci/dedup-gate.sh" in runs and "pip install dedupkit" in runs
    assert any(s.get("uses", "").startswith("actions/cache") for s in steps)
    assert any(s.get("if") == "always()" for s in steps)
    gate = (EXAMPLES / "ci" / "dedup-gate.sh").read_text()
    assert '$DEDUPKIT check "$DROP" --against "$INDEX"' in gate and "--max-dup-rate" in gate


@pytest.mark.skipif(importlib.util.find_spec("dedupkit.cli.index") is None,
                    reason="`dedupkit index`/`check` are not merged into this checkout yet")
def test_ci_gate_script_passes_a_new_drop_and_fails_a_copy(tmp_path):
    corpus = tmp_path / "corpus"
    texts = [f"Report number {i} about the harbour, the council and a new bridge in town {i}." for i in range(40)]
    write_jsonl(corpus / "a.jsonl", make_rows(texts, prefix="c"))
    fresh = write_jsonl(tmp_path / "fresh" / "d.jsonl",
                        make_rows([f"Entirely new item {i}: weather, markets and sport {i * 7}." for i in range(20)],
                                  prefix="n"))
    copies = write_jsonl(tmp_path / "copies" / "d.jsonl", make_rows(texts[:10] + ["one new text"], prefix="k"))
    env = {"INDEX_STAGES": "exact,fuzzy" if stage_available("fuzzy") else "exact"}
    index = tmp_path / "index"
    p = bash(EXAMPLES / "ci" / "dedup-gate.sh", str(corpus), str(fresh.parent), str(index), str(tmp_path / "o1"),
             env=env)
    assert p.returncode == 0, p.stderr
    assert index.exists()
    p = bash(EXAMPLES / "ci" / "dedup-gate.sh", str(corpus), str(copies.parent), str(index), str(tmp_path / "o2"),
             env=env)
    assert p.returncode == 3, p.stderr
    assert "dedup gate:" in p.stderr
    m = read_manifest(tmp_path / "o2")
    assert sum(not r["keep"] for r in m) == 10
