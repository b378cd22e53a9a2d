"""dedupkit.atomic: a file is complete under its final name, or absent; no temporary file stays."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from dedupkit.atomic import atomic_open, atomic_write, fsync_dir, temp_name


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "summary.json"
    p.write_text("old")
    atomic_write(p, '{"new": true}', sync_dir=True)
    assert p.read_text() == '{"new": true}'
    assert sorted(x.name for x in tmp_path.iterdir()) == ["summary.json"]


def test_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    p = tmp_path / "part-00000.parquet"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_open(p) as fh:
            fh.write(b"half")
            raise RuntimeError("disk on fire")
    assert p.read_bytes() == b"old"
    assert [x.name for x in tmp_path.iterdir()] == ["part-00000.parquet"]


def test_temp_name_is_recognisable_hidden_and_per_thread(tmp_path):
    p = tmp_path / "analysis.json"
    t = temp_name(p)
    assert t.parent == tmp_path and t.name.startswith("analysis.json.tmp")
    assert temp_name(p, hidden=True).name.startswith(".analysis.json.tmp")
    names = []
    th = threading.Thread(target=lambda: names.append(temp_name(p)))
    th.start()
    th.join()
    assert names[0] != t  # two threads writing the same file never share a temporary name


def test_numpy_and_parquet_write_through_the_file_object(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pa.table({"a": [1, 2, 3]})
    pq.write_table(t, tmp_path / "direct.parquet", compression="zstd")
    with atomic_open(tmp_path / "atomic.parquet") as fh:
        pq.write_table(t, fh, compression="zstd")
    # the same bytes as a write to the path: manifests stay byte-identical
    assert (tmp_path / "atomic.parquet").read_bytes() == (tmp_path / "direct.parquet").read_bytes()
    (tmp_path / "direct.parquet").unlink()
    (tmp_path / "atomic.parquet").unlink()
    p = tmp_path / "sig.npy"
    with atomic_open(p, sync=False) as fh:
        np.save(fh, np.arange(5))
    assert np.load(p).tolist() == [0, 1, 2, 3, 4]
    assert [x.name for x in tmp_path.iterdir()] == ["sig.npy"]


def test_fsync_dir_of_missing_folder_is_skipped(tmp_path):
    fsync_dir(tmp_path / "nope")  # nothing to flush: no error
    fsync_dir(tmp_path)
    assert os.path.isdir(tmp_path)
