"""Ray workers write a remote output's manifest parts themselves (dedupkit.engine.driver).

A real local Ray instance (started by the test in its own temp dir, after the AWS environment of
a real moto S3 server on the loopback is set, so that its workers reach the same store) and
``fuzzy`` or ``exact`` with ``--engine ray -o s3://...``: the parts the manifest tasks upload are
byte-identical to the local engine's, the driver's publish step uploads none of them (they are
already there, and the completion marker is not, when it starts) and writes the summary last.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.support import SRC, write_jsonl, write_parquet
from tests.io.s3_fixtures import s3_env, s3_server  # noqa: F401 (fixtures)
from dedupkit import api
from dedupkit.io import fs

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.slow]

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho "
         "sigma tau upsilon phi chi psi omega river stone cloud forest harbor lantern meadow orbit").split()


@pytest.fixture
def ray_on_store(s3_env):
    """A local Ray instance whose workers inherit the moto server's AWS environment."""
    from dedupkit.engine.ray import init_local

    if ray.is_initialized():  # pragma: no cover - another module left one running
        ray.shutdown()
    temp = tempfile.mkdtemp(prefix="dkray")  # short: Ray's socket paths must stay under 108 bytes
    try:
        init_local(2, _temp_dir=temp, runtime_env={"env_vars": {"PYTHONPATH": SRC}})
        yield s3_env
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def _corpus(d: Path) -> Path:
    rng = random.Random(5)
    originals = [" ".join(rng.choice(WORDS) for _ in range(50)) for _ in range(30)]
    texts = list(originals) + [rng.choice(originals) for _ in range(15)]
    for _ in range(15):
        w = rng.choice(originals).split()
        w[rng.randrange(len(w))] = rng.choice(WORDS)
        texts.append(" ".join(w))
    rng.shuffle(texts)
    for s in range(4):
        rows = [{"id": f"s{s}-{i}", "text": t} for i, t in enumerate(texts[s * 15:(s + 1) * 15])]
        (write_parquet if s % 2 == 0 else write_jsonl)(d / f"p{s}.{'parquet' if s % 2 == 0 else 'jsonl'}", rows)
    return d


@pytest.mark.parametrize("stage", ["fuzzy", "exact"])
def test_workers_upload_manifest_parts_and_driver_publishes_the_rest(ray_on_store, tmp_path, monkeypatch, stage):
    s3 = ray_on_store
    data = _corpus(tmp_path / "data")
    run = getattr(api, stage)
    local = run([str(data)], str(tmp_path / "local"), workers=1, id_column="id")
    url = f"s3://{s3['bucket']}/out/{stage}"
    root = url.removeprefix("s3://")
    seen: dict = {}
    publish = fs.RemoteFolder.publish

    def watch(self, src, markers=fs.MARKERS, done=()):
        # what the store holds when the driver starts publishing: every part, no marker
        seen["done"] = sorted(done)
        s3["fs"].invalidate_cache()
        seen["there"] = sorted(p.rsplit("/", 1)[-1] for p in s3["fs"].find(root))
        return publish(self, src, markers, done)

    monkeypatch.setattr(fs.RemoteFolder, "publish", watch)
    res = run([str(data)], url, workers=2, engine="ray", id_column="id")
    s3["fs"].invalidate_cache()
    assert res.summary["stats"]["global_step"]["mode"] == "rowless"
    names = sorted(p.name for p in (local.out / "manifest").glob("*.parquet"))
    assert len(names) == 4
    assert seen["done"] == [f"manifest/{n}" for n in names]
    assert set(names) <= set(seen["there"]) and "summary.json" not in seen["there"]
    for n in names:
        assert s3["fs"].cat_file(f"{root}/manifest/{n}") == (local.out / "manifest" / n).read_bytes(), n
    summary = json.loads(s3["fs"].cat_file(f"{root}/summary.json"))
    assert summary["manifest_parts"] == local.summary["manifest_parts"]
    assert summary["counts"] == local.summary["counts"]

    # a rerun with --overwrite: the old marker goes before any new part lands, the result is the same
    seen.clear()
    res2 = run([str(data)], url, workers=2, engine="ray", id_column="id", overwrite=True)
    s3["fs"].invalidate_cache()
    assert "summary.json" not in seen["there"] and len(seen["done"]) == 4
    assert json.loads(s3["fs"].cat_file(f"{root}/summary.json"))["manifest_parts"] == \
        local.summary["manifest_parts"]
    assert res2.summary["counts"] == local.summary["counts"]


def test_one_task_stage_publishes_to_the_store(ray_on_store, tmp_path):
    """substring on Ray (its decisions in one task, dedupkit.engine.driver.stage_task) to s3://: the
    parts and span files on the store are the local run's, byte for byte, summary last."""
    s3 = ray_on_store
    data = _corpus(tmp_path / "data")
    local = api.substring([str(data)], str(tmp_path / "local"), workers=1, id_column="id", min_tokens=10)
    url = f"s3://{s3['bucket']}/out/substring"
    root = url.removeprefix("s3://")
    res = api.substring([str(data)], url, workers=2, engine="ray", id_column="id", min_tokens=10)
    s3["fs"].invalidate_cache()
    assert res.summary["counts"] == local.summary["counts"] and local.summary["counts"]["spans"] > 0
    for folder in ("manifest", "spans"):
        names = sorted(p.name for p in (local.out / folder).glob("*.parquet"))
        assert names
        for n in names:
            assert s3["fs"].cat_file(f"{root}/{folder}/{n}") == (local.out / folder / n).read_bytes(), n
    assert json.loads(s3["fs"].cat_file(f"{root}/summary.json"))["manifest_parts"] == \
        local.summary["manifest_parts"]
