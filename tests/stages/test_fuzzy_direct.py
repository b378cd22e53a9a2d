"""Direct verification: every dropped row is verified against the row its duplicate_of names.

Similarities are recomputed here from the texts with plain Python sets of shingle *strings*
(no hashes, no dedupkit kernels), and the C kernels are compared with their numpy fallbacks.
"""

from __future__ import annotations

import random
import unicodedata

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dedupkit import kernels
from dedupkit import api
from dedupkit.engine import graph
from dedupkit.errors import ConfigError
from dedupkit.minhash import char_shingle_hashes, shingles, MinHashConfig
from dedupkit.stages import fuzzy as fz
from dedupkit.stages.fuzzy import FuzzyConfig

from tests.support import make_rows, read_manifest, write_jsonl
from tests.support.invariants import check_manifest

VOCAB = [f"w{i}" for i in range(40)]


def word_set(text: str) -> set[str]:
    return set(shingles(text, MinHashConfig()))  # the reference (string) definition


def char_set(text: str, k: int) -> set[str]:
    s = " ".join(unicodedata.normalize("NFKC", text).lower().split())
    return {s[i:i + k] for i in range(len(s) - k + 1)} if len(s) >= k else ({s} if s else set())


def direct(measure: str, a: str, b: str, cfg: FuzzyConfig) -> float:
    if measure == "char":
        x, y = char_set(a, cfg.char_ngram), char_set(b, cfg.char_ngram)
        return len(x & y) / len(x | y)
    x, y = word_set(a), word_set(b)
    if measure == "jaccard":
        return len(x & y) / len(x | y)
    small = min(len(x), len(y))
    return len(x & y) / small if small >= cfg.containment_min else 0.0


def family_texts(seed: int, n: int) -> list[str]:
    """Chains of edits (A, A', A'', ...), truncations and quotes: the cases that used to chain."""
    rng = random.Random(seed)
    texts: list[str] = []
    while len(texts) < n:
        words = [rng.choice(VOCAB) for _ in range(rng.randint(8, 40))]
        texts.append(" ".join(words))
        for _ in range(rng.randint(0, 4)):
            w = list(words)
            kind = rng.random()
            if kind < 0.5:
                for _ in range(rng.randint(1, 3)):
                    w[rng.randrange(len(w))] = rng.choice(VOCAB)
            elif kind < 0.7:
                w = w[: max(3, len(w) - rng.randint(1, 6))]
            elif kind < 0.85:
                w = [rng.choice(VOCAB) for _ in range(rng.randint(2, 10))] + w
            else:
                w = [c if rng.random() > 0.05 else "x" for c in " ".join(w)]
                w = "".join(w).split(" ")
            words = w  # the next variant edits this one: A -> A' -> A''
            texts.append(" ".join(w))
    return texts[:n]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10**6), n=st.integers(2, 40),
       measure=st.sampled_from(["jaccard", "containment", "char", "jaccard,containment,char"]),
       threshold=st.sampled_from([0.5, 0.65, 0.8]),
       keep=st.sampled_from(["first", "last", "longest", "shortest"]))
def test_every_drop_is_directly_verified_and_workers_do_not_matter(tmp_path_factory, seed, n, measure,
                                                                   threshold, keep):
    tmp = tmp_path_factory.mktemp("direct")
    texts = family_texts(seed, n)
    for i, part in enumerate((texts[: n // 2], texts[n // 2:])):
        write_jsonl(tmp / "data" / f"s{i}.jsonl", make_rows(part, prefix=f"s{i}-"))
    ids = [f"s0-{i}" for i in range(n // 2)] + [f"s1-{i}" for i in range(n - n // 2)]
    text_of = dict(zip(ids, texts))
    opts = dict(threshold=threshold, candidate_threshold=0.4, verify="sets", measure=measure,
                containment_threshold=0.8, containment_min=3, char_threshold=threshold, keep=keep,
                id_column="id", num_perm=64)
    cfg = FuzzyConfig.from_options(threshold=threshold, verify="sets", measure=measure, containment_threshold=0.8,
                                   containment_min=3, char_threshold=threshold)
    one = api.fuzzy([str(tmp / "data")], str(tmp / "w1"), workers=1, batch_size=7, **opts)
    two = api.fuzzy([str(tmp / "data")], str(tmp / "w2"), workers=2, batch_size=3, **opts)
    rows = read_manifest(one.out)
    assert rows == read_manifest(two.out)
    by = check_manifest(rows, n)
    thr = cfg.measure_thresholds()
    for r in rows:
        if r["keep"]:
            assert r["measure"] is None
            continue
        rep = by[r["duplicate_of"]]
        sim = direct(r["measure"], text_of[r["doc_id"]], text_of[rep["doc_id"]], cfg)
        assert sim >= thr[r["measure"]] - 1e-6, (r, sim)
        assert r["score"] == pytest.approx(sim, abs=1e-5)


def test_no_chaining_on_a_chain_of_edits(tmp_path):
    """A ~ B and B ~ C but not A ~ C: C is kept (before: dropped for A, which it does not resemble)."""
    a = " ".join(f"t{i}" for i in range(30))
    b = " ".join(f"t{i}" for i in range(5, 35))
    c = " ".join(f"t{i}" for i in range(10, 40))
    write_jsonl(tmp_path / "d.jsonl", make_rows([a, b, c]))
    res = api.fuzzy([str(tmp_path / "d.jsonl")], str(tmp_path / "out"), id_column="id", threshold=0.6,
                    candidate_threshold=0.3, verify="sets")
    m = {r["doc_id"]: r for r in read_manifest(res.out)}
    assert direct("jaccard", a, b, FuzzyConfig()) >= 0.6 and direct("jaccard", a, c, FuzzyConfig()) < 0.6
    assert [m[d]["keep"] for d in ("d0", "d1", "d2")] == [True, False, True]
    assert m["d1"]["duplicate_of"] == "d0" and m["d2"]["duplicate_of"] is None
    stats = res.summary["stats"]
    assert stats["candidate_pairs"] >= 2 and stats["verified_pairs_by_measure"]["jaccard"] == 2
    assert stats["decided_by"] == {"jaccard": 1}


def test_containment_finds_a_quoted_page_and_char_finds_ocr_noise(tmp_path):
    rng = random.Random(3)
    page = " ".join(rng.choice(VOCAB) + str(i) for i in range(60))
    longer = " ".join(f"intro{i}" for i in range(80)) + " " + page + " " + " ".join(f"outro{i}" for i in range(80))
    clean = " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "omega"]) + str(i) for i in range(80))
    noisy = "".join(("1" if ch == "l" else "rn" if ch == "m" else ch) if rng.random() < 0.3 else ch for ch in clean)
    noisy = noisy.replace("a", "@", 3)
    write_jsonl(tmp_path / "d.jsonl", make_rows([longer, page, clean, noisy]))
    common = dict(id_column="id", verify="sets", candidate_threshold=0.1, bands=64, rows=2, num_perm=128)
    only_j = {r["doc_id"]: r for r in read_manifest(api.fuzzy([str(tmp_path / "d.jsonl")], str(tmp_path / "j"),
                                                              measure="jaccard", **common).out)}
    assert all(r["keep"] for r in only_j.values())
    res = api.fuzzy([str(tmp_path / "d.jsonl")], str(tmp_path / "all"), measure="jaccard,containment,char",
                    char_threshold=0.6, **common)
    m = {r["doc_id"]: r for r in read_manifest(res.out)}
    assert (m["d1"]["keep"], m["d1"]["duplicate_of"], m["d1"]["measure"]) == (False, "d0", "containment")
    assert m["d1"]["score"] == pytest.approx(1.0)
    assert (m["d3"]["keep"], m["d3"]["duplicate_of"], m["d3"]["measure"]) == (False, "d2", "char")
    assert m["d3"]["score"] == pytest.approx(direct("char", clean, noisy, FuzzyConfig()), abs=1e-5)


def test_measure_options_are_validated():
    assert FuzzyConfig.from_options(measure="jaccard,char", verify="signature").measures == ("jaccard",)
    with pytest.raises(ConfigError, match="measure must be"):
        FuzzyConfig.from_options(measure="cosine", verify="sets")
    assert FuzzyConfig.from_options(verify="jaccard").verify == "sets"  # the old name
    cfg = FuzzyConfig.from_options(threshold=0.8, candidate_threshold=0.5)
    assert cfg.threshold == 0.8 and cfg.minhash.threshold == 0.5


# ---- C kernels == fallbacks ------------------------------------------------------------------

TEXT = st.text(alphabet=st.sampled_from(list("ab cD\t\n\u00a0\u2003é漢ß\u0301,.")), max_size=40)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), TEXT), max_size=12), st.integers(1, 7))
def test_char_shingles_c_equals_fallback(texts, k):
    hc, cc = char_shingle_hashes(texts, k)
    hp, cp = kernels.call_python(char_shingle_hashes, texts, k)
    assert cc.tolist() == cp.tolist() and hc.tolist() == hp.tolist()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sets(st.integers(0, 60), max_size=50), min_size=1, max_size=8), st.data())
def test_set_intersections_c_equals_fallback(sets, data):
    hashes = np.concatenate([np.array(sorted(s), np.uint64) for s in sets]) if sets else np.zeros(0, np.uint64)
    off = np.r_[0, np.cumsum([len(s) for s in sets])].astype(np.int64)
    m = data.draw(st.integers(0, 20))
    pairs = np.array([[data.draw(st.integers(0, len(sets) - 1)) for _ in range(2)] for _ in range(m)],
                     np.int64).reshape(-1, 2)
    want = [len(sets[a] & sets[b]) for a, b in pairs.tolist()]
    assert fz.set_intersections(hashes, off, pairs).tolist() == want
    assert kernels.call_python(fz.set_intersections, hashes, off, pairs).tolist() == want


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 30), st.data())
def test_greedy_centres_c_equals_fallback_and_claims_are_direct(n, data):
    pairs = data.draw(st.sets(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)).filter(lambda p: p[0] < p[1]),
                              max_size=60))
    edges = np.array([[a, b, 1000 * a + b] for a, b in sorted(pairs)], np.int64).reshape(-1, 3)
    rank = np.array(data.draw(st.permutations(list(range(n)))), np.int64)
    c = graph.centre_clusters(edges, rank)
    p = kernels.call_python(graph.centre_clusters, edges, rank)
    assert all(x.tolist() == y.tolist() for x, y in zip(c, p))
    docs, centre, pay = c
    adj = {(a, b) for a, b in pairs} | {(b, a) for a, b in pairs}
    claimed = set(docs.tolist())
    for d, ctr, w in zip(docs.tolist(), centre.tolist(), pay.tolist()):
        assert (d, ctr) in adj and ctr not in claimed and w == 1000 * min(d, ctr) + max(d, ctr)
        assert rank[ctr] < rank[d] or all((d, x) not in adj or x in claimed or rank[x] > rank[d] for x in range(n))
    # every unclaimed node with an unclaimed neighbour of better rank would have been claimed
    for a, b in adj:
        if a not in claimed and b not in claimed:
            pytest.fail(f"two adjacent centres {a}, {b}")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 300)), max_size=200), max_size=8))
def test_sorted_sets_c_equals_fallback(runs):
    hashes = np.array([v for r in runs for v in r], np.uint64)
    counts = np.array([len(r) for r in runs], np.int64)
    c, p = fz.sorted_sets(hashes, counts), kernels.call_python(fz.sorted_sets, hashes, counts)
    assert c[1].tolist() == p[1].tolist() and c[0].tolist() == p[0].tolist()
    assert [c[0][c[1][i]:c[1][i + 1]].tolist() for i in range(len(runs))] == [sorted(set(r)) for r in runs]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 300), st.sampled_from([np.uint32, np.uint64]), st.data())
def test_read_runs_c_equals_fallback(tmp_path, n, dtype, data):
    """The set files' runs read with pread (C) equal the memory-mapped fallback and the array's own slices,
    for adjacent, overlapping, empty and unordered runs; a run past the end is refused."""
    from dedupkit.stages.fuzzy.tasks import _read_runs

    arr = np.arange(n, dtype=dtype) * dtype(2654435761) + dtype(7)
    path = str(tmp_path / f"a{n}.npy")
    np.save(path, arr)
    runs = data.draw(st.lists(st.integers(0, n).flatmap(lambda a: st.tuples(st.just(a), st.integers(0, n - a))),
                              max_size=12))
    starts = np.array([a for a, _ in runs], np.int64)
    lens = np.array([k for _, k in runs], np.int64)
    want = np.concatenate([arr[a:a + k] for a, k in runs]) if runs else np.zeros(0, dtype)
    got = _read_runs(path, starts, lens)
    assert got.dtype == arr.dtype and got.tolist() == want.tolist()
    assert kernels.call_python(_read_runs, path, starts, lens).tolist() == want.tolist()
    with pytest.raises((ValueError, IndexError)):
        _read_runs(path, np.array([n], np.int64), np.array([1], np.int64))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(2, 40), st.integers(1, 4), st.data())
def test_partitioned_centres_equal_the_single_pass(tmp_path_factory, n, nparts, data):
    """Greedy centres never cross a component, so clustering each partition of components alone
    (the Ray engine's path) gives the single pass's answer."""
    from dedupkit.engine.local import LocalEngine

    pairs = data.draw(st.sets(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)).filter(lambda p: p[0] < p[1]),
                              max_size=80))
    edges = np.array([[a, b, 7 * a + b] for a, b in sorted(pairs)], np.int64).reshape(-1, 3)
    rank = np.array(data.draw(st.permutations(list(range(n)))), np.int64)
    work = tmp_path_factory.mktemp("centres")
    files = []
    for i, chunk in enumerate(np.array_split(edges, 3)):
        np.save(work / f"e{i}.npy", chunk)
        files.append(str(work / f"e{i}.npy"))
    root, _ = graph.connected_components(n, files, work / "cc", LocalEngine(), nparts=nparts)
    got = graph.centre_clusters_partitioned(files, root, rank, work / "ce", LocalEngine(), nparts=nparts)
    want = graph.centre_clusters(edges, rank)
    assert all(x.tolist() == y.tolist() for x, y in zip(got, want))


def test_command_defaults_equal_the_library_defaults():
    """`dedupkit fuzzy`, FuzzyConfig.from_options, FuzzyConfig() and configs/default.toml agree."""
    import inspect
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    from pathlib import Path

    from dedupkit.cli.fuzzy import fuzzy as command
    from dedupkit.stages.fuzzy import FUZZY_OPTIONS

    cli = {p.name: p.default for p in command.params}
    lib = {k: p.default for k, p in inspect.signature(FuzzyConfig.from_options).parameters.items()}
    for name in FUZZY_OPTIONS:
        assert cli[name] == lib[name], name
    plain, built = FuzzyConfig(), FuzzyConfig.from_options()
    assert plain == built
    toml = tomllib.loads((Path(__file__).resolve().parents[2] / "configs" / "default.toml").read_text())["fuzzy"]
    for key, value in toml.items():
        if key in FUZZY_OPTIONS:
            assert value == lib[key], key
