"""dedupkit.locks: one writer at a time across processes, the holder named, no fcntl import."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from dedupkit.locks import LockFile

HOLD = textwrap.dedent("""
    import sys, time
    from dedupkit.locks import LockFile
    lock = LockFile(sys.argv[1], remove=sys.argv[2] == "1")
    assert lock.try_acquire("pid holder-" + sys.argv[2])
    print("held", flush=True)
    sys.stdin.readline()
    lock.release()
""")


def _holder(path, remove: bool):
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(path), "1" if remove else "0"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


@pytest.mark.parametrize("remove", [False, True])
def test_second_process_is_refused_and_sees_the_holder(tmp_path, remove):
    path = tmp_path / ".lock"
    p = _holder(path, remove)
    try:
        mine = LockFile(path, remove=remove)
        assert mine.is_locked()
        assert not mine.try_acquire("pid me")
        assert mine.holder() == f"pid holder-{1 if remove else 0}"  # the refusal did not wipe it
    finally:
        p.communicate("\n", timeout=60)
    assert path.exists() != remove  # remove=True leaves no trace
    mine = LockFile(path, remove=remove)
    assert not mine.is_locked()
    assert mine.try_acquire("pid me")
    mine.release()


def test_killed_holder_never_blocks_the_next(tmp_path):
    path = tmp_path / ".lock"
    p = _holder(path, False)
    p.kill()
    p.wait(timeout=60)
    lock = LockFile(path)
    assert lock.try_acquire(None)
    lock.release()


def test_remove_restores_a_stale_lock_file(tmp_path):
    path = tmp_path / ".lock"
    path.write_text("pid 999 (stale)")
    lock = LockFile(path, remove=True)
    assert lock.try_acquire(f"pid {os.getpid()}")
    assert path.read_text() == f"pid {os.getpid()}"
    lock.release()
    assert path.read_text() == "pid 999 (stale)"


def test_remove_never_opens_through_a_link(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (tmp_path / ".lock").symlink_to(target)
    with pytest.raises(OSError):
        LockFile(tmp_path / ".lock", remove=True).try_acquire("pid 1")
    assert target.read_text() == "keep me"


def test_dedupkit_imports_without_fcntl():
    # Every module that takes a lock imports without fcntl (as on Windows).
    code = ("import sys; sys.modules['fcntl'] = None\n"
            "import dedupkit.cli.main, dedupkit.ownership, dedupkit.outdir, dedupkit.apply, dedupkit.api, "
            "dedupkit.index.local, dedupkit.pipeline, dedupkit.locks\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
