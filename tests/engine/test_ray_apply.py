"""``apply`` on Ray: one task per input shard writes (and, to ``s3://``, uploads) its clean shard.

A real local Ray instance (its own short temp dir, started after the AWS environment of a real
moto S3 server on the loopback is set, so its workers reach the same store) and the real command
line in a subprocess: the files are byte-identical to the in-process apply's, every shard is on the
store before the driver publishes (and the completion marker is not), a failed rerun leaves the
store visibly unfinished, and no secret reaches a file, stdout or stderr.
"""

from __future__ import annotations

import json

import pytest

from tests.engine.test_ray_store import ray_on_store  # noqa: F401 (fixture)
from tests.io.s3_fixtures import ENV_SECRET, URL_SECRET, s3_env, s3_server  # noqa: F401 (fixtures)
from tests.support import run_subprocess, write_jsonl
from tests.test_apply import clean_files, every_format
from dedupkit import api
from dedupkit.errors import ManifestError
from dedupkit.io import fs

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _store_files(s3, root: str) -> dict[str, bytes]:
    s3["fs"].invalidate_cache()
    return {p[len(root) + 1:]: s3["fs"].cat_file(p) for p in sorted(s3["fs"].find(root))}


def test_apply_on_ray_writes_every_shard_from_tasks(ray_on_store, tmp_path, monkeypatch):
    s3 = ray_on_store
    d = every_format(tmp_path / "data")
    api.exact([str(d)], str(tmp_path / "ex"), id_column="id")
    api.substring([str(d)], str(tmp_path / "sub"), id_column="id", min_tokens=8)
    ms = [str(tmp_path / "ex"), str(tmp_path / "sub")]
    ref = api.apply([str(d)], ms, str(tmp_path / "ref"))
    want = clean_files(tmp_path / "ref")

    on_ray = api.apply([str(d)], ms, str(tmp_path / "local-out"), engine="ray", workers=2)
    assert clean_files(tmp_path / "local-out") == want and on_ray.summary == ref.summary

    root = f"{s3['bucket']}/clean"
    seen: dict = {}
    publish = fs.RemoteFolder.publish

    def watch(self, src, markers=fs.MARKERS, done=()):
        seen["done"] = sorted(done)
        seen["there"] = sorted(_store_files(s3, root))
        return publish(self, src, markers, done)

    monkeypatch.setattr(fs.RemoteFolder, "publish", watch)
    res = api.apply([str(d)], ms, f"s3://{root}", engine="ray", workers=2)
    shards = sorted(s["output"] for s in ref.summary["shards"])
    assert res.out == f"s3://{root}" and seen["done"] == shards
    assert set(shards) <= set(seen["there"]) and "_dedupkit_apply.json" not in seen["there"]
    assert _store_files(s3, root) == want  # the tasks' shards, the driver's dataset files and marker

    # a rerun that fails in a task (a shard changed) leaves the store visibly unfinished
    write_jsonl(d / "sub" / "b.jsonl", [{"id": "b0", "text": "changed"}])
    with pytest.raises(ManifestError, match="changed since manifest"):
        api.apply([str(d)], ms, f"s3://{root}", engine="ray", workers=2, overwrite=True)
    assert "_dedupkit_apply.json" not in _store_files(s3, root)


def test_cli_apply_engine_ray_to_s3_and_no_secret_anywhere(s3_env, tmp_path):
    d = every_format(tmp_path / "data")
    api.exact([str(d)], str(tmp_path / "ex"), id_column="id")
    api.apply([str(d)], [str(tmp_path / "ex")], str(tmp_path / "ref"))
    url = f"s3://testing-key-id:{URL_SECRET}@{s3_env['bucket']}/clean"
    r = run_subprocess("apply", str(d), "-m", str(tmp_path / "ex"), "-o", url, "--engine", "ray",
                       "--workers", "2", "--json", cwd=tmp_path, env={"RAY_ADDRESS": "", "DEDUPKIT_RAY_ADDRESS": ""})
    assert r.returncode == 0, r.stderr
    record = json.loads(r.stdout)
    assert record["kept"] == json.loads((tmp_path / "ref" / "_dedupkit_apply.json").read_text())["kept"]
    stored = _store_files(s3_env, f"{s3_env['bucket']}/clean")
    assert stored == clean_files(tmp_path / "ref")
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    for secret in (URL_SECRET, ENV_SECRET):
        assert secret not in r.stdout + r.stderr
        for p in written:
            assert secret.encode() not in p.read_bytes(), p
        for rel, data in stored.items():
            assert secret.encode() not in data, rel


def test_apply_on_ray_reads_store_inputs_and_manifests(ray_on_store, tmp_path):
    """Inputs, manifest and output all on the store: the tasks read their shards from s3:// too."""
    s3 = ray_on_store
    b = s3["bucket"]
    d = tmp_path / "data"
    write_jsonl(d / "a.jsonl", [{"id": f"a{i}", "text": f"text {i % 3}"} for i in range(9)])
    write_jsonl(d / "sub" / "b.jsonl", [{"id": f"b{i}", "text": f"text {i % 5}"} for i in range(6)])
    for p in sorted(d.rglob("*.jsonl")):
        s3["fs"].put_file(str(p), f"{b}/data/{p.relative_to(d).as_posix()}")
    api.exact([f"s3://{b}/data"], f"s3://{b}/ex", id_column="id")
    ref = api.apply([f"s3://{b}/data"], [f"s3://{b}/ex"], str(tmp_path / "ref"))
    res = api.apply([f"s3://{b}/data"], [f"s3://{b}/ex"], f"s3://{b}/clean", engine="ray", workers=2)
    assert res.summary["kept"] == ref.summary["kept"] == 5
    assert _store_files(s3, f"{b}/clean") == clean_files(tmp_path / "ref")
