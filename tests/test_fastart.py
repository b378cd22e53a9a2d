"""dedupkit.fastart: pyarrow's probe for pandas, answered "absent" for dedupkit's calls only."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

# the CLI installs the hook; its stage's own pyarrow calls must not import pandas; code that is not
# dedupkit's still gets pandas, and pyarrow's to_pandas works afterwards
SCRIPT = r"""
import sys
from dedupkit.cli.main import main
sys.argv = ["dedupkit", "{stage}", sys.argv[1], "-o", sys.argv[2], "-q", "--workers", "{workers}"]
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
print("after dedupkit:", "pandas" in sys.modules)
import pyarrow as pa
t = pa.table({{"a": [1, 2]}})
df = t.to_pandas()
print("imported:", "pandas" in sys.modules, type(df).__name__)
"""


@pytest.mark.parametrize("stage,workers", [("exact", 1), ("fuzzy", 1), ("exact", 2)])
def test_cli_run_does_not_import_pandas_others_can(tmp_path, stage, workers):
    pytest.importorskip("pandas")
    inp = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": [f"doc {i % 7} words here and there" for i in range(50)]}), inp)
    script = SCRIPT.format(stage=stage, workers=workers)
    out = subprocess.run([sys.executable, "-c", script, str(inp), str(tmp_path / "o")], capture_output=True,
                         text=True, check=True).stdout
    assert "after dedupkit: False" in out
    assert "imported: True DataFrame" in out
    # the check can fail: without the hook the same run imports pandas
    bare = script.replace("from dedupkit.cli.main import main", "from dedupkit.cli.main import main\n"
                          "import dedupkit.fastart as f; f.skip_pandas_probe = lambda: None")
    out = subprocess.run([sys.executable, "-c", bare, str(inp), str(tmp_path / "o2")], capture_output=True,
                         text=True, check=True).stdout
    assert "after dedupkit: True" in out


BLAS_SCRIPT = r"""
import os, sys
from dedupkit.cli.main import main
sys.argv = ["dedupkit", "exact", sys.argv[1], "-o", sys.argv[2], "-q"]
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
print("numpy loaded:", "numpy" in sys.modules, "timeout:", os.environ.get("OPENBLAS_THREAD_TIMEOUT"))
"""


@pytest.mark.parametrize("preset", [None, "12"])
def test_cli_tells_openblas_threads_to_sleep_before_numpy_loads(tmp_path, preset):
    """OpenBLAS reads OPENBLAS_THREAD_TIMEOUT when numpy loads: the CLI sets it first (a user's own
    value is kept), and a library caller's process is left alone."""
    import os

    inp = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": [f"doc {i % 7}" for i in range(20)]}), inp)
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if preset:
        env["OPENBLAS_THREAD_TIMEOUT"] = preset
    out = subprocess.run([sys.executable, "-c", BLAS_SCRIPT, str(inp), str(tmp_path / "o")], capture_output=True,
                         text=True, check=True, env=env).stdout
    assert f"numpy loaded: True timeout: {preset or '4'}" in out
    lib = subprocess.run([sys.executable, "-c", "import os, dedupkit.runner; "
                          "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))"],
                         capture_output=True, text=True, check=True, env=env).stdout
    assert lib.strip() == (preset or "None")
