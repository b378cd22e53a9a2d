"""dedupkit.cli.options: the worker pool prestarted for --workers on a big input is used by the
run (same manifest as one worker) and stopped cleanly when the command fails before using it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support import run_subprocess


def _big(path, rows: int = 6_000) -> None:
    """Over 8 MB (the prestart threshold): uncompressed random words, a tenth exact copies."""
    rng = np.random.default_rng(5)
    vocab = np.array([f"word{i}" for i in range(5000)])
    texts = [" ".join(rng.choice(vocab, 200)) for _ in range(rows)]
    for i in range(0, rows, 10):
        texts[i] = texts[i // 2]
    pq.write_table(pa.table({"text": texts}), path, compression="none")
    assert path.stat().st_size > 8 * 2**20


@pytest.mark.slow
def test_prestarted_workers_run_and_stop(tmp_path):
    inp = tmp_path / "big.parquet"
    _big(inp)
    # fuzzy: prestarted from 8 MB (exact only from 400 MB: its scan is too cheap to gain below that)
    one = run_subprocess("fuzzy", str(inp), "-o", str(tmp_path / "w1"), "--workers", "1", "-q")
    two = run_subprocess("fuzzy", str(inp), "-o", str(tmp_path / "w2"), "--workers", "2", "-q")
    assert one.returncode == 0 and two.returncode == 0, (one.stderr, two.stderr)
    parts = sorted(p.name for p in (tmp_path / "w1" / "manifest").glob("*.parquet"))
    w1, w2 = tmp_path / "w1" / "manifest", tmp_path / "w2" / "manifest"
    assert parts and all((w1 / n).read_bytes() == (w2 / n).read_bytes() for n in parts)
    # a command that fails after the pool was started: one clean line, no worker traceback
    bad = run_subprocess("fuzzy", str(inp), "-o", str(tmp_path / "w3"), "--workers", "2", "--text-column", "nope")
    assert bad.returncode == 1 and "column 'nope' not found" in bad.stderr
    assert "Traceback" not in bad.stderr and bad.stderr.strip().count("\n") == 0, bad.stderr


def test_an_error_raised_while_a_ctrl_c_unwinds_is_reported_as_the_interrupt():
    """An OutputError whose cause chain holds a KeyboardInterrupt (a cleanup failing after Ctrl-C)
    exits 130 with the resume line; the same error without one keeps its own message and code."""
    import click
    from click.testing import CliRunner

    from dedupkit.cli.options import handle_errors
    from dedupkit.errors import OutputError

    def failing(interrupted: bool):
        @click.command()
        @handle_errors
        def cmd():
            try:
                if interrupted:
                    raise KeyboardInterrupt
                raise OSError(9, "Bad file descriptor")
            except BaseException as first:
                try:
                    raise OSError(9, "Bad file descriptor") from (first if interrupted else None)
                except OSError as exc:
                    raise OutputError("I/O error while writing out (Bad file descriptor)") from exc
        return cmd

    r = CliRunner().invoke(failing(True), [])
    assert r.exit_code == 130 and "Interrupted; rerun the same command to resume." in r.output
    assert "I/O error" not in r.output
    r = CliRunner().invoke(failing(False), [])
    assert r.exit_code == OutputError("x").exit_code and "Error: I/O error while writing out" in r.output


@pytest.mark.slow
@pytest.mark.ray
def test_run_on_a_prestarted_ray_instance_keeps_it_for_every_stage(tmp_path):
    """``run --engine ray`` opens one engine per stage on the instance the CLI prestarted: it must
    not stop with the first stage's engine (other commands stop it with their one engine)."""
    pytest.importorskip("ray")
    inp = tmp_path / "docs.parquet"
    rng = np.random.default_rng(8)
    vocab = np.array([f"w{i}" for i in range(800)])
    texts = [" ".join(rng.choice(vocab, 60)) for _ in range(300)]
    texts += texts[:30] + [t.replace(t.split()[3], "changed", 1) for t in texts[30:60]]
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(len(texts))], "text": texts}), inp)
    args = ["run", str(inp), "--stages", "exact,fuzzy", "--id-column", "id", "-q"]
    local = run_subprocess(*args, "-o", str(tmp_path / "local"))
    assert local.returncode == 0, local.stderr
    import shutil
    import tempfile

    ray_tmp = tempfile.mkdtemp(prefix="dk-ray-", dir="/tmp")  # short: Ray's socket paths live there
    try:
        on_ray = run_subprocess(*args, "-o", str(tmp_path / "ray"), "--engine", "ray", "--workers", "2",
                                env={"RAY_ADDRESS": "", "DEDUPKIT_RAY_ADDRESS": "", "RAY_TMPDIR": ray_tmp})
        assert on_ray.returncode == 0, on_ray.stderr[-3000:]
        sessions = list(Path(ray_tmp).glob("ray/session_2*")) or list(Path(ray_tmp).glob("session_2*"))
        assert len(sessions) == 1, sessions  # one instance for both stages, not one per stage
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    for part in ("manifest", "01-exact/manifest", "02-fuzzy/manifest"):
        a = pq.read_table(tmp_path / "local" / part).sort_by("doc_id")
        b = pq.read_table(tmp_path / "ray" / part).sort_by("doc_id")
        assert a.equals(b), part
    dropped = pq.read_table(tmp_path / "ray" / "manifest").column("keep").to_pylist().count(False)
    assert dropped >= 60  # 30 copies and 30 near copies


@pytest.mark.parametrize("shards", [1, 2])
def test_apply_prestarts_a_pool_only_for_two_shards_or_more(tmp_path, shards):
    """apply on the local engine runs a single shard in its own process: a --workers pool started
    for it would cost its start-up and go unused."""
    import click

    from dedupkit.cli import options
    from dedupkit.engine import local

    d = tmp_path / "in"
    d.mkdir()
    for i in range(shards):
        _big(d / f"part{i}.parquet")
    kwargs = {"workers": 2, "inputs": (str(d),), "output": str(tmp_path / "clean"), "engine": None}
    with click.Context(click.Command("apply"), info_name="apply"):
        options._prestart_workers(kwargs)
    try:
        assert (local._warm is not None) == (shards > 1)
    finally:
        local.discard_prestarted()
