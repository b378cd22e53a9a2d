"""Batch MinHash signatures equal datasketch's, shingling rules, LSH parameters and band keys."""

from __future__ import annotations

import os

import numpy as np
import pytest
import xxhash
from datasketch import MinHash, MinHashLSH
from hypothesis import given, settings
from hypothesis import strategies as st

from dedupkit import kernels
from dedupkit.errors import ConfigError
from dedupkit.minhash import (
    MinHashConfig, band_keys, batch_shingle_hashes, detection_probability, optimal_params,
    shingle_hash, shingle_hashes, shingles, signatures,
)

TEXTS = [
    "The quick brown fox jumps over the lazy dog near the river bank today, said the reporter.",
    "Москва — столица России, крупнейший по численности населения город страны и Европы.",
    "الذكاء الاصطناعي هو فرع من علوم الحاسوب يهتم بصنع آلات ذكية تعمل وتتفاعل مثل البشر",
    "東京は日本の首都であり、世界最大級の都市圏を形成している。",
    "ﬁne ＡＢＣ café naïve coöperate",  # NFKC folds the ligature and full-width letters
    "short",
    "",
    "   \n\t ",
    "one two three four",  # fewer tokens than a 5-gram
    " ".join(f"w{i % 97}" for i in range(5000)),  # more shingles than one numpy block
]


def datasketch_signature(text: str, cfg: MinHashConfig) -> np.ndarray:
    m = MinHash(num_perm=cfg.num_perm, seed=cfg.seed, hashfunc=lambda b: shingle_hash(b, cfg), scheme=cfg.scheme)
    m.update_batch([s.encode("utf-8") for s in shingles(text, cfg)])
    return np.asarray(m.hashvalues, dtype=np.uint64)


@pytest.mark.parametrize("scheme", ["affine64", "legacy"])
@pytest.mark.parametrize("shingle,ngram", [("word", 5), ("word", 1), ("char", 5), ("char", 3)])
def test_batch_signatures_equal_datasketch_update_batch(scheme, shingle, ngram):
    cfg = MinHashConfig(num_perm=64, seed=7, shingle=shingle, ngram=ngram, scheme=scheme)
    sigs = signatures(TEXTS, cfg)
    assert sigs.shape == (len(TEXTS), 64) and sigs.dtype == np.uint64
    for text, row in zip(TEXTS, sigs):
        np.testing.assert_array_equal(row, datasketch_signature(text, cfg))


def test_equal_to_datasketch_update_per_shingle_and_default_num_perm():
    cfg = MinHashConfig()
    text = TEXTS[0] * 3
    m = MinHash(num_perm=128, seed=1, hashfunc=lambda b: shingle_hash(b, cfg), scheme="affine64")
    for s in shingles(text, cfg):
        m.update(s.encode("utf-8"))
    np.testing.assert_array_equal(signatures([text], cfg)[0], m.hashvalues)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from("ab cдж東\n.-"), max_size=60), min_size=1, max_size=6),
       st.sampled_from(["word", "char"]), st.integers(1, 4))
def test_property_batch_equals_datasketch_for_any_texts(texts, shingle, ngram):
    cfg = MinHashConfig(num_perm=16, seed=3, shingle=shingle, ngram=ngram)
    sigs = signatures(texts, cfg)
    for t, row in zip(texts, sigs):
        np.testing.assert_array_equal(row, datasketch_signature(t, cfg))


def test_shingle_hashes_come_from_xxh3_token_hashes_and_batch_agrees():
    cfg = MinHashConfig(ngram=3)
    text = "Hello, World!  Hello world again; héllo wörld."
    sh = shingles(text, cfg)
    assert sh[0] == "hello world hello" and sh[-1] == "again héllo wörld"
    expect = [shingle_hash(s.encode(), cfg) for s in sh]
    np.testing.assert_array_equal(shingle_hashes(text, cfg), np.array(expect, np.uint64))
    hashes, counts = batch_shingle_hashes(["", text, None, "a"], cfg)
    assert counts.tolist() == [0, len(sh), 0, 1]
    np.testing.assert_array_equal(hashes[: len(sh)], expect)
    # a word shingle's hash depends on every token and on their order
    assert len(set(expect)) == len(expect)
    assert shingle_hash(b"a b c", cfg) != shingle_hash(b"c b a", cfg) != shingle_hash(b"a b", cfg)
    char = MinHashConfig(shingle="char", ngram=3)
    assert shingle_hash("héllo".encode(), char) == xxhash.xxh3_64_intdigest("héllo".encode())


def test_short_and_empty_documents():
    cfg = MinHashConfig(ngram=5)
    assert shingles("two words", cfg) == ["two words"]
    assert shingles("  ...  ", cfg) == []
    assert shingles("東京は日本", MinHashConfig(shingle="char", ngram=2)) == ["東京", "京は", "は日", "日本"]
    sig = signatures(["", "  "], cfg)
    assert (sig == np.iinfo(np.uint64).max).all()  # datasketch's empty MinHash


def test_unicode_tokens_nfkc_lowercase():
    cfg = MinHashConfig(ngram=1)
    assert shingles("Москва СТОЛИЦА", cfg) == ["москва", "столица"]
    assert shingles("ﬁne ＡＢＣ", cfg) == ["fine", "abc"]
    # combining vowel signs stay inside Devanagari words (Python's \w+ would split them)
    assert shingles("नमस्ते दुनिया", cfg) == ["नमस्ते", "दुनिया"]
    assert shingles("snake_case x2, 3.14", cfg) == ["snake_case", "x2", "3", "14"]


def _reference_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """The (b, r) search dedupkit carried itself until it took datasketch's: the same integrals
    written out here, so a change in datasketch's choice shows up as a failure."""
    from scipy.integrate import quad

    best, opt = float("inf"), (0, 0)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = quad(lambda s: 1 - (1 - s ** float(r)) ** float(b), 0.0, threshold)[0]
            fn = quad(lambda s: 1 - (1 - (1 - s ** float(r)) ** float(b)), threshold, 1.0)[0]
            if fp * 0.5 + fn * 0.5 < best:
                best, opt = fp * 0.5 + fn * 0.5, (b, r)
    return opt


# every default (fuzzy's candidate threshold 0.5, MinHashConfig's 0.65, the index's) and a grid
@pytest.mark.parametrize("num_perm", [16, 64, 128])
def test_optimal_params_from_datasketch_equal_the_former_search(num_perm):
    grid = [round(0.3 + 0.05 * k, 2) for k in range(14)]  # 0.3 .. 0.95
    got = {t: optimal_params(t, num_perm) for t in grid}
    want = {t: _reference_params(t, num_perm) for t in grid}
    assert got == want
    assert MinHashConfig().resolved() == _reference_params(0.65, 128)


@pytest.mark.parametrize("threshold,num_perm", [(0.8, 128), (0.7, 128), (0.5, 64), (0.9, 256)])
def test_optimal_params_match_datasketch(threshold, num_perm):
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    assert optimal_params(threshold, num_perm) == (lsh.b, lsh.r)
    assert MinHashConfig(threshold=threshold, num_perm=num_perm).resolved() == (lsh.b, lsh.r)


def _table_entries():
    from dedupkit.minhash import _PRECOMPUTED

    return [(k / 100, n) for n in sorted(_PRECOMPUTED) for k in range(1, 100)]


def _check_table(entries):
    from datasketch.lsh import _optimal_param

    from dedupkit.minhash import _PRECOMPUTED

    for t, n in entries:
        want = _optimal_param(t, n, 0.5, 0.5)
        got = tuple(int(x) for x in _PRECOMPUTED[n].split()[round(t * 100) - 1].split("x"))
        assert got == want, (t, n)
        assert optimal_params(t, n) == want


def test_precomputed_lsh_params_are_datasketch_s():
    entries = _table_entries()
    assert len(entries) == 3 * 99
    # the defaults, the ends of the table, and a spread of others (all of them: the slow test)
    _check_table([(0.5, 128), (0.65, 128), (0.8, 128), (0.01, 64), (0.99, 256)] + entries[::23])


@pytest.mark.slow
def test_every_precomputed_lsh_param_is_datasketch_s():
    _check_table(_table_entries())


def test_default_lsh_params_need_no_scipy():
    # computing them imports scipy.integrate through datasketch (~0.4 CPU s of every fuzzy run)
    import subprocess
    import sys

    code = ("import sys; from dedupkit.minhash import MinHashConfig; "
            "from dedupkit.stages.fuzzy import FuzzyConfig, FuzzyStage; s = FuzzyStage(FuzzyConfig()); "
            "print(s.bands, s.rows, MinHashConfig(threshold=0.8).resolved(), "
            "sorted(m for m in ('datasketch', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["25", "5", "(9,", "13)", "[]"]
    lsh = MinHashLSH(threshold=0.501, num_perm=128)
    assert optimal_params(0.501, 128) == (lsh.b, lsh.r)  # off the table: computed


def test_detection_probability():
    assert detection_probability(1.0, 9, 13) == 1.0
    assert detection_probability(0.0, 9, 13) == 0.0
    assert detection_probability(0.9, 9, 13) == pytest.approx(1 - (1 - 0.9**13) ** 9)


def test_band_keys_collide_exactly_when_bands_agree():
    rng = np.random.default_rng(0)
    sigs = rng.integers(0, 2**63, size=(4, 12), dtype=np.uint64)
    sigs[1, :4] = sigs[0, :4]  # band 0 equal
    sigs[2, 4:8] = sigs[0, 4:8]  # band 1 equal
    sigs[3, :3] = sigs[0, :3]  # band 0 differs in one value
    keys = band_keys(sigs, 3, 4)
    assert keys.shape == (4, 3)
    assert keys[1, 0] == keys[0, 0] and keys[1, 1] != keys[0, 1]
    assert keys[2, 1] == keys[0, 1] and keys[2, 0] != keys[0, 0]
    assert keys[3, 0] != keys[0, 0]
    # same multiset of pairs as datasketch's LSH buckets for real documents
    cfg = MinHashConfig(num_perm=32, bands=8, rows=4)
    texts = [TEXTS[0], TEXTS[0] + " extra words here", TEXTS[1], TEXTS[0].upper()]
    k = band_keys(signatures(texts, cfg), 8, 4)
    assert (k[0] == k[3]).all() and not (k[0] == k[2]).any()


def test_config_validation_names_the_fix():
    with pytest.raises(ConfigError, match="bands"):
        MinHashConfig(bands=4)
    with pytest.raises(ConfigError, match="exceeds num_perm"):
        MinHashConfig(num_perm=16, bands=4, rows=5)
    with pytest.raises(ConfigError, match="shingle"):
        MinHashConfig(shingle="token")
    with pytest.raises(ConfigError, match="threshold"):
        MinHashConfig(threshold=1.5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(alphabet=st.sampled_from("ab_1 ,.\n-éд東\u0301"), max_size=30)),
                max_size=8))
def test_ascii_fast_path_tokens_equal_the_re2_split(texts):
    import pyarrow as pa

    from dedupkit.minhash import _re2_tokens, _tokens, normalize_array

    norm = normalize_array(pa.array(texts, pa.string()))
    flat, counts = _tokens(norm)
    ref_flat, ref_counts = _re2_tokens(pc_fill(norm))
    assert flat.to_pylist() == ref_flat.to_pylist()
    assert counts.tolist() == ref_counts.tolist()


def pc_fill(arr):
    import pyarrow.compute as pc

    return pc.fill_null(arr, "")


def test_c_kernel_equals_numpy_path_for_both_schemes():
    """The optional C kernel and the numpy fallback give identical signatures."""
    from dedupkit import minhash as mh

    if kernels.speedups is None:
        built = kernels._load(kernels.EXTENSIONS["speedups"]) is not None
        if built:
            pytest.skip(f"the C kernels are off ({kernels.ENV}={os.environ.get(kernels.ENV)})")
        if os.environ.get("CI"):
            pytest.fail("the C extension did not build in CI (pip install -e . -v shows why)")
        pytest.skip("the C extension is not built in this checkout (pip install -e . builds it)")
    rng = np.random.default_rng(5)
    counts = rng.integers(0, 300, 300)
    counts[:3] = 0
    h = rng.integers(0, 2**63, int(counts.sum()), dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    for scheme in mh.SCHEMES:
        cfg = mh.MinHashConfig(scheme=scheme, num_perm=64)
        c = mh.signatures_from_hashes(h, counts, cfg)
        f = kernels.call_python(mh.signatures_from_hashes, h, counts, cfg)
        assert c.shape == (300, 64) and np.array_equal(c, f)
        assert (c[:3] == mh.empty_value(scheme)).all()


def _assert_c_shingles_equal_python(texts, ngram: int) -> None:
    """The C word-shingle kernel gives exactly the Arrow + numpy path's hashes and counts."""
    import pyarrow as pa

    if kernels.speedups is None:
        pytest.skip("the C kernels are off (DEDUPKIT_KERNELS=python or not built)")
    cfg = MinHashConfig(ngram=ngram)
    arr = pa.array(texts, pa.string())
    h, c = batch_shingle_hashes(arr, cfg)
    rh, rc = kernels.call_python(batch_shingle_hashes, arr, cfg)
    assert c.tolist() == rc.tolist()
    assert h.tolist() == rh.tolist()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(alphabet=st.sampled_from("aB_1 Z,.\n\t-éд東\u0301ﬁ"), max_size=80)),
                max_size=10), st.integers(1, 6))
def test_c_word_shingles_equal_the_arrow_numpy_path(texts, ngram):
    """The C word-shingle pass (ASCII documents; the rest go through Arrow in the same call) gives
    exactly the hashes and counts of the Arrow + numpy path, in document order."""
    _assert_c_shingles_equal_python(texts, ngram)
    # long documents; a token longer than the kernel's first token buffer; more shingles than its
    # first guess (one per two bytes), so both buffers grow
    big = [" ".join(f"Tok{i % 13}_x" for i in range(300)), "ÀÉ " * 50 + "tail words here",
           "Q" * 1000 + " after the long token", "a " * 3000] * 3
    _assert_c_shingles_equal_python(big, ngram)


UNICODE_SAMPLE = ("aZ_9 .,\n\t-éÉдД東Σσςİıßẞµ²½…™，ＡＢﬁﬃǅǄ\u0301\u0308¨´˘"
                  "한가\u1161\u11a8ᄀ😀\ufe0f✓Ωℂ℃①ⅻ\u00a0\u2003\u200bॐनमस्ते عربي ـ")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(alphabet=st.sampled_from(UNICODE_SAMPLE), max_size=60),
                          st.text(max_size=40)), max_size=10), st.integers(1, 5))
def test_c_unicode_word_shingles_equal_the_arrow_path(texts, ngram):
    """Non-ASCII documents that NFKC leaves alone (or changes code point by code point, as ``…``
    to ``...``) are shingled by the C kernel from per-code-point classes; the values equal Arrow's
    NFKC + lower + RE2 path exactly, whatever the code points (any plane, marks, jamo, ligatures)."""
    _assert_c_shingles_equal_python(texts, ngram)


def test_c_unicode_path_takes_most_non_ascii_documents():
    """Accented letters, Greek, Cyrillic, CJK, ellipses, superscripts and emoji do not need Arrow's
    path; a combining accent does (NFKC composes it with the letter before)."""
    from dedupkit import minhash as mh
    from dedupkit.normalize import text_buffers

    if kernels.speedups is None:
        pytest.skip("the C kernels are off (DEDUPKIT_KERNELS=python or not built)")
    import pyarrow as pa

    texts = ["Zürich café…", "ΟΔΟΣ οδός", "Привет мир", "東京 タワー", "x² ½ ™ ＡＢ", "ok 😀\ufe0f", "e\u0301tude"]
    arr, buf, off = text_buffers(pa.array(texts))
    _, _, flags = kernels.speedups.word_shingles(buf, off.tobytes(), len(arr), 5, *mh._cp_tables(buf, off, len(arr)))
    assert list(flags) == [0, 0, 0, 0, 0, 0, 1]
