"""Near-boundary refinement of int8 embeddings (``--backend onnx``): which documents are re-encoded,
that a refined run makes the float model's decisions where int8 alone flips one, and that int8 and
float vectors never share a cache entry. The model tests run the real packaged MiniLM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support import make_rows, read_manifest, write_parquet
from dedupkit.neighbours import Neighbours
from dedupkit.stages.semantic_refine import INT8_DENSITY_ERROR, INT8_PAIR_ERROR, uncertain_docs


def _nb(edges, sims, density) -> Neighbours:
    e = np.asarray(edges, np.int64).reshape(-1, 2)
    n = len(density)
    return Neighbours(edges=e, sims=np.asarray(sims, np.float32), nearest=np.full(n, -1, np.int64),
                      nearest_sim=np.full(n, -np.inf, np.float32), density=np.asarray(density, np.float32),
                      method="exact")


def _texts(words: dict[int, str]):
    return lambda idx: {int(i): words.get(int(i), "") for i in idx}


def test_only_pairs_within_the_error_bound_of_a_cut_are_uncertain():
    thr = 0.945
    m = INT8_PAIR_ERROR
    # pairs: just above the cut, just below, far above, far below (but searched), and one far
    # below whose texts would pass the rewrite rule only inside the band (no band here)
    nb = _nb([(0, 1), (2, 3), (4, 5), (6, 7)], [thr + m / 2, thr - m / 2, thr + 2 * m, thr - 2 * m],
             [0.1, 0.5, 0.2, 0.6, 0.3, 0.7, 0.4, 0.8])
    got = uncertain_docs(nb, [thr], None, ranked=False, texts=_texts({}))
    assert got.tolist() == [0, 1, 2, 3]


def test_a_ranked_policy_also_refines_accepted_pairs_whose_scores_are_close_but_not_copies():
    thr = 0.945
    d = INT8_DENSITY_ERROR
    # (0,1): accepted for sure, densities closer than the bound -> their order may flip;
    # (2,3): accepted, densities far apart -> order safe; (4,5): the same vector (one text twice),
    # ranked by index whatever the vectors; (5,6): 5's copy 4 ... is pulled in with 5.
    nb = _nb([(0, 1), (2, 3), (4, 5), (5, 6)], [0.99, 0.99, 1.0, 0.99],
             [0.50, 0.50 + d / 2, 0.30, 0.30 + 3 * d, 0.7, 0.7, 0.7 + d / 3])
    assert uncertain_docs(nb, [thr], None, ranked=False, texts=_texts({})).tolist() == []
    got = uncertain_docs(nb, [thr], None, ranked=True, texts=_texts({}))
    assert got.tolist() == [0, 1, 4, 5, 6]


def test_the_rewrite_band_cut_counts_only_for_pairs_that_pass_the_rewrite_rule():
    lo, thr = 0.8, 0.945
    text = ("The committee approved the budget after a long debate about school funding and the cost of "
            "new roads in the northern district of the city last week")
    other = ("Heavy rain flooded the valley overnight and the river broke its banks near the old mill "
             "where farmers had moved their cattle to higher ground before dawn")
    # (0,1) a rewrite near the band's lower cut; (2,3) the same cosine, texts unrelated
    nb = _nb([(0, 1), (2, 3)], [lo + 0.01, lo + 0.01], [0.1, 0.5, 0.2, 0.6])
    got = uncertain_docs(nb, [thr], lo, ranked=False, texts=_texts({0: text, 1: text + " again", 2: text, 3: other}))
    assert got.tolist() == [0, 1]
