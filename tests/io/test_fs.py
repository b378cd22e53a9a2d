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

from tests.support import BASE_DOCS, make_rows, run_subprocess, write_jsonl, write_parquet
from dedupkit.cli.main import cli
from dedupkit.io import fs

from tests.io.s3_fixtures import ENV_SECRET, URL_SECRET, s3_env, s3_server  # noqa: F401 (fixtures)


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

    for i, col in enumerate(t.column_names):  # shard, doc_id, duplicate_of, reason, nearest ids...
        if pa.types.is_string(t.schema.field(col).type):
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


class _HashEmbedder:
    """Bag of hashed words (deterministic, instant): the semantic stage's decisions, not a model's."""

    def __init__(self, dim: int = 64):
        self.dim, self.key = dim, f"fshash:{dim}"

    def encode(self, texts):
        import re
        import zlib

        import numpy as np

        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                out[i, zlib.crc32(w.encode()) % self.dim] += 1.0
        n = np.linalg.norm(out, axis=1, keepdims=True)
        return np.divide(out, n, out=np.zeros_like(out), where=n > 0)


def _register_embedder():
    from dedupkit.embed import register_embedder

    register_embedder("fshash", lambda arg, config: _HashEmbedder())


_STAGE_ARGS = {
    "substring": ["--min-tokens", "5", "--protect", "1"],
    "semantic": ["--model", "fshash:64", "--eps", "0.05"],
    "decontaminate": [],  # + --against, added below
}


@pytest.mark.parametrize("stage", ["substring", "semantic", "decontaminate"])
def test_other_stages_s3_equal_local(s3_env, tmp_path, stage):
    _register_embedder()
    b = s3_env["bucket"]
    d = _corpus(tmp_path)
    _upload(s3_env, d, f"s3://{b}/data")
    args = list(_STAGE_ARGS[stage])
    if stage == "decontaminate":
        ev = write_jsonl(tmp_path / "evals" / "quiz.jsonl", [{"question": BASE_DOCS[3]}])
        args = ["--against", f"quiz={ev}", "--eval-fields", "question", "--ngram", "5", "--min-tokens", "3"]
    _cli(stage, d, "-o", tmp_path / "local", *args)
    local = _local_manifest(tmp_path / "local")
    spans = sorted((tmp_path / "local").glob("spans/*.parquet"))
    # the stage dropped or cut something: a real comparison
    assert not all(local.column("keep").to_pylist()) or pq.read_table(spans[0]).num_rows
    _cli(stage, d, "-o", f"s3://{b}/out-l", *args)
    for p in sorted((tmp_path / "local" / "manifest").glob("*.parquet")) + spans:
        rel = p.relative_to(tmp_path / "local").as_posix()
        assert s3_env["fs"].cat_file(f"{b}/out-l/{rel}") == p.read_bytes()
    _cli(stage, f"s3://{b}/data", "-o", f"s3://{b}/out", *args)
    assert _renamed(_manifest(s3_env["fs"], f"s3://{b}/out"), f"s3://{b}/data", str(d)).equals(local)


def test_run_apply_and_report_on_s3(s3_env, tmp_path):
    b = s3_env["bucket"]
    d = _corpus(tmp_path)
    _upload(s3_env, d, f"s3://{b}/data")
    _cli("run", d, "-o", tmp_path / "run", "--stages", "exact,fuzzy")
    _cli("run", f"s3://{b}/data", "-o", f"s3://{b}/run", "--stages", "exact,fuzzy")
    local = _local_manifest(tmp_path / "run")
    assert _renamed(_manifest(s3_env["fs"], f"s3://{b}/run"), f"s3://{b}/data", str(d)).equals(local)
    assert s3_env["fs"].exists(f"{b}/run/01-exact/summary.json") and s3_env["fs"].exists(f"{b}/run/summary.json")
    # apply: remote inputs, a remote manifest, a remote clean corpus, marker last
    _cli("apply", d, "--manifest", tmp_path / "run", "-o", tmp_path / "clean")
    _cli("apply", f"s3://{b}/data", "--manifest", f"s3://{b}/run", "-o", f"s3://{b}/clean")
    for p in sorted((tmp_path / "clean").rglob("*.*")):
        rel = p.relative_to(tmp_path / "clean").as_posix()
        if rel.endswith((".parquet", ".jsonl")):
            assert s3_env["fs"].cat_file(f"{b}/clean/{rel}") == p.read_bytes(), rel
    assert s3_env["fs"].exists(f"{b}/clean/_dedupkit_apply.json")
    # a second apply to the same store folder is refused without --overwrite, as on disk
    res = _cli("apply", f"s3://{b}/data", "--manifest", f"s3://{b}/run", "-o", f"s3://{b}/clean", ok=False)
    assert res.exit_code == 1 and "--overwrite" in res.output
    _cli("apply", f"s3://{b}/data", "--manifest", f"s3://{b}/run", "-o", f"s3://{b}/clean", "--overwrite")
    # readers of a finished remote run: stats and --skip
    res = _cli("stats", f"s3://{b}/run", "--json")
    assert json.loads(res.stdout)
    _cli("fuzzy", f"s3://{b}/data", "--skip", f"s3://{b}/run/01-exact", "-o", f"s3://{b}/fz")


def test_index_create_and_check_on_s3(s3_env, tmp_path):
    b = s3_env["bucket"]
    d = _corpus(tmp_path)
    _upload(s3_env, d, f"s3://{b}/data")
    new = write_jsonl(tmp_path / "new" / "n.jsonl", make_rows([BASE_DOCS[0], "something new entirely here"], "n"))
    _cli("index", "create", tmp_path / "idx", "--from", d, "-q")
    res = _cli("index", "create", f"s3://{b}/idx", "--from", f"s3://{b}/data", "-q")
    assert res.stdout.strip() == f"s3://{b}/idx"
    assert s3_env["fs"].exists(f"{b}/idx/index.json")
    _cli("check", new.parent, "--against", tmp_path / "idx", "-o", tmp_path / "chk", "-q")
    _cli("check", new.parent, "--against", f"s3://{b}/idx", "-o", f"s3://{b}/chk", "-q")
    local, remote = _local_manifest(tmp_path / "chk"), _manifest(s3_env["fs"], f"s3://{b}/chk")
    assert _renamed(remote, f"s3://{b}/data", str(d)).equals(local)
    assert local.column("keep").to_pylist() == [False, True]
    # growing an index on a store has no lock: refused with the way out
    res = _cli("check", new.parent, "--against", f"s3://{b}/idx", "-o", tmp_path / "c2", "--update", ok=False)
    assert res.exit_code == 1 and "no lock" in res.output
    res = _cli("index", "create", f"s3://{b}/idx", "--from", d, ok=False)
    assert res.exit_code == 1 and "--overwrite" in res.output


def test_interrupted_publish_never_looks_finished(s3_env, tmp_path):
    b = s3_env["bucket"]
    d = _corpus(tmp_path)
    _cli("exact", d, "-o", f"s3://{b}/out")
    staging = fs.staging_dir(f"s3://{b}/out")
    # the next publish fails when it reaches the completion marker (a real I/O error: the file is gone)
    (staging / "summary.json").unlink()
    (staging / "summary.json").symlink_to(tmp_path / "nowhere")
    from dedupkit.errors import OutputError

    with pytest.raises(OutputError, match="nothing there looks finished"):
        fs.RemoteFolder(f"s3://{b}/out").publish(staging)
    assert not s3_env["fs"].exists(f"{b}/out/summary.json")
    assert s3_env["fs"].exists(f"{b}/out/manifest/part-00000.parquet")
    fs._FETCHED.clear()
    res = _cli("apply", d, "--manifest", f"s3://{b}/out", "-o", tmp_path / "clean", ok=False)
    assert res.exit_code == 1 and "no finished run" in res.output


def test_foreign_remote_folder_is_refused(s3_env, tmp_path):
    b = s3_env["bucket"]
    s3_env["fs"].pipe_file(f"{b}/mine/notes.txt", b"keep me")
    res = _cli("exact", _corpus(tmp_path), "-o", f"s3://{b}/mine", ok=False)
    assert res.exit_code == 1 and "did not write" in res.output
    assert s3_env["fs"].cat_file(f"{b}/mine/notes.txt") == b"keep me"


@pytest.mark.slow
def test_secret_never_written_or_printed(s3_env, tmp_path):
    """The S3 secret (in the environment and in the URL) appears in no file written and no output."""
    b = s3_env["bucket"]
    d = _corpus(tmp_path)
    _upload(s3_env, d, f"s3://{b}/data")
    url = f"s3://testing-key-id:{URL_SECRET}@{b}"
    outs = []
    for args in (["exact", f"{url}/data", "-o", f"{url}/ex", "--json"],
                 ["run", f"{url}/data", "-o", f"{url}/run", "--stages", "exact,fuzzy", "--json"],
                 ["apply", f"{url}/data", "--manifest", f"{url}/run", "-o", f"{url}/clean"],
                 ["index", "create", f"{url}/idx", "--from", f"{url}/data"],
                 ["check", f"{url}/data", "--against", f"{url}/idx", "-o", f"{url}/chk", "--json"],
                 ["report", f"{url}/run", "-o", str(tmp_path / "report.html")],
                 ["exact", f"{url}/missing", "-o", f"{url}/ex2"],  # an error names the URL
                 ["apply", f"{url}/data", "--manifest", f"{url}/nothing", "-o", f"{url}/c2"]):
        res = run_subprocess(*args, cwd=tmp_path)
        outs.append((args[0], res.returncode, res.stdout + res.stderr))
    assert [rc for _, rc, _ in outs[:6]] == [0] * 6, outs
    assert outs[6][1] == 1 and f"s3://{b}/missing" in outs[6][2]
    assert outs[7][1] == 1
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    objects = s3_env["fs"].find(b)
    assert len(objects) > 20 and any(p.is_relative_to(s3_env["cache"]) for p in written)
    for secret in (URL_SECRET, ENV_SECRET):
        for cmd, _, text in outs:
            assert secret not in text, cmd
        for p in written:
            assert secret.encode() not in p.read_bytes(), p
        for o in objects:
            assert secret.encode() not in s3_env["fs"].cat_file(o), o
