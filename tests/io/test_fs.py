"""dedupkit.io.fs against a real S3-compatible server (moto, started by tests/io/conftest.py).

Every stage, ``run``, ``apply`` and ``index``/``check`` read from and write to ``s3://``; their
manifests equal the local-disk run's (byte for byte where the inputs are the same files); no
secret from the credentials or the URL appears in any file written or in stdout/stderr.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from conftest import BASE_DOCS, make_rows, write_jsonl, write_parquet
from dedupkit.cli.main import cli
from dedupkit.io import fs

from s3_fixtures import ENV_SECRET, URL_SECRET, s3_env, s3_server  # noqa: F401 (fixtures)


def _cli(*args, ok=True):
    res = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert res.exit_code == 0, res.output
    return res


def _corpus(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    write_parquet(d / "a.parquet", make_rows(BASE_DOCS[:4], "a"))
    write_jsonl(d / "sub" / "b.jsonl", make_rows(BASE_DOCS[4:] + BASE_DOCS[:2], "b"))
    return d


def _upload(s3, local: Path, url: str) -> None:
    for p in sorted(local.rglob("*")):
        if p.is_file():
            s3["fs"].put_file(str(p), url.removeprefix("s3://") + "/" + p.relative_to(local).as_posix())


def _manifest(fsys, root: str) -> pa.Table:
    parts = sorted(p for p in fsys.find(root.removeprefix("s3://") + "/manifest") if p.endswith(".parquet"))
    return pa.concat_tables([pq.read_table(fsys.open(p, "rb")) for p in parts])


def _local_manifest(out: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted((out / "manifest").glob("*.parquet"))])


def _renamed(t: pa.Table, old: str, new: str) -> pa.Table:
    import pyarrow.compute as pc

    for col in ("shard", "doc_id", "duplicate_of", "reason"):
        if col in t.column_names:
            i = t.column_names.index(col)
            t = t.set_column(i, col, pc.replace_substring(t.column(col), old, new))
    return t


def test_urls_clean_and_local():
    assert fs.clean("s3://K:S%2Fx@bkt/a/b.parquet") == "s3://bkt/a/b.parquet"
    assert fs.local("file:///tmp/x y") == "/tmp/x y"
    assert not fs.is_remote("data/a.parquet") and not fs.is_remote("file:///a") and fs.is_remote("gs://b/x")


def test_expand_folder_and_glob(s3_env, tmp_path):
    b = s3_env["bucket"]
    d = _corpus(tmp_path)
    write_jsonl(d / "_hidden" / "c.jsonl", make_rows(["x"], "c"))
    write_jsonl(d / "notes.txt", [])
    _upload(s3_env, d, f"s3://{b}/data")
    from dedupkit.io.shards import discover

    names = [s.name for s in discover([f"s3://{b}/data"])]
    assert names == [f"s3://{b}/data/a.parquet", f"s3://{b}/data/sub/b.jsonl"]
    # a glob matches what it would on disk (there, too, "_hidden" is matched and ".x" is not)
    write_jsonl(d / ".x" / "e.jsonl", make_rows(["y"], "e"))
    _upload(s3_env, d, f"s3://{b}/data")
    import glob

    on_disk = sorted(Path(p).relative_to(d).as_posix() for p in glob.glob(f"{d}/**/*.jsonl", recursive=True))
    remote = [s.name.removeprefix(f"s3://{b}/data/") for s in discover([f"s3://{b}/data/**/*.jsonl"])]
    assert remote == on_disk == ["_hidden/c.jsonl", "sub/b.jsonl"]
    from dedupkit.errors import InputError

    with pytest.raises(InputError, match="no such file or folder"):
        discover([f"s3://{b}/nothing"])


@pytest.mark.parametrize("stage", ["exact", "fuzzy"])
def test_stage_s3_in_and_out_equals_local(s3_env, tmp_path, stage):
    b = s3_env["bucket"]
    d = _corpus(tmp_path)
    _upload(s3_env, d, f"s3://{b}/data")
    _cli(stage, d, "-o", tmp_path / "local")
    # local inputs, remote output: the very same manifest files
    _cli(stage, d, "-o", f"s3://{b}/out-l")
    local = _local_manifest(tmp_path / "local")
    assert _manifest(s3_env["fs"], f"s3://{b}/out-l").equals(local)
    parts = sorted(p.name for p in (tmp_path / "local" / "manifest").glob("*.parquet"))
    for name in parts:
        assert s3_env["fs"].cat_file(f"{b}/out-l/manifest/{name}") == (tmp_path / "local" / "manifest" / name).read_bytes()
    # remote inputs and output: equal once the shard names (the input as typed) are mapped
    _cli(stage, f"s3://{b}/data", "-o", f"s3://{b}/out")
    remote = _manifest(s3_env["fs"], f"s3://{b}/out")
    assert _renamed(remote, f"s3://{b}/data", str(d)).equals(local)
    summary = json.loads(s3_env["fs"].cat_file(f"{b}/out/summary.json"))
    assert summary["complete"] and summary["inputs"][0]["path"] == f"s3://{b}/data/a.parquet"
    # the rerun rule holds on the store: the same command reuses the finished run
    res = _cli(stage, f"s3://{b}/data", "-o", f"s3://{b}/out")
    assert "reused" in res.output or "up to date" in res.output
