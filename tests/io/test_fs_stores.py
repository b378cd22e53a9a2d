"""dedupkit.io.fs against real Azure Blob (Azurite) and GCS (gcp-storage-emulator) servers.

The same checks as the S3 tests (tests/io/test_fs.py) for az:// and gs://: a stage writing to the
store gives the local run's manifest files byte for byte; reading from it gives the same decisions;
``apply`` writes the local clean corpus's files byte for byte, marker last; the rerun rule holds;
and the store's secret (Azure's account key) appears in no file written and no output.
"""

from __future__ import annotations

import json

import pytest

from tests.io.store_fixtures import az_store, azurite_server, gcs_server, gs_store, store  # noqa: F401
from tests.io.test_fs import _cli, _corpus, _local_manifest, _renamed
from tests.support import run_subprocess


def _manifest(st, *parts):
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys = sorted(k for k in st.fs.find(st.key(*parts, "manifest")) if k.endswith(".parquet"))
    return pa.concat_tables([pq.read_table(st.fs.open(k, "rb")) for k in keys])


@pytest.mark.parametrize("stage", ["exact", "fuzzy"])
def test_stage_and_apply_round_trip(store, tmp_path, stage):
    d = _corpus(tmp_path)
    _cli(stage, d, "-o", tmp_path / "local")
    # local inputs, output on the store: the very same manifest files
    _cli(stage, d, "-o", store.url("out-l"))
    for p in sorted((tmp_path / "local" / "manifest").glob("*.parquet")):
        assert store.fs.cat_file(store.key("out-l", "manifest", p.name)) == p.read_bytes(), p.name
    # inputs and output on the store: equal once the shard names (the input as typed) are mapped
    store.upload(d, "data")
    _cli(stage, store.url("data"), "-o", store.url("out"))
    local = _local_manifest(tmp_path / "local")
    assert _renamed(_manifest(store, "out"), store.url("data"), str(d)).equals(local)
    summary = json.loads(store.fs.cat_file(store.key("out", "summary.json")))
    assert summary["complete"] and summary["inputs"][0]["path"] == store.url("data", "a.parquet")
    res = _cli(stage, store.url("data"), "-o", store.url("out"))
    assert "reused" in res.output or "up to date" in res.output
    # apply from the store to the store: the local clean corpus, file for file, marker present
    _cli("apply", d, "--manifest", tmp_path / "local", "-o", tmp_path / "clean")
    _cli("apply", store.url("data"), "--manifest", store.url("out"), "-o", store.url("clean"))
    files = [p for p in sorted((tmp_path / "clean").rglob("*")) if p.suffix in (".parquet", ".jsonl")]
    assert len(files) == 2
    for p in files:
        rel = p.relative_to(tmp_path / "clean").as_posix()
        assert store.fs.cat_file(store.key("clean", rel)) == p.read_bytes(), rel
    assert store.fs.exists(store.key("clean", "_dedupkit_apply.json"))
    res = _cli("apply", store.url("data"), "--manifest", store.url("out"), "-o", store.url("clean"), ok=False)
    assert res.exit_code == 1 and "--overwrite" in res.output


@pytest.mark.slow
def test_azure_key_never_written_or_printed(az_store, tmp_path):
    """Azure's account key (in AZURE_STORAGE_CONNECTION_STRING, as users set it) appears in no
    file written (staging folders included), no object on the store and no output, errors too."""
    st = az_store
    d = _corpus(tmp_path)
    st.upload(d, "data")
    outs = []
    for args in (["run", st.url("data"), "-o", st.url("run"), "--stages", "exact,fuzzy", "--json"],
                 ["apply", st.url("data"), "--manifest", st.url("run"), "-o", st.url("clean")],
                 ["exact", st.url("missing"), "-o", st.url("ex2")]):
        res = run_subprocess(*args, cwd=tmp_path)
        outs.append((args[0], res.returncode, res.stdout + res.stderr))
    assert [rc for _, rc, _ in outs] == [0, 0, 1], outs
    assert st.url("missing") in outs[2][2]
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    objects = st.fs.find(st.bucket)
    assert len(objects) > 10
    for secret in st.secrets:
        for cmd, _, text in outs:
            assert secret not in text, cmd
        for p in written:
            assert secret.encode() not in p.read_bytes(), p
        for o in objects:
            assert secret.encode() not in st.fs.cat_file(o), o


def test_one_row_group_split_by_pages_on_the_store(store, tmp_path, monkeypatch):
    """A one-row-group file on the store, split into tasks that each read only their pages (range
    reads through fsspec): the unsplit local run's decisions, row for row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dedupkit.io.read import ReadSpec
    from dedupkit.runner import RunOptions, run_stage
    from dedupkit.stages.exact import ExactStage

    # --workers 2: exact cuts this small file too (dedupkit.scan.CHEAP_MIN_PIECE_BYTES is for one process)
    texts = [f"text {i % 150} " + "word " * (i % 9) for i in range(1200)]
    d = tmp_path / "one"
    d.mkdir()
    pq.write_table(pa.table({"text": texts}), d / "c.parquet", row_group_size=10_000, write_batch_size=25,
                   data_page_size=1_000)
    store.upload(d, "one")
    whole = run_stage(ExactStage(), [str(d / "c.parquet")], tmp_path / "whole", ReadSpec(), RunOptions())
    split = run_stage(ExactStage(), [store.url("one", "c.parquet")], tmp_path / "split", ReadSpec(),
                      RunOptions(split_bytes=2_000, workers=2))
    assert split.summary["timings"]["scan_tasks"] >= 3
    a, b = _local_manifest(tmp_path / "whole"), _local_manifest(tmp_path / "split")
    assert _renamed(b, store.url("one", "c.parquet"), str(d / "c.parquet")).equals(a)
    assert whole.summary["counts"] == split.summary["counts"] and whole.summary["counts"]["dropped"] > 0
