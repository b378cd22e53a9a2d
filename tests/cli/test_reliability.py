"""Concurrency, disk full and determinism.

- Two runs on one output folder: the second is refused by the lock, the first finishes intact.
- ``apply`` refuses manifests made from other shards, changed shards, unfinished runs, and a second
  ``apply`` into the same folder.
- A run on a tiny filesystem (a tmpfs the test mounts; skipped where mounting is not allowed)
  fails with a clear error and leaves nothing complete-looking; after space is freed the same
  command resumes and the result equals a clean run's.
- Manifests are byte-identical across reruns, worker counts, batch sizes, scan-task splits and
  the order of INPUT arguments.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.support import SRC, run_subprocess, write_jsonl, write_parquet
from dedupkit.cli.main import cli
from dedupkit.io.read import ReadSpec
from dedupkit.outdir import OutputDir
from dedupkit.runner import RunOptions, run_stage
from dedupkit.stages.exact import ExactStage
from tests.cli.test_crash_resume import make_crash_corpus


def _invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def manifest_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "manifest").iterdir())}


def small_corpus(d: Path, n: int = 400) -> Path:
    texts = [f"text {i % 37} with some words" for i in range(n)]
    write_parquet(d / "b.parquet", [{"id": f"b{i}", "text": t} for i, t in enumerate(texts)], row_group_size=50)
    write_jsonl(d / "a.jsonl", [{"id": f"a{i}", "text": t} for i, t in enumerate(reversed(texts))])
    write_jsonl(d / "c" / "c.jsonl", [{"id": f"c{i}", "text": t.upper()} for i, t in enumerate(texts[:100])])
    return d


# -- concurrency ----------------------------------------------------------------------------------
def test_second_run_on_same_output_is_refused(tmp_path):
    d = small_corpus(tmp_path / "data")
    out = tmp_path / "out"
    with OutputDir(out):  # another run holds the folder
        res = _invoke("exact", str(d), "-o", str(out), "-q")
        assert res.exit_code == 1
        assert "is being written by another dedupkit run (pid " in res.output
        assert "wait for it to finish or choose another -o" in res.output
        res = _invoke("exact", str(d), "-o", str(out), "-q", "--overwrite")
        assert res.exit_code == 1 and "another dedupkit run" in res.output
    assert not (out / "summary.json").exists()
    res = _invoke("exact", str(d), "-o", str(out), "-q")  # the lock is free again
    assert res.exit_code == 0, res.output


def test_concurrent_runs_do_not_corrupt_each_other(tmp_path):
    """A real second process starts while the first is writing: refused, and the first's
    manifest equals an undisturbed run's."""
    d = tmp_path / "data"
    make_crash_corpus(d, rows_per_shard=8000)
    clean = tmp_path / "clean"
    assert run_subprocess("exact", str(d), "-o", str(clean), "-q", "--on-bad-record", "skip").returncode == 0
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    first = subprocess.Popen([sys.executable, "-m", "dedupkit", "exact", str(d), "-o", str(out), "-q",
                              "--on-bad-record", "skip"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lock = out / ".dedupkit.lock"
        deadline = time.time() + 60
        while not (lock.exists() and lock.read_text().startswith("pid ")) and first.poll() is None:
            assert time.time() < deadline
            time.sleep(0.005)
        running = first.poll() is None
        second = run_subprocess("exact", str(d), "-o", str(out), "-q", "--on-bad-record", "skip", "--overwrite")
    finally:
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    if running and second.returncode != 0:
        assert second.returncode == 1
        assert "being written by another dedupkit run" in second.stderr
    else:  # the first run was already done: the second replaced it with --overwrite
        assert second.returncode == 0, second.stderr
    assert manifest_bytes(out) == manifest_bytes(clean)
    assert running, "the first run finished before the second started; make the corpus bigger"


# -- apply ------------------------------------------------------------------------------------------
def test_apply_refuses_foreign_changed_and_unfinished_manifests(tmp_path):
    d1 = small_corpus(tmp_path / "one")
    d2 = tmp_path / "two"
    write_parquet(d2 / "z.parquet", [{"text": "a"}, {"text": "b"}])
    m1 = tmp_path / "m1"
    assert _invoke("exact", str(d1), "-o", str(m1), "-q").exit_code == 0
    res = _invoke("apply", str(d2), "--manifest", str(m1), "-o", str(tmp_path / "clean"))
    assert res.exit_code == 1
    assert "z.parquet is not in manifest" in res.output and "made from other shards" in res.output
    assert not (tmp_path / "clean").exists()
    # a shard that changed since the manifest was made
    with open(d1 / "a.jsonl", "a") as fh:
        fh.write('{"id": "new", "text": "appended later"}\n')
    res = _invoke("apply", str(d1), "--manifest", str(m1), "-o", str(tmp_path / "clean"))
    assert res.exit_code == 1 and "a.jsonl changed since manifest" in res.output
    assert not (tmp_path / "clean").exists()
    assert not list(tmp_path.glob(".clean.dedupkit*"))
    # an unfinished run (killed before its summary was written)
    (m1 / "summary.json").unlink()
    res = _invoke("apply", str(d2), "--manifest", str(m1), "-o", str(tmp_path / "clean"))
    assert res.exit_code == 1 and "holds no finished run" in res.output


def test_second_apply_into_same_output_is_refused(tmp_path):
    d = small_corpus(tmp_path / "data")
    m = tmp_path / "m"
    assert _invoke("exact", str(d), "-o", str(m), "-q").exit_code == 0
    out = tmp_path / "clean"
    import fcntl

    busy = tmp_path / ".clean.dedupkit-apply"
    busy.mkdir()
    fd = os.open(busy, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        res = _invoke("apply", str(d), "--manifest", str(m), "-o", str(out))
        assert res.exit_code == 1 and "another dedupkit apply is writing" in res.output
    finally:
        os.close(fd)
    (busy / "half-written.parquet").write_bytes(b"PAR1")  # what a killed apply leaves
    res = _invoke("apply", str(d), "--manifest", str(m), "-o", str(out))
    assert res.exit_code == 0, res.output
    assert not busy.exists() and not (out / "half-written.parquet").exists()
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == \
        ["_dedupkit_apply.json", "a.jsonl", "b.parquet", "c.jsonl"]


def test_apply_overwrite_swaps_whole_folders(tmp_path):
    d = small_corpus(tmp_path / "data")
    m = tmp_path / "m"
    assert _invoke("exact", str(d), "-o", str(m), "-q").exit_code == 0
    out = tmp_path / "clean"
    assert _invoke("apply", str(d), "--manifest", str(m), "-o", str(out)).exit_code == 0
    first = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    res = _invoke("apply", str(d), "--manifest", str(m), "-o", str(out))
    assert res.exit_code == 1 and "already exists; pass --overwrite" in res.output
    assert _invoke("apply", str(d), "--manifest", str(m), "-o", str(out), "--overwrite").exit_code == 0
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean", "data", "m"]


# -- disk full ----------------------------------------------------------------------------------
@pytest.fixture
def tiny_fs(tmp_path):
    """A tmpfs of a chosen size, mounted by the test (root only); yields (path, remount)."""
    mnt = tmp_path / f"fs-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8); disk-full behaviour not tested here")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({p.stderr.strip()}); disk-full behaviour not tested")

    def remount(size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(mnt)], check=True)

    try:
        yield mnt, remount
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _no_partial_files(root: Path) -> list[str]:
    """Temporary files and finished-looking top-level output left on a full disk."""
    return [str(p.relative_to(root)) for p in root.rglob("*")
            if ".tmp" in p.name or p == root / "summary.json"]


DISK_FULL_COMMANDS = {"exact": ["exact"], "run": ["run", "--stages", "exact"]}


@pytest.mark.parametrize("command", list(DISK_FULL_COMMANDS))
def test_disk_full_fails_cleanly_and_resumes(tmp_path, tiny_fs, command):
    mnt, remount = tiny_fs
    d = tmp_path / "data"
    make_crash_corpus(d, rows_per_shard=3000)
    cmd = DISK_FULL_COMMANDS[command]

    def _invoke(*args):  # noqa: F811 - the command under test, same arguments
        return CliRunner().invoke(cli, [cmd[0], args[1], *cmd[1:], *args[2:]], catch_exceptions=False)

    clean = tmp_path / "clean"
    assert _invoke("exact", str(d), "-o", str(clean), "-q", "--on-bad-record", "skip").exit_code == 0
    need = sum(p.stat().st_size for p in clean.rglob("*") if p.is_file())
    # Sizes from "nothing fits" to "the scan fits but not the manifest": each run either fails with
    # the disk-full error and leaves nothing complete, or (when it fits) equals the clean run.
    failures = 0
    for size in ("16k", "64k", "256k", f"{need // 1024 + 64}k", f"{need * 2 // 1024}k"):
        remount(size)
        out = mnt / "out"
        res = _invoke("exact", str(d), "-o", str(out), "-q", "--on-bad-record", "skip")
        if res.exit_code == 0:
            assert manifest_bytes(out) == manifest_bytes(clean)
            shutil.rmtree(out)
            continue
        failures += 1
        assert res.exit_code == 1, res.output
        assert "Error: no space left on the device while writing" in res.output, res.output
        assert "Traceback" not in res.output
        if out.exists():
            assert _no_partial_files(out) == [], _no_partial_files(out)
            assert not (out / "summary.json").exists()
        # free space: the same command resumes and finishes
        remount("64m")
        res = _invoke("exact", str(d), "-o", str(out), "-q", "--on-bad-record", "skip")
        assert res.exit_code == 0, res.output
        assert manifest_bytes(out) == manifest_bytes(clean)
        assert not (out / ".work").exists()
        shutil.rmtree(out)
    assert failures >= 3


def test_apply_disk_full(tmp_path, tiny_fs):
    mnt, remount = tiny_fs
    d = tmp_path / "data"
    make_crash_corpus(d, rows_per_shard=3000)
    m = tmp_path / "m"
    assert _invoke("exact", str(d), "-o", str(m), "-q", "--on-bad-record", "skip").exit_code == 0
    remount("256k")
    res = _invoke("apply", str(d), "--manifest", str(m), "-o", str(mnt / "clean"))
    assert res.exit_code == 1 and "Error: no space left on the device" in res.output, res.output
    assert list(mnt.iterdir()) == [], "apply left files behind on the full disk"


# -- determinism ---------------------------------------------------------------------------------
def test_manifest_bytes_do_not_depend_on_workers_batches_splits_or_input_order(tmp_path):
    d = tmp_path / "data"
    make_crash_corpus(d, rows_per_shard=2500)
    files = sorted(str(p) for p in d.iterdir())
    variants = {
        "base": (files, 8192, 1, 1_000_000),
        "rerun": (files, 8192, 1, 1_000_000),
        "workers2": (files, 8192, 2, 1_000_000),
        "batch7": (files, 7, 1, 1_000_000),
        "batch1000-workers2": (files, 1000, 2, 1_000_000),
        "split-row-groups": (files, 8192, 2, 4000),
        "reversed-inputs": (files[::-1], 8192, 1, 1_000_000),
        "shuffled-inputs": (files[2:] + files[:2], 333, 1, 4000),
    }
    got = {}
    for name, (inputs, batch, workers, split) in variants.items():
        out = tmp_path / name
        run_stage(ExactStage(), inputs, out,
                  ReadSpec(text_column="text", id_column="id", batch_size=batch, on_bad_record="skip"),
                  RunOptions(workers=workers, split_rows=split))
        got[name] = manifest_bytes(out)
    assert all(got[name] == got["base"] for name in got), [n for n in got if got[n] != got["base"]]
    summary = json.loads((tmp_path / "split-row-groups" / "summary.json").read_text())
    assert summary["counts"]["rows"] == 6 * 2500


def test_cli_manifest_identical_for_folder_and_glob_order(tmp_path):
    d = small_corpus(tmp_path / "data")
    a = _invoke("exact", str(d / "c"), str(d / "b.parquet"), str(d / "a.jsonl"), "-o", str(tmp_path / "x"), "-q")
    b = _invoke("exact", str(d / "a.jsonl"), str(d / "c"), str(d / "b.parquet"), "-o", str(tmp_path / "y"), "-q",
                "--workers", "2", "--batch-size", "64")
    assert a.exit_code == 0 and b.exit_code == 0
    assert manifest_bytes(tmp_path / "x") == manifest_bytes(tmp_path / "y")


# -- resume after the input changed -----------------------------------------------------------------
def _fixed_width_parquet(path: Path, texts: list[str]) -> None:
    # No compression, no dictionary: equal-length texts give a file of exactly the same size.
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": texts}), path, compression="none", use_dictionary=False,
                   row_group_size=100, write_statistics=False)


def test_resume_rescans_a_shard_rewritten_since_the_killed_run(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    shard = d / "a.parquet"
    old = [f"text {i:04d}" for i in range(400)]
    new = old[:300] + [f"text {i:04d}" for i in range(100)]  # the last 100 rows now repeat the first
    spec = ReadSpec(text_column="text")
    opts = RunOptions(keep_work=True, split_rows=100)  # four scan tasks over one shard
    _fixed_width_parquet(shard, old)
    size = shard.stat().st_size
    out = tmp_path / "out"
    run_stage(ExactStage(), [str(d)], out, spec, opts)
    (out / "summary.json").unlink()  # now it looks like a run killed just before finishing
    _fixed_width_parquet(shard, new)
    assert shard.stat().st_size == size
    res = run_stage(ExactStage(), [str(d)], out, spec, opts)
    assert res.summary["timings"]["reused_scan_tasks"] == 0
    clean = tmp_path / "clean"
    run_stage(ExactStage(), [str(d)], clean, spec, RunOptions(split_rows=100))
    assert manifest_bytes(out) == manifest_bytes(clean)
    assert res.summary["counts"]["dropped"] == 100


def test_guardrail_writes_nothing_final(tmp_path):
    d = tmp_path / "data"
    write_parquet(d / "a.parquet", [{"text": "same"}] * 10)
    out = tmp_path / "out"
    res = _invoke("exact", str(d), "-o", str(out), "-q", "--max-drop-rate", "0.5")
    assert res.exit_code == 4 and "would drop 9 of 10 rows" in res.output
    assert not (out / "summary.json").exists() and not (out / "manifest").exists()
    assert not (out / ".manifest.tmp").exists()
    res = _invoke("apply", str(d), "--manifest", str(out), "-o", str(tmp_path / "clean"))
    assert res.exit_code == 1 and "holds no finished run" in res.output


def test_skip_manifest_of_changed_shard_is_refused(tmp_path):
    d = small_corpus(tmp_path / "data")
    first = tmp_path / "first"
    assert _invoke("exact", str(d), "-o", str(first), "-q").exit_code == 0
    with open(d / "a.jsonl", "a") as fh:
        fh.write('{"id": "z", "text": "new row"}\n')
    res = _invoke("exact", str(d), "-o", str(tmp_path / "second"), "-q", "--skip", str(first))
    assert res.exit_code == 1 and "a.jsonl changed since that manifest was made" in res.output
    assert not (tmp_path / "second" / "summary.json").exists()


def test_run_disk_full_while_combining(tmp_path, tiny_fs):
    """The stages fit, the combined manifest does not: a clear error, nothing half-written."""
    mnt, remount = tiny_fs
    d = tmp_path / "data"
    make_crash_corpus(d, rows_per_shard=3000)
    remount("8m")
    out = mnt / "out"
    args = ["run", str(d), "--stages", "exact", "-o", str(out), "-q", "--on-bad-record", "skip"]
    assert _invoke(*args).exit_code == 0
    reference = manifest_bytes(out)
    shutil.rmtree(out / "manifest")
    (out / "summary.json").unlink()  # as if killed before combining; the stage is reused
    st = os.statvfs(mnt)
    filler = mnt / "filler"
    filler.write_bytes(b"\0" * (st.f_bavail * st.f_frsize - 40_000))
    res = _invoke(*args)
    assert res.exit_code == 1 and "Error: no space left on the device while writing" in res.output, res.output
    assert sorted(p.name for p in out.iterdir() if not p.name[:2].isdigit()) == [".dedupkit.json", "pipeline.json"]
    filler.unlink()
    assert _invoke(*args).exit_code == 0
    assert manifest_bytes(out) == reference


def test_second_run_command_on_same_output_is_refused(tmp_path):
    import fcntl

    d = small_corpus(tmp_path / "data")
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".dedupkit.lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        res = _invoke("run", str(d), "--stages", "exact", "-o", str(out), "-q")
    assert res.exit_code == 1 and "is being written by another dedupkit run" in res.output
    assert not (out / "summary.json").exists()


def test_write_error_messages_name_the_file_and_the_fix(tmp_path):
    import errno

    from dedupkit.ownership import write_error

    out = tmp_path / "out"
    full = write_error(OSError(errno.ENOSPC, "No space left on device", str(out / ".work" / "x")), out)
    assert "no space left on the device while writing" in str(full) and "rerun the same command" in str(full)
    short = write_error(OSError("6000 requested and 1520 written"), out)  # numpy's short write
    assert "no space left on the device" in str(short)
    gone = write_error(FileNotFoundError(errno.ENOENT, "No such file or directory", str(tmp_path / "a.parquet")), out)
    assert str(gone).startswith(f"I/O error on {tmp_path / 'a.parquet'} (No such file or directory)")
    ro = write_error(PermissionError(errno.EACCES, "Permission denied", str(out / "summary.json")), out)
    assert "choose an -o you can write to" in str(ro)
