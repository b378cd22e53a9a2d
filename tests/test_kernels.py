"""The kernels are chosen once (dedupkit.kernels): C and Python give the same manifests, and every
run says which ran."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dedupkit import kernels
from dedupkit.errors import ConfigError
from tests.support import write_jsonl, write_parquet

C_BUILT = kernels.speedups is not None and kernels.substring is not None and kernels.decon is not None


def _dedupkit(*args: str, kernels_env: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != kernels.ENV}
    if kernels_env is not None:
        env[kernels.ENV] = kernels_env
    return subprocess.run([sys.executable, "-m", "dedupkit", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)


def _corpus(tmp_path: Path) -> Path:
    base = ("the committee met on tuesday to discuss the budget for the coming year and agreed to "
            "raise the allocation for the library by ten percent while the parks stay the same")
    texts = [base, base, base.replace("tuesday", "wednesday"), base + " ünïcödé tail words",
             "a different document about rivers and the sea with its own words entirely here",
             "  " + base.upper() + "  ", "short", "", "日本語の文書 " * 12, base.replace("library", "museum")]
    d = tmp_path / "data"
    write_parquet(d / "a.parquet", [{"text": t, "id": f"a{i}"} for i, t in enumerate(texts)])
    write_jsonl(d / "b.jsonl", [{"text": t[::-1] if i % 3 else t, "id": f"b{i}"} for i, t in enumerate(texts)])
    return d


def _parts(out: Path, sub: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / sub).glob("*.parquet"))}


def test_version_names_the_kernels():
    auto = _dedupkit("--version")
    assert auto.returncode == 0 and auto.stdout.splitlines()[0].startswith("dedupkit, version ")
    assert auto.stdout.splitlines()[1] == ("kernels: c" if C_BUILT else auto.stdout.splitlines()[1])
    forced = _dedupkit("--version", kernels_env="python")
    assert forced.stdout.splitlines()[1] == "kernels: python (forced by DEDUPKIT_KERNELS)"
    bad = _dedupkit("--version", kernels_env="fast")
    assert "DEDUPKIT_KERNELS='fast': expected auto, c or python" in bad.stdout


def test_bad_or_unmet_choice_is_a_config_error():
    with pytest.raises(ConfigError, match="expected auto, c or python"):
        kernels.use("fastest")
    with kernels.forced("python"):
        assert kernels.describe() == {"mode": "python", "requested": "python", "c": [],
                                      "python": ["_speedups", "_substring", "_decon"]}
    assert kernels.describe()["mode"] == ("c" if C_BUILT else kernels.describe()["mode"])


@pytest.mark.slow
@pytest.mark.skipif(not C_BUILT, reason="the C extensions are not built in this install")
@pytest.mark.parametrize("argv", [
    ["exact", "--normalize", "nfkc,lower,punctuation,whitespace"],
    ["fuzzy", "--threshold", "0.5", "--measure", "jaccard,containment,char", "--containment-min", "3"],
    ["substring", "--min-tokens", "4"],
], ids=lambda a: a[0])
def test_c_and_python_kernels_give_the_same_manifest(tmp_path, argv):
    data = _corpus(tmp_path)
    outs = {}
    for mode in ("c", "python"):
        out = tmp_path / f"out-{mode}"
        p = _dedupkit(*argv, str(data), "-o", str(out), "--id-column", "id", "-q", "--workers", "2",
                      kernels_env=mode)
        assert p.returncode == 0, p.stderr
        summary = json.loads((out / "summary.json").read_text())
        assert summary["kernels"]["mode"] == mode and summary["kernels"]["requested"] == mode
        outs[mode] = out
    c, py = _parts(outs["c"], "manifest"), _parts(outs["python"], "manifest")
    assert c and c == py
    assert _parts(outs["c"], "spans") == _parts(outs["python"], "spans")
    rows = pq.read_table(outs["c"] / "manifest").num_rows
    assert rows == 20
    if argv[0] != "substring":
        assert not pq.read_table(outs["c"] / "manifest").column("keep").to_pylist() == [True] * rows


@pytest.mark.slow
@pytest.mark.skipif(not C_BUILT, reason="the C extensions are not built in this install")
def test_decontaminate_c_and_python_kernels_agree(tmp_path):
    data = _corpus(tmp_path)
    evals = tmp_path / "eval.jsonl"
    write_jsonl(evals, [{"question": "the committee met on tuesday to discuss the budget for the coming year "
                                     "and agreed to raise the allocation", "id": "q1"}])
    outs = []
    for mode in ("c", "python"):
        out = tmp_path / f"d-{mode}"
        p = _dedupkit("decontaminate", str(data), "--against", f"ev={evals}", "-o", str(out), "--id-column", "id",
                      "-q", kernels_env=mode)
        assert p.returncode == 0, p.stderr
        outs.append(out)
    assert _parts(outs[0], "manifest") == _parts(outs[1], "manifest")
    assert pq.read_table(outs[0] / "manifest").column("keep").to_pylist().count(False) >= 3
