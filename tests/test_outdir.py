"""dedupkit.outdir: one OutputDir for stage and `dedupkit run` folders (RunDir), same rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from dedupkit.errors import ConfigError, OutputError
from dedupkit.outdir import MANIFEST_TMP, RUN_STATE, OutputDir, RunDir
from dedupkit.ownership import LOCK, RECORD


def _finished_stage(folder):
    folder.mkdir(parents=True)
    (folder / RECORD).write_text(json.dumps({"dedupkit": "output", "kind": "stage"}))
    (folder / "manifest").mkdir()
    (folder / "summary.json").write_text(json.dumps({"dedupkit": "0", "stage": "exact", "complete": True}))


def test_run_dir_removes_what_a_killed_run_left_and_nothing_else(tmp_path):
    out = tmp_path / "run"
    with RunDir(out):
        pass
    assert sorted(p.name for p in out.iterdir()) == [RECORD]  # pipeline.json: created, never written
    _finished_stage(out / "01-exact")
    left = [f"summary.json.tmp{os.getpid()}.1", f"{RUN_STATE}.tmp99.2"]
    for name in left:
        (out / name).write_text("half")
    (out / MANIFEST_TMP).mkdir()
    (out / MANIFEST_TMP / "part-00000.parquet").write_bytes(b"half")
    with RunDir(out) as od:
        assert sorted(p.name for p in od.stage_dirs()) == ["01-exact"]
        assert not any((out / n).exists() for n in left) and not (out / MANIFEST_TMP).exists()
        assert (out / LOCK).exists()
    assert (out / "01-exact" / "summary.json").exists()  # a stage folder is dedupkit's: kept
    assert not (out / LOCK).exists()


@pytest.mark.parametrize("foreign", ["notes.txt", "02-fuzzy"])
def test_run_dir_refuses_what_dedupkit_did_not_write(tmp_path, foreign):
    out = tmp_path / "run"
    with RunDir(out):
        pass
    p = out / foreign
    if foreign.endswith(".txt"):
        p.write_text("mine")
    else:
        p.mkdir()  # named like a stage folder, but no dedupkit output in it
    with pytest.raises(OutputError, match="already holds other files"):
        RunDir(out).check_early()
    with pytest.raises(OutputError, match="already holds other files"):
        with RunDir(out):
            pass
    assert p.exists()


def test_run_dir_refuses_a_stage_folder_and_a_stage_dir_refuses_a_run(tmp_path):
    stage = tmp_path / "stage"
    _finished_stage(stage)
    with pytest.raises(OutputError, match="single `dedupkit exact`"):
        RunDir(stage).check_early()
    run = tmp_path / "run"
    with RunDir(run):
        pass
    with pytest.raises(OutputError, match="not written by this version"):
        with OutputDir(run):
            pass


def test_failed_run_keeps_no_half_written_manifest(tmp_path):
    out = tmp_path / "run"
    with RunDir(out):
        pass
    with pytest.raises(RuntimeError):
        with RunDir(out) as od:
            tmp = od.manifest_tmp()
            (tmp / "part-00000.parquet").write_bytes(b"half")
            raise RuntimeError("killed")
    assert not (out / MANIFEST_TMP).exists() and not (out / "summary.json").exists()


def test_a_final_failure_removes_everything_the_run_created(tmp_path):
    out = tmp_path / "a" / "run"
    with pytest.raises(ConfigError):
        with RunDir(out):
            raise ConfigError("bad setting")
    assert not (tmp_path / "a").exists()  # the folders it made go too


HOLD = textwrap.dedent("""
    import sys
    from dedupkit.outdir import RunDir
    with RunDir(sys.argv[1]):
        print("held", flush=True)
        sys.stdin.readline()
""")


def test_second_writer_of_a_run_folder_is_refused_with_the_holder(tmp_path):
    out = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        with pytest.raises(OutputError, match=f"being written by another dedupkit run \\(pid {p.pid}\\)"):
            with RunDir(out):
                pass
    finally:
        p.communicate("\n", timeout=60)
    with RunDir(out):  # free again
        pass


def _remove_txt(folder):
    """A remove_old that deletes only *.txt (dedupkit's own files, for the test), then the folder if empty."""
    for p in folder.iterdir():
        if p.suffix == ".txt":
            p.unlink()
    try:
        folder.rmdir()
    except OSError:
        pass


def test_swap_folder_puts_the_new_folder_in_place_and_keeps_what_is_not_ours(tmp_path):
    from dedupkit.outdir import swap_folder

    final, new, old = tmp_path / "final", tmp_path / "new", tmp_path / ".final.old"
    final.mkdir()
    (final / "a.txt").write_text("old")
    (final / "notes.md").write_text("not ours")
    new.mkdir()
    (new / "a.txt").write_text("new")
    old.mkdir()  # a killed swap's leftover: removed first, or the rename aside would fail
    (old / "b.txt").write_text("leftover")
    swap_folder(new, final, old, _remove_txt)
    assert (final / "a.txt").read_text() == "new" and not new.exists()
    assert sorted(p.name for p in old.iterdir()) == ["notes.md"]  # only our files of the old folder went
    swap_folder(None, final, tmp_path / ".final.old2", _remove_txt)  # no new folder: the old one goes
    assert not final.exists() and not (tmp_path / ".final.old2").exists()


def test_swap_folder_moves_a_link_aside_only_when_asked(tmp_path):
    from dedupkit.outdir import swap_folder

    target = tmp_path / "target"
    target.mkdir()
    (target / "a.txt").write_text("must survive")
    final = tmp_path / "final"
    final.symlink_to(target)
    new = tmp_path / "new"
    new.mkdir()
    with pytest.raises(OSError):  # a link is never followed or replaced unless links=True
        swap_folder(new, final, tmp_path / ".old", _remove_txt)
    assert final.is_symlink() and new.is_dir()
    swap_folder(new, final, tmp_path / ".old", lambda p: p.unlink(), links=True)
    assert final.is_dir() and not final.is_symlink() and (target / "a.txt").read_text() == "must survive"
