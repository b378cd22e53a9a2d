"""Normalization steps, and the C speed-up against its numpy fallback."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dedupkit import kernels
from dedupkit.errors import ConfigError
from dedupkit.normalize import collapse_whitespace, normalize, parse_steps
from dedupkit.stages.exact import hash128, normalized_hash128


def test_parse_steps_orders_and_validates():
    assert parse_steps("whitespace,lower") == ("lower", "whitespace")
    assert parse_steps("none") == ()
    assert parse_steps(None) == ("lower", "whitespace")
    with pytest.raises(ConfigError, match="unknown normalization step 'upper'"):
        parse_steps("upper")


def test_all_steps():
    out = normalize(pa.array(["ＦＵＬＬ\u00a0 Hello,  World! 2024-01-02\n"]),
                    ("nfkc", "lower", "punctuation", "digits", "whitespace"))
    assert out.to_pylist() == ["full hello world 0"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(list(" \t\n\r\x0b\x0caAbZé€\u00a0.")), max_size=30), max_size=20))
def test_collapse_whitespace_matches_python_and_fallback(texts):
    arr = pa.array(texts, pa.large_string())
    ws = " \t\n\r\x0b\x0c"
    # only ASCII whitespace collapses; NBSP and other Unicode spaces are nfkc's job
    expected = [" ".join(p for p in "".join(" " if c in ws else c for c in t).split(" ") if p) for t in texts]
    assert collapse_whitespace(arr).to_pylist() == expected
    assert kernels.call_python(collapse_whitespace, arr).to_pylist() == expected
    ascii_only = [t for t in texts if t.isascii()]
    a2 = pa.array(ascii_only, pa.large_string())
    lowered = [e.lower() for t, e in zip(texts, expected) if t.isascii()]
    assert collapse_whitespace(a2, ascii_lower=True).to_pylist() == lowered
    assert kernels.call_python(collapse_whitespace, a2, ascii_lower=True).to_pylist() == lowered
    assert normalize(arr, ("lower", "whitespace")).to_pylist() == [e.lower() for e in expected]


def _expected(texts: list[str]) -> list[str]:
    ws = " \t\n\r\x0b\x0c"
    return [" ".join(p for p in "".join(" " if c in ws else c for c in t).split(" ") if p) for t in texts]


# Long documents reach the 16- and 32-byte SIMD blocks: runs of whitespace across block edges,
# leading and trailing runs, upper case next to non-ASCII bytes.
LONG = st.lists(st.text(alphabet=st.sampled_from(list("  \t\n\r\x0bAaZzQq@[`{é€İK\u00a0.0")),
                        max_size=150), max_size=12)


@pytest.mark.skipif(kernels.speedups is None, reason="the C extension was not built")
@settings(max_examples=300, deadline=None)
@given(LONG, st.booleans())
def test_simd_paths_equal_scalar_and_python(texts, lower):
    import numpy as np

    arr = pa.array(texts, pa.large_string())
    data = arr.buffers()[2] or b""
    offs = np.frombuffer(arr.buffers()[1], np.int64)[: len(arr) + 1].tobytes()
    results = [kernels.speedups.collapse_ws(data, offs, len(texts), lower, level) for level in (0, 2)]
    assert results[0] == results[1]
    out, new_offs, flags = results[0]
    o = np.frombuffer(new_offs, np.int64)
    got = [out[o[i]:o[i + 1]].decode() for i in range(len(texts))]
    lowered = "".maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
    assert got == [e.translate(lowered) if lower else e for e in _expected(texts)]
    assert list(flags) == [int(not t.isascii()) for t in texts]


@settings(max_examples=200, deadline=None)
@given(LONG)
def test_normalize_lower_whitespace_mixed_ascii_and_unicode(texts):
    """The fast pass plus utf8_lower on the flagged rows equals lower-then-collapse everywhere."""
    import pyarrow.compute as pc

    arr = pa.array(texts, pa.large_string())
    expected = _expected(pc.utf8_lower(arr).to_pylist())  # Arrow's Unicode lower case, then collapse
    assert normalize(arr, ("lower", "whitespace")).to_pylist() == expected
    want = hash128(pa.array(expected, pa.large_string())) if texts else hash128(pa.array([], pa.large_string()))
    assert (normalized_hash128(arr, ("lower", "whitespace")) == want).all()


def test_mostly_unicode_batch_and_single_unicode_row():
    texts = ["ÀB  Ç\n", "İSTANBUL  Kelvin \u212a", "plain  ASCII\tText"]
    assert normalize(pa.array(texts), ("lower", "whitespace")).to_pylist() == [
        "àb ç", "istanbul kelvin k", "plain ascii text"]
    one = ["plain  ONE", "ÉCOLE  Été", "plain two"]
    assert normalize(pa.array(one), ("lower", "whitespace")).to_pylist() == ["plain one", "école été", "plain two"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=120), max_size=12), st.integers(0, 3))
def test_char_lengths_equal_arrow(texts, start):
    """Code points per document, from the C kernel (each SIMD level) and the fallback, on slices too."""
    import numpy as np
    import pyarrow.compute as pc

    from dedupkit.normalize import char_lengths

    arr = pa.array(texts, pa.string()).slice(min(start, len(texts)))
    want = np.asarray(pc.utf8_length(arr), dtype=np.int64)
    assert (char_lengths(arr) == want).all() and (kernels.call_python(char_lengths, arr) == want).all()
    if kernels.speedups is not None and len(arr):
        big = arr.cast(pa.large_string())
        offs = np.frombuffer(big.buffers()[1], np.int64)[big.offset: big.offset + len(big) + 1].tobytes()
        for level in (0, 2):
            got = np.frombuffer(kernels.speedups.utf8_lengths(big.buffers()[2] or b"", offs, len(big), level), np.int64)
            assert (got == want).all()


@settings(max_examples=200, deadline=None)
@given(LONG, st.sampled_from([(), ("whitespace",), ("lower", "whitespace"), ("nfkc", "lower", "whitespace")]))
def test_fused_hashing_equals_normalize_then_hash(texts, steps):
    """The C kernel that normalizes and hashes in one pass gives the hashes of normalize() + xxh3."""
    import numpy as np
    import xxhash

    arr = pa.array(texts, pa.string())
    want = np.array([[int.from_bytes(xxhash.xxh3_128_digest(t.encode())[:8], "big"),
                      int.from_bytes(xxhash.xxh3_128_digest(t.encode())[8:], "big")]
                     for t in (normalize(arr, steps).to_pylist() if steps else texts)], dtype=np.uint64).reshape(-1, 2)
    assert (normalized_hash128(arr, steps) == want).all()
    assert (kernels.call_python(normalized_hash128, arr, steps) == want).all()
    assert (kernels.call_python(hash128, arr) == hash128(arr)).all()


@pytest.mark.skipif(kernels.speedups is None, reason="the C extension was not built")
def test_c_kernels_refuse_offsets_outside_the_buffer():
    import numpy as np

    bad = np.array([0, 3, 99], np.int64).tobytes()  # past the end of 5 bytes
    backwards = np.array([0, 4, 2], np.int64).tobytes()
    for offs in (bad, backwards):
        for name, call in [("collapse_ws", lambda o: kernels.speedups.collapse_ws(b"abcde", o, 2, True)),
                           ("utf8_lengths", lambda o: kernels.speedups.utf8_lengths(b"abcde", o, 2)),
                           ("hash_texts", lambda o: kernels.speedups.hash_texts(b"abcde", o, 2, 2)),
                           ("word_shingles", lambda o: kernels.speedups.word_shingles(b"abcde", o, 2, 5))]:
            with pytest.raises(ValueError, match=f"{name}: offsets out of range"):
                call(offs)
    with pytest.raises(ValueError, match="mode"):
        kernels.speedups.hash_texts(b"ab", np.array([0, 2], np.int64).tobytes(), 1, 7)


@pytest.mark.parametrize("arrow_composes", [True, False])
def test_nfkc_composes_on_every_pyarrow(monkeypatch, arrow_composes):
    """NFKC output is composed whether or not this pyarrow's utf8_normalize composes (before
    pyarrow 26 it did not: apache/arrow#51225), and equals unicodedata's."""
    import unicodedata

    from dedupkit import normalize as nm

    if not arrow_composes:
        monkeypatch.setattr(nm, "_arrow_nfkc_composes", lambda: False)
    elif not nm._arrow_nfkc_composes():
        pytest.skip("this pyarrow's utf8_normalize does not compose (pyarrow < 26)")
    texts = ["héllo wörld", "e\u0301tude", "ﬁne ＡＢ ²", "plain ascii", None, "", "A\u030a \u212b"]
    got = nm.nfkc(pa.array(texts)).to_pylist()
    assert got == [None if t is None else unicodedata.normalize("NFKC", t) for t in texts]
    assert got[1] == "\u00e9tude"
