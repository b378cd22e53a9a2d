"""The semantic stage: SemDeDup decisions, keep policies, analysis, cache, chaining, CLI.

Fast tests use a small hashing embedder registered through the real registry
(``register_embedder``); ``test_real_packaged_model`` runs the packaged all-MiniLM-L6-v2, and
``test_real_model_on_cuda_matches_cpu`` runs it on a GPU where torch sees one (skipped elsewhere).
"""

from __future__ import annotations

import json
import re
import zlib

import numpy as np
import pyarrow.dataset as ds
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import BASE_DOCS, make_rows, read_manifest, run_subprocess, write_jsonl, write_parquet, write_rows
from tests.support.invariants import check_manifest
from dedupkit import api
from dedupkit.cli.main import cli
from dedupkit.embed import EmbedConfig, register_embedder
from dedupkit.errors import ConfigError
from dedupkit.neighbours import search
from dedupkit.stages.semantic import SemanticConfig, claims, parse_eps


class HashEmbedder:
    """Bag of hashed words: texts sharing most words get a high cosine; deterministic, instant."""

    def __init__(self, dim: int):
        self.dim = dim
        self.key = f"hash:{dim}"
        self.calls = 0

    def encode(self, texts):
        self.calls += len(texts)
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                h = zlib.crc32(w.encode())
                out[i, h % self.dim] += 1.0 if (h >> 16) & 1 else -1.0
        n = np.linalg.norm(out, axis=1, keepdims=True)
        return np.divide(out, n, out=np.zeros_like(out), where=n > 0)


def hash_factory(arg: str, config: EmbedConfig) -> HashEmbedder:
    return HashEmbedder(int(arg or 256))


register_embedder("hash", hash_factory)

FAKE = "hash:256"


def run(inputs, out, **kw):
    kw.setdefault("model", FAKE)
    kw.setdefault("id_column", "id")
    return api.semantic([str(i) for i in inputs] if isinstance(inputs, list) else [str(inputs)], str(out), **kw)


def test_fake_embedder_finds_copies_and_keeps_one_row_per_input(corpus, tmp_path):
    res = run(corpus, tmp_path / "out", cache_dir=str(tmp_path / "cache"), eps=0.01, keep="first")
    rows = read_manifest(tmp_path / "out")
    assert len(rows) == len(BASE_DOCS)
    check_manifest(rows, stage="semantic")
    dropped = {r["doc_id"] for r in rows if not r["keep"]}
    # BASE_DOCS 2 and 4 repeat doc 0 (4 differs in case/space only), 5 repeats 1, 7 repeats 3.
    assert dropped == {"s0-2", "s1-0", "s1-1", "s1-3"}
    by_id = {r["doc_id"]: r for r in rows}
    assert by_id["s1-0"]["duplicate_of"] == "s0-0"
    assert by_id["s1-0"]["score"] == pytest.approx(1.0, abs=1e-5)
    assert by_id["s1-2"]["cluster_id"] is None and by_id["s1-2"]["keep"]
    assert res.summary["counts"]["dropped"] == 4
    assert res.summary["stats"]["embedded_now"] == len(BASE_DOCS)


def test_nearest_columns_are_written(corpus, tmp_path):
    run(corpus, tmp_path / "out", cache_dir=str(tmp_path / "cache"), eps=0.01, keep="first")
    t = ds.dataset(str(tmp_path / "out" / "manifest")).to_table()
    assert {"nearest_sim", "nearest_doc"} <= set(t.column_names)
    rows = {r["doc_id"]: r for r in t.to_pylist()}
    # every document's nearest other document over the whole corpus, kept or not
    assert all(r["nearest_doc"] is not None and r["nearest_doc"] != d for d, r in rows.items())
    assert rows["s0-2"]["nearest_sim"] > 0.99  # a copy of "The quick brown fox ..."
    assert rows[rows["s0-2"]["nearest_doc"]]["nearest_sim"] > 0.99
    assert min(r["nearest_sim"] for r in rows.values()) < 0.9  # the unique text


PARA = [
    "the cat sat on the mat in the old house by the sea",  # 0
    "the cat sat on the mat in the old house by the sea today",  # 1 near 0
    "stock markets fell sharply after the central bank raised interest rates",  # 2
    "stock markets fell sharply after the central bank raised interest rates again",  # 3 near 2
    "a recipe for bread needs flour water salt and yeast",  # 4
    "the cat sat on the mat in the old house by the sea yesterday evening",  # 5 near 0
]


def para_corpus(tmp_path, fmt="parquet", extra=None):
    rows = make_rows(PARA)
    for i, r in enumerate(rows):
        r["score"] = extra[i] if extra else i
    d = tmp_path / "para"
    write_rows(d / "a", rows[:3], fmt)
    write_rows(d / "b", rows[3:], fmt)
    return d


def kept(out) -> set[str]:
    return {r["doc_id"] for r in read_manifest(out) if r["keep"]}


def test_keep_policies(tmp_path):
    d = para_corpus(tmp_path, "jsonl")
    cache = str(tmp_path / "cache")
    common = dict(cache_dir=cache, eps=0.25, clusters=1)
    run(d, tmp_path / "first", keep="first", **common)
    assert kept(tmp_path / "first") == {"d0", "d2", "d4"}
    run(d, tmp_path / "last", keep="last", **common)
    assert kept(tmp_path / "last") == {"d5", "d3", "d4"}
    run(d, tmp_path / "longest", keep="longest", **common)
    assert kept(tmp_path / "longest") == {"d5", "d3", "d4"}
    run(d, tmp_path / "by", keep="first", keep_by="score", keep_order="desc", **common)
    assert kept(tmp_path / "by") == {"d5", "d3", "d4"}
    run(d, tmp_path / "by_asc", keep="last", keep_by="score", keep_order="asc", **common)
    assert kept(tmp_path / "by_asc") == {"d0", "d2", "d4"}
    # hard keeps the member farthest from the centroid, easy the nearest: with one cluster they
    # must pick different members of the 3-member cat group.
    run(d, tmp_path / "hard", keep="hard", **common)
    run(d, tmp_path / "easy", keep="easy", **common)
    cat = {"d0", "d1", "d5"}
    hard_cat, easy_cat = kept(tmp_path / "hard") & cat, kept(tmp_path / "easy") & cat
    assert len(hard_cat) == 1 and len(easy_cat) == 1 and hard_cat != easy_cat
    for name in ("first", "last", "longest", "by", "by_asc", "hard", "easy"):
        check_manifest(read_manifest(tmp_path / name), stage="semantic")


def test_random_policy_is_seeded(tmp_path):
    d = para_corpus(tmp_path)
    cache = str(tmp_path / "cache")
    picks = set()
    for seed in range(4):
        run(d, tmp_path / f"r{seed}", keep="random", seed=seed, eps=0.25, clusters=1, cache_dir=cache)
        picks.add(frozenset(kept(tmp_path / f"r{seed}")))
        check_manifest(read_manifest(tmp_path / f"r{seed}"), stage="semantic")
    run(d, tmp_path / "again", keep="random", seed=0, eps=0.25, clusters=1, cache_dir=cache)
    assert kept(tmp_path / "again") == kept(tmp_path / "r0")
    assert len(picks) > 1


def test_same_manifest_for_any_worker_count_and_batch_size(tmp_path):
    texts = [PARA[i % len(PARA)] + (" extra words" * (i % 3)) for i in range(60)]
    d = tmp_path / "many"
    for s in range(3):
        write_parquet(d / f"p{s}.parquet", make_rows(texts[s * 20:(s + 1) * 20], prefix=f"p{s}-"))
    outs = []
    for i, (workers, bs) in enumerate([(1, 8192), (2, 7)]):
        run(d, tmp_path / f"o{i}", workers=workers, batch_size=bs, eps=0.1, clusters=4,
            cache_dir=str(tmp_path / f"cache{i}"))
        t = ds.dataset(str(tmp_path / f"o{i}" / "manifest")).to_table().sort_by([("shard", "ascending"), ("row", "ascending")])
        outs.append(t)
        check_manifest(t.to_pylist(), stage="semantic")
    assert outs[0].equals(outs[1])
    assert not outs[0].column("keep").to_pylist() == [True] * 60


def test_analyze_drops_nothing_and_matches_real_runs(tmp_path):
    d = para_corpus(tmp_path)
    cache = str(tmp_path / "cache")
    res = run(d, tmp_path / "an", analyze=True, eps="0.01,0.1,0.6", clusters=1, keep="first", cache_dir=cache)
    rows = read_manifest(tmp_path / "an")
    assert len(rows) == len(PARA) and all(r["keep"] for r in rows)
    analysis = json.loads((tmp_path / "an" / "analysis.json").read_text())
    assert analysis == res.summary["stats"]["analysis"]
    drops = [e["drop"] for e in analysis["per_eps"]]
    assert drops == sorted(drops) and drops[-1] > drops[0]
    for e in analysis["per_eps"]:
        r = run(d, tmp_path / f"e{e['eps']}", eps=e["eps"], clusters=1, keep="first", cache_dir=cache)
        assert r.summary["counts"]["dropped"] == e["drop"]
        assert r.summary["stats"]["embedded_now"] == 0  # the analysis filled the cache
    s = analysis["samples"][1]
    assert s["eps"] == 0.1
    for p in s["above"]:
        assert p["cosine"] >= 0.9 and p["text"] and p["neighbour_text"]
    for p in s["below"]:
        assert p["cosine"] < 0.9
    # the samples are the nearest pairs closest to the boundary, on each side
    sims = sorted(r["nearest_sim"] for r in rows)
    inside = [v for v in sims if v >= 0.9]
    outside = [v for v in sims if v < 0.9]
    assert s["above"] and s["above"][0]["cosine"] == pytest.approx(inside[0], abs=1e-4)
    assert s["below"] and s["below"][0]["cosine"] == pytest.approx(outside[-1], abs=1e-4)


def test_cache_reuse_invalidation_and_partial_rows(tmp_path):
    d = para_corpus(tmp_path)
    cache = str(tmp_path / "cache")
    r1 = run(d, tmp_path / "o1", eps=0.1, cache_dir=cache)
    assert r1.summary["stats"]["embedded_now"] == len(PARA)
    r2 = run(d, tmp_path / "o2", eps=0.3, clusters=2, keep="easy", cache_dir=cache)
    assert r2.summary["stats"]["embedded_now"] == 0 and r2.summary["stats"]["from_cache"] == len(PARA)
    # Another max_tokens is another cache key.
    r3 = run(d, tmp_path / "o3", eps=0.1, cache_dir=cache, max_tokens=64)
    assert r3.summary["stats"]["embedded_now"] == len(PARA)
    # Changing one shard re-embeds only that shard.
    write_parquet(d / "b.parquet", make_rows(["a brand new text about rivers and boats"] * 3, prefix="n"))
    r4 = run(d, tmp_path / "o4", eps=0.1, cache_dir=cache)
    assert r4.summary["stats"]["embedded_now"] == 3
    # no cache: computes everything, writes nothing new
    r5 = run(d, tmp_path / "o5", eps=0.1, cache_dir=str(tmp_path / "nocache"), no_cache=True)
    assert r5.summary["stats"]["embedded_now"] == 6
    assert not (tmp_path / "nocache").exists()


def test_skip_chaining_and_cache_grows(tmp_path, corpus):
    cache = str(tmp_path / "cache")
    ex = api.exact([str(corpus)], str(tmp_path / "exact"), id_column="id", normalize="whitespace,lower")
    assert ex.summary["counts"]["dropped"] == 4
    r = run(corpus, tmp_path / "sem", skip=[str(tmp_path / "exact")], eps=0.01, cache_dir=cache)
    rows = read_manifest(tmp_path / "sem")
    assert len(rows) == len(BASE_DOCS)
    assert r.summary["stats"]["embedded_now"] == 4  # only rows exact kept
    assert sum(not x["keep"] for x in rows) == 4
    assert all(x["stage"] == "exact" for x in rows if not x["keep"])
    # A run without --skip needs the other rows too: only those are embedded now.
    r2 = run(corpus, tmp_path / "sem2", eps=0.01, cache_dir=cache)
    assert r2.summary["stats"]["embedded_now"] == 4 and r2.summary["stats"]["from_cache"] == 4


def test_bad_records_are_counted_not_embedded(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "a.jsonl").write_text('{"id": "a", "text": "hello there world"}\nnot json\n'
                               '{"id": "b", "text": "hello there world"}\n')
    r = run(d, tmp_path / "o", on_bad_record="skip", eps=0.01, cache_dir=str(tmp_path / "c"))
    assert r.summary["counts"]["bad_records"] == 1
    rows = read_manifest(tmp_path / "o")
    assert [x["keep"] for x in rows] == [True, False, False]
    assert rows[2]["duplicate_of"] == "a"


def test_config_errors():
    with pytest.raises(ConfigError, match="--analyze"):
        SemanticConfig(eps="0.1,0.2")
    with pytest.raises(ConfigError, match="eps"):
        parse_eps("0.1,abc")
    with pytest.raises(ConfigError, match=r"\(0, 2\]"):
        parse_eps(0)
    with pytest.raises(ConfigError, match="keep must be"):
        SemanticConfig(keep="median")
    assert parse_eps("0.2, 0.05,0.05") == (0.05, 0.2)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), seed=st.integers(0, 1000), thr=st.floats(0.3, 0.99),
       method=st.sampled_from(["exact", "kmeans"]), k=st.integers(1, 8))
def test_no_chaining_every_drop_points_to_a_kept_direct_neighbour(n, seed, thr, method, k):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(3, 8))
    x = base[rng.integers(0, 3, n)] + 0.3 * rng.normal(size=(n, 8))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    groups = rng.integers(0, 2, n)
    nb = search(x, k=k, threshold=thr, method=method, groups=groups if method == "kmeans" else None)
    rank = rng.permutation(n)
    docs, centre, sim = claims(nb, thr, rank)
    dropped = set(docs.tolist())
    edges = {tuple(e) for e in nb.edges.tolist()}
    for d, c, s in zip(docs.tolist(), centre.tolist(), sim.tolist()):
        assert c not in dropped  # the representative is kept ...
        assert (min(c, d), max(c, d)) in edges  # ... a neighbour the search found ...
        assert s == pytest.approx(float(x[c] @ x[d]), abs=1e-5) and s >= thr  # ... at the threshold
        assert rank[c] < rank[d]  # and ranked before it
    # greedy centres leave no two kept documents linked: each kept one was free when visited
    assert not [e for e in edges if e[0] not in dropped and e[1] not in dropped and
                float(x[e[0]] @ x[e[1]]) >= thr]


def path_vectors() -> np.ndarray:
    """a ~ b ~ c at cosine 0.9, a ~ c at 0.62, and z orthogonal to all three."""
    b = np.array([0.9, np.sqrt(1 - 0.81), 0.0, 0.0])
    c_y = (0.9 - 0.62 * b[0]) / b[1]
    c = np.array([0.62, c_y, np.sqrt(max(0.0, 1 - 0.62 ** 2 - c_y ** 2)), 0.0])
    return np.stack([[1.0, 0.0, 0.0, 0.0], b, c, [0.0, 0.0, 0.0, 1.0]]).astype(np.float32)


class PathEmbedder:
    """Texts 'a', 'b', 'c', 'z' embedded as :func:`path_vectors`."""

    key = "path:4"

    def encode(self, texts):
        x = path_vectors()
        return np.stack([x["abcz".index(t)] for t in texts]) if len(texts) else np.zeros((0, 4), np.float32)


def path_factory(arg: str, config: EmbedConfig) -> PathEmbedder:
    return PathEmbedder()


register_embedder("path", path_factory)


def test_default_keep_makes_the_central_document_the_centre(tmp_path):
    # b is the most typical (cosine 0.9 to a and to c): by default it is kept and claims both,
    # one survivor for the group; --keep hard keeps a first, which claims b but not c (0.62).
    d = tmp_path / "path"
    write_rows(d / "a", make_rows(["a", "b", "c", "z"]), "parquet")
    run(d, tmp_path / "default", model="path:", eps=0.15, cache_dir=str(tmp_path / "cache"))
    assert kept(tmp_path / "default") == {"d1", "d3"}
    assert {r["doc_id"]: r["duplicate_of"] for r in read_manifest(tmp_path / "default") if not r["keep"]} == {
        "d0": "d1", "d2": "d1"}
    run(d, tmp_path / "hard", model="path:", eps=0.15, keep="hard", cache_dir=str(tmp_path / "cache"))
    assert kept(tmp_path / "hard") == {"d0", "d2", "d3"}
    for name in ("default", "hard"):
        check_manifest(read_manifest(tmp_path / name), stage="semantic")


def test_no_chaining_on_a_path():
    # a ~ b ~ c at 0.9, a ~ c at 0.62: c is not a duplicate of a, so it stays
    a = np.array([1.0, 0.0, 0.0])
    b = np.array([0.9, np.sqrt(1 - 0.81), 0.0])
    c = np.array([0.62, 0.0, 0.0]) + 0.0
    # c with cos 0.9 to b and 0.62 to a
    cb = 0.9
    c_y = (cb - 0.62 * b[0]) / b[1]
    c = np.array([0.62, c_y, np.sqrt(max(0.0, 1 - 0.62 ** 2 - c_y ** 2))])
    x = np.stack([a, b, c]).astype(np.float32)
    assert x[0] @ x[2] < 0.85 <= min(x[0] @ x[1], x[1] @ x[2])
    nb = search(x, k=2, threshold=0.85, method="exact")
    docs, centre, _ = claims(nb, 0.85, np.arange(3))
    assert docs.tolist() == [1] and centre.tolist() == [0]  # c is kept, not chained to a through b


def test_archaic_forms_are_modernised_for_the_embedder_only(tmp_path):
    rows = make_rows(["Thou hast kept thy word unto me and he keepeth it",
                      "You have kept your word to me and he keeps it",
                      "a recipe for bread needs flour water salt and yeast"])
    write_parquet(tmp_path / "d" / "a.parquet", rows)
    cache = str(tmp_path / "c")
    on = run(tmp_path / "d", tmp_path / "on", eps=0.05, cache_dir=cache, keep="first", embed_normalize="archaic")
    off = run(tmp_path / "d", tmp_path / "off", eps=0.05, cache_dir=cache, keep="first")  # default: none
    assert on.summary["counts"]["dropped"] == 1 and off.summary["counts"]["dropped"] == 0
    dropped = [r for r in read_manifest(tmp_path / "on") if not r["keep"]]
    assert dropped[0]["duplicate_of"] == rows[0]["id"] and dropped[0]["score"] > 0.99
    # two cache entries: normalized text has its own key
    assert on.summary["stats"]["model_key"] != off.summary["stats"]["model_key"]
    assert off.summary["stats"]["embedded_now"] == 3
    with pytest.raises(ConfigError, match="embed_normalize"):
        SemanticConfig(embed_normalize="old")


def test_cli_help_analyze_and_errors(tmp_path):
    d = para_corpus(tmp_path)
    runner = CliRunner()
    h = runner.invoke(cli, ["semantic", "--help"])
    assert h.exit_code == 0 and "Example:" in h.output and "--analyze" in h.output
    out = tmp_path / "an"
    r = runner.invoke(cli, ["semantic", str(d), "-o", str(out), "--id-column", "id", "--model", FAKE,
                            "--analyze", "--eps", "0.05,0.25", "--clusters", "1",
                            "--cache-dir", str(tmp_path / "c")])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str(out)
    assert "would drop" in r.stderr and "eps 0.25" in r.stderr and "just inside" in r.stderr
    # the HTML report shows the same table and boundary pairs
    rep = runner.invoke(cli, ["report", str(out), "-o", str(tmp_path / "rep.html")])
    assert rep.exit_code == 0, rep.output
    page = (tmp_path / "rep.html").read_text()
    analysis = json.loads((out / "analysis.json").read_text())
    assert "what each eps would remove" in page
    for row in analysis["per_eps"]:
        assert f"<td>{row['eps']}</td><td>{row['threshold']}</td><td>{row['drop']}</td>" in page
    pair = next(p for smp in analysis["samples"] for p in smp["above"] + smp["below"])
    assert pair["doc"] in page and pair["neighbour"] in page
    bad = runner.invoke(cli, ["semantic", str(d), "-o", str(tmp_path / "x"), "--model", FAKE, "--eps", "0.1,0.2"])
    assert bad.exit_code == 1 and "--analyze" in bad.stderr
    neg = runner.invoke(cli, ["semantic", str(d), "-o", str(tmp_path / "y"), "--model", FAKE, "--eps", "-1"])
    assert neg.exit_code == 1 and "eps must be" in neg.stderr
    missing = runner.invoke(cli, ["semantic", str(d), "-o", str(tmp_path / "z"), "--model",
                                  str(tmp_path / "no-such-model"), "--cache-dir", str(tmp_path / "c")])
    assert missing.exit_code == 1 and "does not exist" in missing.stderr
    assert not (tmp_path / "z" / "summary.json").exists()


def test_guardrail(tmp_path):
    d = para_corpus(tmp_path)
    runner = CliRunner()
    r = runner.invoke(cli, ["semantic", str(d), "-o", str(tmp_path / "g"), "--model", FAKE, "--eps", "0.6",
                            "--clusters", "1", "--max-drop-rate", "0.1", "--cache-dir", str(tmp_path / "c")])
    assert r.exit_code == 4, r.output
    assert not (tmp_path / "g" / "summary.json").exists()


@pytest.mark.model
def test_real_packaged_model(tmp_path):
    """The packaged all-MiniLM-L6-v2, no fake: a paraphrase pair is merged, unrelated texts kept."""
    texts = [
        "How do I learn to program in Python?",
        "What is the best way to learn Python programming?",
        "What is the capital city of France?",
        "My bicycle tire keeps going flat.",
    ]
    d = tmp_path / "tiny"
    write_jsonl(d / "q.jsonl", make_rows(texts))
    cache = tmp_path / "cache"
    r = api.semantic([str(d)], str(tmp_path / "out"), id_column="id", eps=0.3, keep="first",
                     cache_dir=str(cache), device="cpu")
    rows = read_manifest(tmp_path / "out")
    check_manifest(rows, stage="semantic")
    assert [x["keep"] for x in rows] == [True, False, True, True]
    assert rows[1]["duplicate_of"] == "d0" and 0.7 <= rows[1]["score"] < 1.0
    assert r.summary["stats"]["dim"] == 384
    assert r.summary["stats"]["device"] == "cpu"
    emb = np.load(next(cache.rglob("*.emb.npy")))
    assert emb.shape == (4, 384)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    assert emb[0] @ emb[1] > 0.7 > max(emb[0] @ emb[2], emb[0] @ emb[3])
    r2 = api.semantic([str(d)], str(tmp_path / "out2"), id_column="id", eps=0.01, cache_dir=str(cache))
    assert r2.summary["stats"]["embedded_now"] == 0 and r2.summary["counts"]["dropped"] == 0
    assert r2.summary["stats"]["device"] == "cache"


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@pytest.mark.model
@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_available(), reason="needs a CUDA GPU that torch can see")
def test_real_model_on_cuda_matches_cpu(tmp_path):
    """--device cuda embeds on the GPU and decides exactly what --device cpu decides."""
    from dedupkit.embed import get_embedder

    topics = ["learn to program in Python", "the capital city of France", "fix a flat bicycle tire",
              "bake sourdough bread at home", "train for a marathon", "the price of gold today",
              "grow tomatoes on a balcony", "renew a passport quickly"]
    texts = []
    for t in topics:
        texts += [f"How do I {t}?" if not t.startswith("the") else f"What is {t}?",
                  f"What is the best way to {t}?" if not t.startswith("the") else f"Tell me {t}.",
                  f"Unrelated note number {len(texts)}: the meeting moved to Thursday afternoon."]
    d = tmp_path / "q"
    write_parquet(d / "q.parquet", make_rows(texts))
    cpu = get_embedder(EmbedConfig(device="cpu", backend="torch")).encode(texts)  # the same fp32 model
    gpu_emb = get_embedder(EmbedConfig(device="cuda"))
    assert gpu_emb.device == "cuda"
    gpu = gpu_emb.encode(texts)
    assert gpu.shape == cpu.shape == (len(texts), 384)
    assert np.min(np.einsum("ij,ij->i", cpu, gpu)) > 0.9999
    runs = {}
    for device in ("cpu", "cuda", "auto"):
        r = api.semantic([str(d)], str(tmp_path / f"o-{device}"), id_column="id", eps=0.2, keep="first",
                         cache_dir=str(tmp_path / f"c-{device}"), device=device, backend="torch")
        assert r.summary["stats"]["device"] == ("cpu" if device == "cpu" else "cuda")
        runs[device] = read_manifest(tmp_path / f"o-{device}")
    for device in ("cuda", "auto"):
        for a, b in zip(runs["cpu"], runs[device]):
            assert (a["doc_id"], a["keep"], a["duplicate_of"], a["cluster_id"]) == \
                (b["doc_id"], b["keep"], b["duplicate_of"], b["cluster_id"])
            assert (a["score"] is None) == (b["score"] is None)
            if a["score"] is not None:
                assert abs(a["score"] - b["score"]) < 1e-4
    assert sum(not x["keep"] for x in runs["cpu"]) >= 3


def test_cli_subprocess_usage_errors(tmp_path):
    d = para_corpus(tmp_path)
    p = run_subprocess("semantic", str(d), "-o", str(tmp_path / "o"), "--eps", "0.1,0.2")
    assert p.returncode == 1 and "--analyze" in p.stderr and p.stdout == ""
    p = run_subprocess("semantic", str(d), "-o", str(tmp_path / "o"), "--keep", "median")
    assert p.returncode == 2 and "median" in p.stderr
    assert not (tmp_path / "o" / "summary.json").exists()


WORDS = ["alpha", "beta", "gamma", "delta", "river", "stone", "cloud", "market", "bread", "train"]


@settings(max_examples=8, deadline=None)
@given(docs=st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(" ".join), min_size=1, max_size=25),
       eps=st.sampled_from([0.01, 0.1, 0.3]), keep=st.sampled_from(["hard", "easy", "random", "first"]),
       clusters=st.integers(1, 3))
def test_manifest_invariants_property(tmp_path_factory, docs, eps, keep, clusters):
    tmp = tmp_path_factory.mktemp("prop")
    half = len(docs) // 2
    write_parquet(tmp / "d" / "a.parquet", make_rows(docs[:half] or ["alpha"], prefix="a"))
    write_jsonl(tmp / "d" / "b.jsonl", make_rows(docs[half:], prefix="b"))
    n_in = (half or 1) + len(docs) - half
    r = run(tmp / "d", tmp / "o", eps=eps, keep=keep, clusters=clusters, cache_dir=str(tmp / "c"))
    rows = read_manifest(tmp / "o")
    assert len(rows) == n_in == r.summary["counts"]["rows"]
    assert sorted((x["shard"].rsplit("/", 1)[-1], x["row"]) for x in rows) == sorted(
        [("a.parquet", i) for i in range(half or 1)] + [("b.jsonl", i) for i in range(len(docs) - half)])
    check_manifest(rows, stage="semantic")
    for x in rows:
        if x["keep"]:
            assert x["duplicate_of"] is None
        else:
            assert x["nearest_sim"] >= 1 - eps - 1e-6


LONG_A = ("The committee approved the new budget after a long debate about school funding and the cost "
          "of repairing roads in the northern district of the city")
LONG_B = ("After a long debate on school funding and on what repairing roads in the city's northern "
          "district would cost, the committee approved the new budget")
NUM_A = ("The committee approved the 2019 budget after a long debate about school funding and the cost "
         "of repairing roads in the northern district of the city")
NUM_B = ("The committee approved the 2020 budget after a long debate about school funding and the cost "
         "of repairing roads in the northern district of the city")
SHORT_A, SHORT_B = "How do I learn Python quickly?", "How do I learn Java quickly?"
BAND_TEXTS = [LONG_A, LONG_B, SHORT_A, SHORT_B, NUM_A, NUM_B]


class PairEmbedder:
    """Texts in consecutive pairs (0-1, 2-3, ...), pair k at cosine ``cosines[k]``, the pairs
    orthogonal to each other."""

    def __init__(self, texts, cosines, name):
        self.texts, self.cosines = texts, cosines
        self.key, self.dim = f"{name}:{len(texts)}", len(texts)

    def encode(self, texts):
        out = np.zeros((len(texts), self.dim), np.float32)
        for r, t in enumerate(texts):
            i = self.texts.index(t)
            c = self.cosines[i // 2]
            out[r, i - i % 2] = 1.0 if i % 2 == 0 else c
            if i % 2:
                out[r, i] = np.sqrt(1 - c ** 2)
        return out


def band_factory(arg: str, config: EmbedConfig) -> PairEmbedder:
    """Each pair of :data:`BAND_TEXTS` at cosine 0.88 (inside the default rewrite band, below 1 - eps)."""
    return PairEmbedder(BAND_TEXTS, (0.88,) * 3, "band")


register_embedder("band", band_factory)


def test_rewrite_band_takes_long_rewrites_but_not_short_near_misses_or_other_numbers(tmp_path):
    from dedupkit.stages.semantic import DEFAULT_EPS, DEFAULT_REWRITE_EPS

    assert 1 - DEFAULT_EPS - DEFAULT_REWRITE_EPS <= 0.88 < 1 - DEFAULT_EPS  # the pairs sit in the default band
    d = tmp_path / "band"
    write_rows(d / "a", make_rows(BAND_TEXTS), "parquet")
    cache = str(tmp_path / "cache")
    res = run(d, tmp_path / "default", model="band:", cache_dir=cache)
    dropped = {r["doc_id"]: (r["duplicate_of"], r["score"]) for r in read_manifest(tmp_path / "default")
               if not r["keep"]}
    # only the long rewrite goes, pointing at its direct neighbour with their cosine
    assert list(dropped) in (["d0"], ["d1"]) and dropped.popitem()[1][1] == pytest.approx(0.88, abs=1e-6)
    assert res.summary["stats"]["per_eps"][0]["rewrite_pairs"] == 1
    check_manifest(read_manifest(tmp_path / "default"), stage="semantic")
    run(d, tmp_path / "cosine", model="band:", rewrite_eps=0, cache_dir=cache)  # cosine only: nothing
    assert kept(tmp_path / "cosine") == {f"d{i}" for i in range(6)}
    run(d, tmp_path / "wide", model="band:", eps=0.15, cache_dir=cache)  # eps alone covers all three
    assert len(kept(tmp_path / "wide")) == 3
    an = run(d, tmp_path / "an", model="band:", eps="0.06,0.15", analyze=True, cache_dir=cache)
    assert [r["drop"] for r in an.summary["stats"]["per_eps"]] == [1, 3]


def test_rewrite_ok_rules():
    from dedupkit.stages.semantic import REWRITE_MIN_WORDS, content_words, rewrite_ok

    w = lambda t: content_words(t)  # noqa: E731
    assert rewrite_ok(w(LONG_A), w(LONG_B))
    assert not rewrite_ok(w(NUM_A), w(NUM_B))  # each holds a number the other lacks
    assert rewrite_ok(w(NUM_A), w(NUM_A.replace("2019 ", "")))  # one side without it: not a conflict
    assert not rewrite_ok(w(SHORT_A), w(SHORT_A))  # too short, even identical
    n, _ = w(LONG_A)
    assert n >= REWRITE_MIN_WORDS
    other = ("Engineers measured the river's water level every morning during the spring floods and "
             "reported rising danger to the mayor's office")
    assert not rewrite_ok(w(LONG_A), w(other))  # same length, few shared content words


def test_rewrite_ok_vetoes_one_template_with_another_name():
    from dedupkit.stages.semantic import content_words, proper_names, rewrite_ok

    def ok(a, b):
        return rewrite_ok(content_words(a), content_words(b), (proper_names(a), proper_names(b)))

    assert not ok(HOTEL_A, HOTEL_B)  # same words, another town: another question
    assert ok(HOTEL_A, HOTEL_A.replace("Manali", "Manali town"))  # nothing swapped on one side
    # a lower-case word swapped (a rewrite's synonym) is no name: still a rewrite
    assert ok(LONG_A, LONG_A.replace("debate", "discussion"))
    # a rewrite that also names the place differently changes more than the name: still a rewrite
    assert ok(HOTEL_A, "Which hotels in Manali Hill-station are safe for an unmarried couple, free of harassment "
                       "by the police, the hotel staff or the moral police, and cheap enough for a student?")
    assert proper_names("Rome is old. We saw Rome and the Vatican (Italy) in Italy") == {"rome", "vatican", "italy"}


HOTEL_A = ("What hotel in Manali Hill-station would be safe for unmarried couples, without the harassment "
           "of police, hotel staff and moral police, on a small budget?")
HOTEL_B = ("What hotel in Jhansi would be safe for unmarried couples, without the harassment "
           "of police, hotel staff and moral police, on a small budget?")
DEPTH_TEXTS = [LONG_A, LONG_B, HOTEL_A, HOTEL_B]
DEPTH_COS = (0.82, 0.9)  # cosine of the rewrite pair, of the template pair


def depth_factory(arg: str, config: EmbedConfig) -> PairEmbedder:
    """:data:`DEPTH_TEXTS`: the long rewrite at cosine 0.82, the hotel template with another town at 0.9."""
    return PairEmbedder(DEPTH_TEXTS, DEPTH_COS, "depth")


register_embedder("depth", depth_factory)


def test_rewrite_band_follows_eps_and_keeps_templates_with_another_name(tmp_path):
    from dedupkit.stages.semantic import DEFAULT_EPS, DEFAULT_REWRITE_EPS

    # the rewrite pair is inside the default band, but not inside the band under eps 0.03
    assert 1 - DEFAULT_EPS - DEFAULT_REWRITE_EPS <= 0.82 < 1 - 0.03 - DEFAULT_REWRITE_EPS
    d = tmp_path / "depth"
    write_rows(d / "a", make_rows(DEPTH_TEXTS), "parquet")
    cache = str(tmp_path / "cache")
    run(d, tmp_path / "default", model="depth:", cache_dir=cache)
    # the long rewrite goes; the hotel question about another town stays, although at cosine 0.9
    assert kept(tmp_path / "default") in ({"d0", "d2", "d3"}, {"d1", "d2", "d3"})
    run(d, tmp_path / "strict", model="depth:", eps=0.03, cache_dir=cache)  # a strict eps: a narrow band
    assert kept(tmp_path / "strict") == {"d0", "d1", "d2", "d3"}
    run(d, tmp_path / "loose", model="depth:", eps=0.12, cache_dir=cache)  # the cosine alone takes the hotels
    assert len(kept(tmp_path / "loose")) == 2
    an = run(d, tmp_path / "an", model="depth:", eps="0.03,0.055,0.12", analyze=True, cache_dir=cache)
    assert [r["drop"] for r in an.summary["stats"]["per_eps"]] == [0, 1, 2]
    assert [r["rewrite_pairs"] for r in an.summary["stats"]["per_eps"]] == [0, 1, 1]
    # the mutual tier reaches further: the rewrite pair (each other's nearest neighbour) under eps 0.03
    assert 1 - 0.03 - DEFAULT_REWRITE_EPS - 0.105 <= 0.82
    run(d, tmp_path / "mutual", model="depth:", eps=0.03, mutual_eps=0.105, cache_dir=cache)
    assert kept(tmp_path / "mutual") in ({"d0", "d2", "d3"}, {"d1", "d2", "d3"})


# --- keep easy / hard: scores equal up to float noise tie -----------------------------------

NOISE_TEXTS = [f"the same text, copy {k}" for k in range(3)] + [f"another text {i} on the same subject"
                                                                 for i in range(3)]


class NoisyCopiesEmbedder:
    """Three copies of one text (copy k) whose vectors differ by float noise (~1e-6: what a batch
    or thread count changes), the later copies a hair closer to three other documents at cosine
    ~0.7."""

    key, dim = "noisy-copies", 4

    def encode(self, texts):
        out = np.zeros((len(texts), self.dim), np.float64)
        for r, t in enumerate(texts):
            w = t.split()
            if w[1] == "same":
                out[r, 0], out[r, 1] = 1.0, 2e-6 * int(w[-1])
            else:
                i = int(w[2])
                out[r, 0], out[r, 1], out[r, 2 + i % 2] = 0.7, 0.7, 0.1 * (i + 1)
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out.astype(np.float32)


register_embedder("noisy-copies", lambda arg, config: NoisyCopiesEmbedder())


@pytest.mark.parametrize("keep", ["easy", "hard"])
def test_copies_whose_typicality_differs_by_float_noise_keep_the_first(tmp_path, keep):
    """keep easy/hard rank by how typical a document is; copies of one text are equally typical, so
    the first copy is kept (the documented tie rule), not the one float noise happens to favour."""
    d = tmp_path / "noisy"
    write_rows(d / "a", make_rows(NOISE_TEXTS), "parquet")
    run(d, tmp_path / "out", model="noisy-copies:", keep=keep, eps=0.01, cache_dir=str(tmp_path / "cache"))
    rows = read_manifest(tmp_path / "out")[:3]
    assert [r["keep"] for r in rows] == [True, False, False], rows
    assert {r["duplicate_of"] for r in rows[1:]} == {rows[0]["doc_id"]}


def test_mutual_nearest_pairs_each_others_first_neighbour_only():
    from types import SimpleNamespace

    from dedupkit.stages.semantic import mutual_nearest

    # 0-1 at 0.72, 1-2 at 0.75, 0-2 at 0.5, 3-4 at 0.7: 1 and 2 pick each other, 0 picks 1 (not
    # mutual), 3 and 4 pick each other; a tie (5-6 and 5-7 at 0.9) goes to the lower index
    nb = SimpleNamespace(edges=np.array([[0, 1], [0, 2], [1, 2], [3, 4], [5, 6], [5, 7]]),
                         sims=np.array([0.72, 0.5, 0.75, 0.7, 0.9, 0.9], np.float32))
    assert mutual_nearest(nb).tolist() == [False, False, True, True, True, False]
    nb.sims = nb.sims + np.float32(0.05)  # one shift for all (semantic_refine): the same pairs
    assert mutual_nearest(nb).tolist() == [False, False, True, True, True, False]
    with pytest.raises(ConfigError, match="mutual_eps"):
        SemanticConfig(mutual_eps=-0.1)


#: Archaic and modern renderings of one passage (written for this test), each pair at cosine 0.72-0.77
#: with the packaged MiniLM: below the rewrite band (0.79 at the default), inside the mutual band (0.685).
MUTUAL_TEXTS = [
    "Hearken unto the miller, for he hath ground the corn of the whole village these forty winters, and "
    "never once hath he taken more than his rightful portion of the meal thereof.",
    "Listen to the miller: he has ground the whole village's grain for forty winters and has never once "
    "kept more than his fair share of the flour.",
    "The old ferryman spake unto the travellers, saying, the river riseth swiftly after the rains, wherefore "
    "tarry ye not upon the far bank when the sun goeth down behind the hills.",
    "The old ferryman told the travellers that the river rises quickly after the rain, so they should not "
    "wait on the far bank once the sun sets behind the hills.",
    "Woe unto the merchant that useth false weights in the market, for the people shall discover his deceit "
    "and his stall shall stand empty, and no man shall buy of his wares again.",
    "A merchant who uses false weights at the market is in trouble: people will find out his cheating, his "
    "stall will stand empty, and nobody will buy his goods again.",
]


@pytest.mark.model
@pytest.mark.slow
def test_real_model_takes_translations_that_pick_each_other_first(tmp_path):
    """The packaged MiniLM: with ``--mutual-eps``, an archaic and a modern rendering that are each
    other's nearest neighbour count below the rewrite band; the same archaic text is kept once a
    closer copy of its modern rendering stands between them (its nearest neighbour no longer picks
    it back). Off by default."""
    from dedupkit.stages.semantic import DEFAULT_EPS, DEFAULT_REWRITE_EPS, MUTUAL_EPS_TRANSLATIONS, band_depth

    m = MUTUAL_EPS_TRANSLATIONS
    lo, hi = 1 - DEFAULT_EPS - band_depth(DEFAULT_REWRITE_EPS, m), 1 - DEFAULT_EPS - DEFAULT_REWRITE_EPS
    d = tmp_path / "pairs"
    write_jsonl(d / "a.jsonl", make_rows(MUTUAL_TEXTS))
    cache = str(tmp_path / "cache")
    api.semantic([str(d)], str(tmp_path / "default"), id_column="id", keep="first", cache_dir=cache, device="cpu")
    assert kept(tmp_path / "default") == {f"d{i}" for i in range(6)}  # below the band: the default keeps all
    r = api.semantic([str(d)], str(tmp_path / "mutual"), id_column="id", keep="first", mutual_eps=m,
                     cache_dir=cache, device="cpu")
    rows = read_manifest(tmp_path / "mutual")
    check_manifest(rows, stage="semantic")
    dropped = {x["doc_id"]: (x["duplicate_of"], x["score"]) for x in rows if not x["keep"]}
    assert sorted(dropped) == ["d1", "d3", "d5"]  # each modern rendering, pointing at its own archaic one
    for doc, (of, score) in dropped.items():
        assert of == f"d{int(doc[1:]) - 1}" and lo <= score < hi
    per_eps = r.summary["stats"]["per_eps"][0]
    assert per_eps["rewrite_pairs"] == per_eps["mutual_pairs"] == 3
    # a light edit of the miller's modern rendering: it and the modern one pick each other, so the
    # archaic miller (whose nearest is one of them) has no partner that picks it back and stays
    edit = MUTUAL_TEXTS[1].replace("the whole village's", "the entire village's")
    write_jsonl(d / "b.jsonl", [{"id": "d6", "text": edit, "n": 6}])
    res = CliRunner().invoke(cli, ["semantic", str(d), "-o", str(tmp_path / "edit"), "--id-column", "id",
                                   "--keep", "first", "--mutual-eps", str(m), "--cache-dir", cache, "--device", "cpu"])
    assert res.exit_code == 0, res.output
    got = {x["doc_id"]: x for x in read_manifest(tmp_path / "edit")}
    assert got["d0"]["keep"] and not got["d6"]["keep"] and got["d6"]["duplicate_of"] == "d1"
    assert [got[f"d{i}"]["keep"] for i in range(2, 6)] == [True, False, True, False]
