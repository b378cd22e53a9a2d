"""dedupkit.explain: the reason column of a manifest."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from dedupkit.explain import drop_reasons, reason_text


@pytest.mark.parametrize("n", [0, 1, 7, 2000])
def test_exact_reasons_are_reason_text_for_every_row(n):
    """The exact stage's reasons (built by Arrow, no Python call per row) are reason_text's words for
    dropped rows, "?" for a dropped row without a representative, and null for kept ones."""
    rng = np.random.default_rng(n)
    keep = rng.random(n) < 0.6
    dup = pa.array([None if k or i == 3 else f"doc-{i % 11}" for i, k in enumerate(keep)], pa.string())
    score = np.where(keep, np.nan, 1.0)
    got = drop_reasons("exact", keep, dup, score)
    want = [None if k else reason_text("exact", d, s) for k, d, s in zip(keep, dup.to_pylist(), score.tolist())]
    assert got.type == pa.string() and got.to_pylist() == want
    assert got.null_count == int(keep.sum())
    if n > 3 and not keep[3]:
        assert got[3].as_py() == "exact duplicate of ?"


def test_exact_reasons_of_check_matches_keep_their_words():
    """A `match` column (dedupkit check) still decides the words: "in the index" for index matches."""
    keep = np.array([True, False, False])
    dup = pa.array([None, "a", "b"], pa.string())
    match = pa.array([None, "index-exact", "drop-exact"], pa.string())
    got = drop_reasons("exact", keep, dup, np.array([np.nan, 1.0, 1.0]), {"match": match})
    assert got.to_pylist() == [None, "exact duplicate of a in the index", "exact duplicate of b"]
