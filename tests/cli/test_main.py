"""The ``dedupkit`` program's own exit (cli.main.entry / exit_now): no interpreter teardown, but
everything a normal exit does first still happens."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

# A script that runs the program as the console script does, with an atexit handler and a
# non-daemon thread of its own that a normal exit would wait for.
SCRIPT = r"""
import atexit, sys, threading, time
from dedupkit.cli.main import entry
atexit.register(lambda: print("atexit ran", flush=False))
done = []
def late():
    time.sleep(0.3)
    done.append(1)
    print("thread finished", flush=False)
threading.Thread(target=late).start()
print("buffered before the command", end="; ", flush=False)
sys.argv = ["dedupkit", *sys.argv[1:]]
entry()
print("never printed: entry() ends the process")
"""


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": [f"doc {i % 5} with a few words in it" for i in range(40)]}), path)
    return path


@pytest.mark.parametrize("args,status", [
    (["exact", "{data}", "-o", "{out}", "-q"], 0),
    (["fuzzy", "{data}", "-o", "{out}", "-q", "--workers", "2"], 0),
    (["exact", "{missing}", "-o", "{out}"], 1),  # a dedupkit error
    (["exact", "--no-such-option"], 2),  # a usage error
    (["--help"], 0),
])
def test_entry_exits_with_the_command_s_status_after_threads_atexit_and_flush(tmp_path, data, args, status):
    argv = [a.format(data=data, out=tmp_path / "out", missing=tmp_path / "missing.parquet") for a in args]
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == status, proc.stderr
    out = proc.stdout
    assert out.startswith("buffered before the command; ")
    # the thread was joined before the atexit handlers ran, as in a normal exit; nothing after entry()
    assert out.index("thread finished") < out.index("atexit ran")
    assert "never printed" not in out
    if status == 0 and args[0] != "--help":
        assert str(tmp_path / "out") in out  # the command's own result line, flushed
        assert (tmp_path / "out" / "summary.json").is_file()
    if status == 1:
        assert "Error:" in proc.stderr and "missing.parquet" in proc.stderr


def test_main_itself_still_raises_system_exit(tmp_path, data):
    # callers that run the CLI in their own process (tests, notebooks) get SystemExit as before
    code = ("import sys\nfrom dedupkit.cli.main import main\nsys.argv = ['dedupkit', 'exact', sys.argv[1], '-o', "
            "sys.argv[2], '-q']\ntry:\n    main()\nexcept SystemExit as exc:\n    print('exit', exc.code)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(data), str(tmp_path / "o")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("exit 0")
