"""Normalization steps, and the C speed-up against its numpy fallback."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dedupkit.errors import ConfigError
from dedupkit.normalize import collapse_whitespace, normalize, parse_steps


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
    assert collapse_whitespace(arr, use_c=False).to_pylist() == expected
    ascii_only = [t for t in texts if t.isascii()]
    a2 = pa.array(ascii_only, pa.large_string())
    lowered = [e.lower() for t, e in zip(texts, expected) if t.isascii()]
    assert collapse_whitespace(a2, ascii_lower=True).to_pylist() == lowered
    assert collapse_whitespace(a2, ascii_lower=True, use_c=False).to_pylist() == lowered
    assert normalize(arr, ("lower", "whitespace")).to_pylist() == [e.lower() for e in expected]
