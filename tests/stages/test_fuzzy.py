"""The fuzzy stage end to end on real Parquet/JSONL shards, its array steps, and its command line."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import make_rows, read_manifest, run_subprocess, write_rows
from tests.support.invariants import check_manifest
from dedupkit import api
from dedupkit.cli.main import cli
from dedupkit.errors import ConfigError
from dedupkit.stages import fuzzy as fz

WORDS = ("market shares trade company bank oil price rate said year percent growth exports "
         "government minister profit quarter dividend stock bond yield dollar index").split()


def article(seed: int, n: int = 80) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) + str(rng.randint(0, 50)) for _ in range(n))


def edited(text: str, seed: int, edits: int) -> str:
    rng = random.Random(seed)
    w = text.split()
    for _ in range(edits):
        w[rng.randrange(len(w))] = "edit" + str(rng.randint(0, 10**6))
    return " ".join(w)


def near_dup_texts() -> tuple[list[str], list[int]]:
    """Texts and their planted cluster (index of the original): originals, light edits, reformatting."""
    texts, truth = [], []
    for k in range(6):
        base = article(k)
        texts.append(base)
        truth.append(len(texts) - 1)
    for k in range(3):
        texts.append(edited(texts[k], 100 + k, 1))  # one word in 80 changed: Jaccard ~ 0.89
        truth.append(k)
    texts.append(texts[4].upper().replace(" ", "  \n"))  # case and whitespace only: Jaccard 1
    truth.append(4)
    texts.append("")  # no tokens: never a fuzzy duplicate
    truth.append(len(texts) - 1)
    texts.append("...")
    truth.append(len(texts) - 1)
    return texts, truth


def write(tmp_path, texts, fmt="parquet", shards=2, prefix="d"):
    d = tmp_path / "data"
    rows = make_rows(texts, prefix=prefix)
    size = -(-len(rows) // shards)
    for i in range(shards):
        part = rows[i * size:(i + 1) * size]
        if not part:
            continue
        write_rows(d / f"part{i}", part, fmt)
    return d


def check_fuzzy_manifest(rows, n_input):
    """The shared invariants, and: every row is fuzzy's, a dropped row has its Jaccard score."""
    check_manifest(rows, n_input)
    for r in rows:
        assert r["stage"] == "fuzzy"
        if not r["keep"]:
            assert r["score"] is not None
        if r["cluster_id"] is None:
            assert r["keep"] and r["score"] is None


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_finds_planted_near_duplicates(tmp_path, fmt):
    texts, truth = near_dup_texts()
    data = write(tmp_path, texts, fmt)
    res = api.fuzzy([str(data)], str(tmp_path / "out"), id_column="id", threshold=0.7)
    rows = read_manifest(tmp_path / "out")
    check_fuzzy_manifest(rows, len(texts))
    got = {r["doc_id"]: r for r in rows}
    dropped = {int(r["doc_id"][1:]) for r in rows if not r["keep"]}
    expect = {i for i, t in enumerate(truth) if t != i}
    assert dropped == expect
    for i in expect:
        assert got[f"d{i}"]["duplicate_of"] == f"d{truth[i]}"
    assert got["d9"]["score"] == 1.0  # case/whitespace change: identical shingle sets
    assert 0.6 < got["d6"]["score"] < 1.0
    stats = res.summary["stats"]
    assert stats["bands"] * stats["rows"] <= 128
    assert set(stats["detection_probability"]) == {"0.5", "0.7", "0.8", "0.9"}
    assert stats["documents_without_shingles"] == 2
    assert res.summary["config"]["stage"]["threshold"] == 0.7


def test_manifest_identical_for_any_worker_count_and_batch_size(tmp_path):
    texts, _ = near_dup_texts()
    texts = texts * 3  # exact copies across shards too
    data = write(tmp_path, texts, shards=3)
    api.fuzzy([str(data)], str(tmp_path / "w1"), batch_size=4, workers=1)
    api.fuzzy([str(data)], str(tmp_path / "w2"), batch_size=1000, workers=2)
    a, b = read_manifest(tmp_path / "w1"), read_manifest(tmp_path / "w2")
    assert a == b
    check_fuzzy_manifest(a, len(texts))


def test_partitioned_buckets_give_the_same_manifest(tmp_path, monkeypatch):
    texts, _ = near_dup_texts()
    data = write(tmp_path, texts * 2)
    api.fuzzy([str(data)], str(tmp_path / "one"))
    monkeypatch.setattr("dedupkit.stages.fuzzy.stage.DOCS_PER_PARTITION", 3)
    monkeypatch.setattr("dedupkit.stages.fuzzy.single.PAIRS_PER_TASK", 2)
    res = api.fuzzy([str(data)], str(tmp_path / "many"))
    assert res.summary["stats"]["partitions_per_band"] > 1
    assert read_manifest(tmp_path / "one") == read_manifest(tmp_path / "many")


def test_verify_modes(tmp_path):
    base = article(1, 100)
    # Jaccard of 5-gram sets between base and this copy is low (~0.5): half the text replaced.
    half = " ".join(base.split()[:50] + article(2, 50).split())
    texts = [base, half, edited(base, 3, 1)]
    data = write(tmp_path, texts, shards=1)
    kw = dict(threshold=0.4, bands=32, rows=1, num_perm=32)  # every pair sharing a value is a candidate
    none = api.fuzzy([str(data)], str(tmp_path / "n"), verify="none", **kw).summary["stats"]
    sig = api.fuzzy([str(data)], str(tmp_path / "s"), verify="signature", **{**kw, "threshold": 0.8}).summary["stats"]
    jac = api.fuzzy([str(data)], str(tmp_path / "j"), verify="jaccard", **{**kw, "threshold": 0.8}).summary["stats"]
    assert none["candidate_pairs"] == 3 and none["verified_pairs"] == 3
    assert sig["verified_pairs"] == 1 and jac["verified_pairs"] == 1
    kept = [r["keep"] for r in read_manifest(tmp_path / "j")]
    assert kept == [True, True, False]


def test_jaccard_verify_uses_true_shingle_jaccard(tmp_path):
    # 20 distinct 5-grams shared, sizes chosen so the true Jaccard is exactly 0.75 or 0.5.
    a = " ".join(f"a{i}" for i in range(24))  # 20 shingles
    b = " ".join(f"a{i}" for i in range(24)) + " " + " ".join(f"b{i}" for i in range(20))
    data = write(tmp_path, [a, b], shards=1)
    kw = dict(verify="jaccard", bands=64, rows=1, num_perm=64)
    r1 = api.fuzzy([str(data)], str(tmp_path / "lo"), threshold=0.3, **kw).summary["stats"]
    r2 = api.fuzzy([str(data)], str(tmp_path / "hi"), threshold=0.6, **kw).summary["stats"]
    assert r1["verified_pairs"] == 1 and r2["verified_pairs"] == 0  # true Jaccard = 20/44 = 0.4545


def test_skip_chaining_carries_rows_dropped_by_exact(tmp_path):
    texts, _ = near_dup_texts()
    texts = texts + [texts[0]]  # an exact copy for the exact stage
    data = write(tmp_path, texts)
    api.exact([str(data)], str(tmp_path / "exact"), id_column="id")
    res = api.fuzzy([str(data)], str(tmp_path / "fuzzy"), id_column="id", skip=[str(tmp_path / "exact")],
                    threshold=0.7)
    rows = read_manifest(tmp_path / "fuzzy")
    assert len(rows) == len(texts)
    last = next(r for r in rows if r["doc_id"] == f"d{len(texts) - 1}")
    assert not last["keep"] and last["stage"] == "exact"
    exact_dropped = sum(not r["keep"] for r in read_manifest(tmp_path / "exact"))
    assert exact_dropped >= 1  # the copy (and, with lower-casing, the upper-cased variant)
    assert res.summary["counts"]["dropped_earlier"] == exact_dropped
    assert res.summary["counts"]["dropped"] == 5  # 4 planted near-duplicates + the copy
    assert res.summary["counts"]["dropped_by_stage"] == 5 - exact_dropped


def test_keep_longest_policy(tmp_path):
    base = article(5, 60)
    longer = base + " plus a few more words at the end"
    data = write(tmp_path, [base, longer], shards=1)
    api.fuzzy([str(data)], str(tmp_path / "o"), keep="longest", threshold=0.7)
    rows = read_manifest(tmp_path / "o")
    assert [r["keep"] for r in rows] == [False, True]
    assert rows[0]["duplicate_of"] == rows[1]["doc_id"]


def test_char_shingles_for_text_without_spaces(tmp_path):
    a = "東京は日本の首都であり世界最大級の都市圏を形成している人口は約千四百万人である"
    b = a.replace("約", "およそ")
    c = "大阪は日本の西部にある商業都市で食文化が有名であり多くの観光客が訪れる"
    data = write(tmp_path, [a, b, c], shards=1)
    api.fuzzy([str(data)], str(tmp_path / "w"), threshold=0.7)
    assert all(r["keep"] for r in read_manifest(tmp_path / "w"))  # one "word" per text: no overlap
    api.fuzzy([str(data)], str(tmp_path / "c"), shingle="char", ngram=3, threshold=0.7)
    assert [r["keep"] for r in read_manifest(tmp_path / "c")] == [True, False, True]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(0, 5), min_size=1, max_size=14), st.integers(1, 7))
def test_property_one_row_per_input_and_valid_links(tmp_path_factory, picks, batch_size):
    """Random mixes of a few articles and their edits: manifest invariants and batch-size independence."""
    tmp = tmp_path_factory.mktemp("p")
    texts = [edited(article(p % 3), p, p % 2) if p >= 3 else article(p) for p in picks]
    data = write(tmp, texts, shards=2)
    api.fuzzy([str(data)], str(tmp / "a"), batch_size=batch_size, threshold=0.7)
    api.fuzzy([str(data)], str(tmp / "b"), batch_size=64, threshold=0.7)
    rows = read_manifest(tmp / "a")
    check_fuzzy_manifest(rows, len(texts))
    assert rows == read_manifest(tmp / "b")


def test_bucket_pairs_small_and_large_buckets(monkeypatch):
    keys = np.array([5, 7, 5, 5, 9, 7], np.uint64)
    idx = np.arange(6, dtype=np.int64) + 10
    pairs = {tuple(p) for p in fz.bucket_pairs(keys, idx).tolist()}
    assert pairs == {(10, 12), (10, 13), (12, 13), (11, 15)}
    monkeypatch.setattr("dedupkit.stages.fuzzy.tasks.ALL_PAIRS_MAX", 2)
    pairs = {tuple(p) for p in fz.bucket_pairs(keys, idx).tolist()}
    # star to the first member plus a chain: connected without all n(n-1)/2 pairs
    assert pairs == {(10, 12), (10, 13), (12, 13), (11, 15)}  # star (10,12),(10,13) + chain (12,13)
    assert len(fz.bucket_pairs(np.zeros(40, np.uint64), np.arange(40))) == 39 + 38


def test_bad_verify_mode():
    with pytest.raises(ConfigError, match="verify"):
        fz.FuzzyConfig(verify="exact")


def test_cli_fuzzy(tmp_path):
    texts, _ = near_dup_texts()
    data = write(tmp_path, texts)
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["fuzzy", str(data), "-o", str(out), "--id-column", "id", "--threshold", "0.7",
                                 "--verify", "sets", "-q"])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str(out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stats"]["verified_pairs"] >= 4 and summary["config"]["stage"]["verify"] == "sets"
    r = CliRunner().invoke(cli, ["fuzzy", str(data), "-o", str(tmp_path / "x"), "--bands", "4"])
    assert r.exit_code == 2 and "--rows" in r.output
    r = CliRunner().invoke(cli, ["fuzzy", str(data), "-o", str(tmp_path / "x"), "--bands", "20", "--rows", "20"])
    assert r.exit_code == 1 and "exceeds num_perm" in r.output
    r = CliRunner().invoke(cli, ["fuzzy", "--help"])
    assert r.exit_code == 0 and "Example:" in r.output and "dedupkit fuzzy data/" in r.output


def test_cli_subprocess_chain_with_exact(tmp_path):
    texts, _ = near_dup_texts()
    data = write(tmp_path, texts + [texts[1]], fmt="jsonl")
    ex = run_subprocess("exact", str(data), "-o", str(tmp_path / "e"), "-q")
    assert ex.returncode == 0, ex.stderr
    fu = run_subprocess("fuzzy", str(data), "-o", str(tmp_path / "f"), "--skip", "-", "--json", "-q",
                        "--threshold", "0.7", input=ex.stdout)
    assert fu.returncode == 0, fu.stderr
    summary = json.loads(fu.stdout)
    assert summary["counts"]["rows"] == len(texts) + 1
    assert summary["counts"]["dropped"] == 5


def test_mapper_slices_give_the_same_features(monkeypatch):
    import pyarrow as pa

    from dedupkit.io.read import Batch
    from dedupkit.minhash import MinHashConfig

    texts, _ = near_dup_texts()
    batch = Batch(np.arange(len(texts)), pa.array(texts + [None])[: len(texts)])
    mapper = fz.FuzzyMapper(MinHashConfig())
    whole = mapper.map_batch(batch)
    monkeypatch.setattr("dedupkit.stages.fuzzy.tasks.SLICE_BYTES", 100)  # about one document per slice
    sliced = mapper.map_batch(batch)
    for k in whole:
        np.testing.assert_array_equal(whole[k], sliced[k])
    assert whole["sig"].shape == (len(texts), 128)


def test_stored_scores_never_fall_below_the_similarity_that_decided():
    """Scores are rounded up to the manifest's float32: a pair at exactly the threshold (13/20 =
    0.65) reads back >= 0.65 as a float64, and within one float32 step of the exact value."""
    import numpy as np

    from dedupkit.stages.fuzzy import pack_payload, unpack_payload

    exact = np.array([13 / 20, 0.8, 1.0, 1 / 3, 0.0, 0.7000000001])
    score, code = unpack_payload(pack_payload(exact, np.arange(len(exact))))
    got = score.astype(np.float64)
    assert (got >= exact).all(), list(zip(got, exact))
    assert (got - exact < np.spacing(np.float32(exact)).astype(np.float64) + 1e-300).all()
    assert code.tolist() == list(range(len(exact)))
