"""The ONNX Runtime backend on the real packaged model, the light (torch-free) paths, and -q.

The export is made once per test session into a temporary cache folder (about 10 s), never
under $HOME.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.support import SRC, make_rows, read_manifest, run_subprocess, write_parquet
from dedupkit.embed import EmbedConfig, get_embedder, onnx_export, packaged_model_path, resolve_backend
from dedupkit.errors import ConfigError

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

TEXTS = [
    "How do I learn to program in Python?",
    "What is the best way to learn Python programming?",
    "What is the capital city of France?",
    "My bicycle tire keeps going flat.",
    "",
    "   padded with spaces   ",
    "A much longer text about the history of the printing press, movable type, and how the spread "
    "of cheap books changed literacy, religion and science across Europe in the fifteenth and "
    "sixteenth centuries, told in more words than the model's 128-token window can hold. " * 3,
    "Ünïcödé and emoji 🙂 survive the tokenizer.",
]


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("onnx-cache")
    onnx_export(packaged_model_path(), cache)
    return cache


@pytest.mark.model
def test_onnx_matches_torch_on_the_packaged_model(onnx_cache):
    onnx_emb = get_embedder(EmbedConfig(backend="onnx", device="cpu", cache_dir=str(onnx_cache)))
    torch_emb = get_embedder(EmbedConfig(backend="torch", device="cpu"))
    assert onnx_emb.key != torch_emb.key and "onnx-int8" in onnx_emb.key
    a, b = onnx_emb.encode(TEXTS), torch_emb.encode(TEXTS)
    assert a.shape == b.shape == (len(TEXTS), 384) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-4)
    cos = np.einsum("ij,ij->i", a, b)
    assert cos.min() >= 0.98, cos
    # what a duplicate finder needs: the paraphrase pair is close, the rest far
    assert a[0] @ a[1] > 0.7 > max(a[0] @ a[2], a[0] @ a[3])


@pytest.mark.model
def test_onnx_fp32_backend_gives_the_torch_embeddings(onnx_cache):
    fp32 = get_embedder(EmbedConfig(backend="onnx-fp32", device="cpu", cache_dir=str(onnx_cache)))
    int8 = get_embedder(EmbedConfig(backend="onnx", device="cpu", cache_dir=str(onnx_cache)))
    torch_emb = get_embedder(EmbedConfig(backend="torch", device="cpu"))
    assert len({fp32.key, int8.key, torch_emb.key}) == 3 and "onnx-fp32" in fp32.key  # cached apart
    a, b, q = fp32.encode(TEXTS), torch_emb.encode(TEXTS), int8.encode(TEXTS)
    cos = np.einsum("ij,ij->i", a, b)
    assert cos.min() > 0.9999, cos  # the unquantised export is the torch model
    assert np.einsum("ij,ij->i", q, b).min() < cos.min()  # int8 is not


@pytest.mark.model
def test_onnx_length_sorted_batches_keep_input_order(onnx_cache):
    emb = get_embedder(EmbedConfig(backend="onnx", device="cpu", cache_dir=str(onnx_cache), batch_size=64))
    perm = np.random.default_rng(0).permutation(len(TEXTS))
    whole = emb.encode(TEXTS)
    # one batch either way (batch_size > len): the same activations, so the same vectors, reordered
    assert np.allclose(emb.encode([TEXTS[i] for i in perm]), whole[perm], atol=1e-5)
    # small batches: other batch-mates (int8 activations are scaled per batch), still the same texts
    small = get_embedder(EmbedConfig(backend="onnx", device="cpu", cache_dir=str(onnx_cache), batch_size=2))
    assert np.einsum("ij,ij->i", small.encode(TEXTS), whole).min() > 0.98
    assert emb.encode([]).shape == (0, 384)


@pytest.mark.model
def test_batches_hold_one_token_count_and_long_texts_tokenise_from_their_head(onnx_cache):
    emb = get_embedder(EmbedConfig(backend="onnx", device="cpu", cache_dir=str(onnx_cache), batch_size=3,
                                   max_tokens=32))
    # the graph has no padding mask: a batch must never mix token counts
    lengths = np.array([5, 9, 5, 5, 5, 9, 7, 32, 32])
    batches = emb.batches(lengths)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    assert all(len(set(lengths[b])) == 1 and 1 <= len(b) <= 3 for b in batches)
    assert [int(lengths[b[0]]) for b in batches] == sorted((int(lengths[b[0]]) for b in batches), reverse=True)
    # a head cut at a space gives the whole text's ids when it fills max_tokens; when it does not
    # (long unknown words), or there is no space to cut at, the whole text is tokenised
    texts = [" ".join(TEXTS * 20), ("x" * 150 + " ") * 6 + "end", "y" * 400, "  " + TEXTS[0] + "  ", ""]
    whole = [e.ids for e in emb.tokenizer.encode_batch([t.strip() for t in texts])]
    assert emb.tokenize(texts) == whole and len(whole[0]) == 32 and len(whole[1]) == 9
    assert np.allclose(emb.encode(texts)[:4], np.stack([emb.encode([t])[0] for t in texts[:4]]), atol=1e-5)


@pytest.mark.model
def test_export_is_made_once_in_the_cache(onnx_cache):
    (folder,) = (onnx_cache / "onnx").iterdir()
    meta = json.loads((folder / "export.json").read_text())
    assert meta["quantized"] == "int8-dynamic" and (folder / "model_int8.onnx").stat().st_size > 10_000_000
    before = (folder / "model_int8.onnx").stat().st_mtime_ns
    assert onnx_export(packaged_model_path(), onnx_cache) == folder
    assert (folder / "model_int8.onnx").stat().st_mtime_ns == before
    from dedupkit.cache import cache_info

    assert cache_info(onnx_cache)["parts"]["onnx"]["entries"] == 1


def test_backend_resolution_and_errors(tmp_path):
    model = packaged_model_path()
    assert resolve_backend(model, EmbedConfig(backend="torch")) == "torch"
    # auto: torch wherever torch is installed (this venv), ONNX without it (tested with torch blocked)
    assert resolve_backend(model, EmbedConfig(device="cpu")) == "torch"
    assert resolve_backend(model, EmbedConfig(backend="onnx", device="cpu")) == "onnx"
    assert resolve_backend("sentence-transformers/all-mpnet-base-v2", EmbedConfig(device="cpu")) == "torch"
    with pytest.raises(ConfigError, match="--backend torch"):
        EmbedConfig(backend="onnx", device="cuda")
    with pytest.raises(ConfigError, match="backend"):
        EmbedConfig(backend="tensorrt")
    with pytest.raises(ConfigError, match="local model folder"):
        onnx_export("sentence-transformers/all-mpnet-base-v2", tmp_path)
    not_bert = tmp_path / "m"
    not_bert.mkdir()
    (not_bert / "config.json").write_text(json.dumps({"model_type": "t5"}))
    (not_bert / "modules.json").write_text("[]")
    with pytest.raises(ConfigError, match="BERT"):
        onnx_export(str(not_bert), tmp_path)


# A child process in which torch cannot be imported (as in the light install): the import fails
# and importlib.util.find_spec reports it missing, like an uninstalled package.
NO_TORCH = textwrap.dedent("""
    import importlib.abc, sys
    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ModuleNotFoundError("No module named 'torch' (blocked by the test)", name=name)
    sys.meta_path.insert(0, NoTorch())
""")


def _run_without_torch(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", NO_TORCH + textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=600, cwd=tmp_path)


def _static_folder(path: Path) -> Path:
    """A real model2vec folder (the packaged tokenizer, seeded vectors), made without torch."""
    from model2vec import StaticModel
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(packaged_model_path()) / "tokenizer.json"))
    vectors = np.random.default_rng(0).normal(size=(tok.get_vocab_size(), 32)).astype(np.float32)
    StaticModel(vectors=vectors, tokenizer=tok, normalize=True).save_pretrained(str(path))
    return path


@pytest.mark.model
@pytest.mark.slow
def test_static_and_onnx_paths_run_without_torch(tmp_path):
    texts = ["How do I learn to program in Python?", "How do I learn to program in Python ?",
             "What is the capital city of France?", "My bicycle tire keeps going flat."]
    data = write_parquet(tmp_path / "d" / "q.parquet", make_rows(texts))
    static = _static_folder(tmp_path / "static")
    code = f"""
        import sys
        from dedupkit.cli.main import main
        for name, args in (("o-static", ["--model", "model2vec:{static}"]), ("o-onnx", ["--backend", "onnx"]),
                           ("o-auto", [])):
            sys.argv = ["dedupkit", "semantic", "{data}", "-o", "{tmp_path}/" + name, "--cache-dir",
                        "{tmp_path}/cache", "--eps", "0.05", "--id-column", "id", "-q", *args]
            try:
                main()
            except SystemExit as e:
                assert e.code in (0, None), e.code
        assert "torch" not in sys.modules, "torch was imported"
        print("ok")
    """
    r = _run_without_torch(code, tmp_path)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]
    assert r.stderr == ""
    outs = sorted(p for p in tmp_path.iterdir() if p.name.startswith("o"))
    assert len(outs) == 3
    for out in outs:
        rows = read_manifest(out)
        assert len(rows) == 4 and rows[1]["keep"] is False and rows[1]["duplicate_of"] == "d0"
    # auto without torch is the ONNX backend
    assert "onnx-int8" in json.dumps(json.loads((tmp_path / "o-auto" / "summary.json").read_text()))


@pytest.mark.model
def test_static_distill_without_torch_says_how_to_get_it(tmp_path):
    r = _run_without_torch(f"""
        from dedupkit.embed import distill_static
        from dedupkit.errors import MissingExtraError
        try:
            distill_static(cache_dir="{tmp_path}/cache")
        except MissingExtraError as exc:
            print(exc)
    """, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "needs torch" in r.stdout and "download.pytorch.org/whl/cpu" in r.stdout
    assert not (tmp_path / "cache" / "static").exists()


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_quiet_leaves_stderr_empty_with_the_real_model(tmp_path, backend):
    """-q: no transformers "Loading weights" bar, no warnings, no count line; stdout has the result."""
    data = write_parquet(tmp_path / "d" / "q.parquet", make_rows(TEXTS[:4] * 2))
    out = tmp_path / "out"
    r = run_subprocess("semantic", str(data), "-o", str(out), "--backend", backend, "--cache-dir",
                       str(tmp_path / "cache"), "-q")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert r.stdout.strip() == str(out)
    assert sum(not x["keep"] for x in read_manifest(out)) == 4
    loud = run_subprocess("semantic", str(data), "-o", str(tmp_path / "loud"), "--backend", backend,
                          "--cache-dir", str(tmp_path / "cache2"))
    assert loud.returncode == 0 and "dropped" in loud.stderr  # without -q the count line is there


@pytest.mark.model
def test_identical_texts_get_one_int8_vector_whatever_their_batch(onnx_cache):
    # int8 activations are quantised per batch: with batches of two, the two copies of "a" would
    # land beside different texts and come out different, were each text not encoded once
    from dedupkit.embed_onnx import FLOAT_MAX_TOKENS

    emb = get_embedder(EmbedConfig(backend="onnx-int8", device="cpu", batch_size=2, cache_dir=str(onnx_cache)))
    # longer than FLOAT_MAX_TOKENS (those run the float export), one token count: batched together
    a, b, c = ("the cat sat on the mat " * 4, "a dog ran in the park " * 4, "my hat is on the bed " * 4)
    assert len({len(ids) for ids in emb.tokenize([a, b, c])}) == 1
    assert len(emb.tokenize([a])[0]) > FLOAT_MAX_TOKENS
    out = emb.encode([a, b, c, a])
    assert np.array_equal(out[0], out[3])
    assert not np.array_equal(out[0], out[1])


# Paragraphs of Python's documentation topics (3.11) on which the int8 export without SmoothQuant
# (v5) strayed furthest from the float model: cosine 0.982-0.995, 0.989 on average.
OUTLIER_TEXTS = [
    'An equality comparison between one "dict.values()" view and another will always return "False". '
    'This also applies when comparing "dict.values()" to itself:',
    '>>> try: ... print(1 / 0) ... except: ... raise RuntimeError("Something bad happened") from None '
    '... Traceback (most recent call last): File "<stdin>", line 4, in <module> RuntimeError: Something '
    'bad happened',
    '+-----------+------------------------------------------------------------+ | Type | Meaning | '
    '|===========|============================================================| | "\'s\'" | String '
    'format. This is the default type for strings and | | | may be omitted. | '
    '+-----------+------------------------------------------------------------+ | None | The same as '
    '"\'s\'". | +-----------+------------------------------------------------------------+',
    'If no expressions are present, "raise" re-raises the exception that is currently being handled, '
    'which is also known as the *active exception*. If there isn’t currently an active exception, a '
    '"RuntimeError" exception is raised indicating that this is an error.',
    'Key-value pairs are matched using the two-argument form of the mapping subject’s "get()" method. '
    'Matched key-value pairs must already be present in the mapping, and not created on-the-fly via '
    '"__missing__()" or "__getitem__()".',
]


@pytest.mark.model
def test_smoothquant_int8_export_stays_close_to_float_on_outlier_texts(onnx_cache):
    # v5 (no smoothing): min 0.982, mean 0.989 on these texts; v6 (SmoothQuant): min 0.994, mean 0.997
    int8 = get_embedder(EmbedConfig(backend="onnx-int8", device="cpu", cache_dir=str(onnx_cache)))
    fp32 = get_embedder(EmbedConfig(backend="onnx-fp32", device="cpu", cache_dir=str(onnx_cache)))
    cos = np.einsum("ij,ij->i", int8.encode(OUTLIER_TEXTS), fp32.encode(OUTLIER_TEXTS))
    assert cos.min() >= 0.99 and cos.mean() >= 0.995, cos
    info = json.loads((onnx_export(packaged_model_path(), onnx_cache) / "export.json").read_text())
    assert info["smoothquant"]["alpha"] > 0


@pytest.mark.model
def test_smoothing_keeps_the_float_function():
    # SmoothQuant divides GEMM inputs by per-channel scales and multiplies the weight rows by them:
    # in float the smoothed graph computes the same embeddings (whatever the scales)
    import onnxruntime as ort

    from dedupkit.embed_onnx import build_graph, smooth_points

    src = Path(packaged_model_path())
    rng = np.random.default_rng(0)
    scales = {k: rng.uniform(0.2, 5.0, 1536 if k.endswith("ff2_in") else 384).astype(np.float32)
              for k in smooth_points(6)}
    ids = np.array([[101, 2129, 2079, 1045, 4553, 18750, 1029, 102]], np.int64)
    plain, smoothed = (ort.InferenceSession(build_graph(src, s).SerializeToString(), providers=["CPUExecutionProvider"])
                       .run(None, {"input_ids": ids})[0] for s in (None, scales))
    assert float(plain[0] @ smoothed[0]) > 0.99999
    assert not np.array_equal(plain, smoothed)  # the scales did reach the graph
