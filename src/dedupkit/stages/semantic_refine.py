"""Near-boundary refinement of int8 embeddings (``--backend onnx``): torch's decisions at int8's speed.

The int8 ONNX export computes each document's embedding at 3-4x torch's speed, but its pair
cosines differ from the float model's by up to :data:`INT8_PAIR_ERROR`, enough to move a pair across
a decision threshold or to swap which of two near-duplicates the keep policy ranks first. Only a
few pairs sit that close to a decision, so :func:`refined_search`:

1. searches the int8 vectors with the lowest threshold lowered by the error bound, so pairs the
   float model would put just above it are found too;
2. picks the documents whose keep/drop could depend on the int8 error (:func:`uncertain_docs`):
   both ends of every pair that the stage's own rule (:func:`dedupkit.stages.semantic.accepted_pairs`:
   the ``1 - eps`` cuts and the rewrite band below them) decides differently with every cosine
   raised by the bound and lowered by it, and, under a keep policy that ranks by how typical a document is
   (``easy``, ``hard``), both ends of every pair that may be accepted whose two ranking scores
   differ by less than :data:`INT8_DENSITY_ERROR`;
3. re-encodes those documents with the float export of the same model (the vectors
   ``--backend onnx-fp32`` gives, cached under that backend's key, never under int8's), and
   searches again, so every decision, ``duplicate_of`` and score comes from the refined vectors.

Both bounds were measured on text that ships with Python (``benchmarks/onnx_error.py``), not on
the evaluation suites. ``--backend onnx-int8`` switches the refinement off (int8 vectors only).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

#: Bound on |pair cosine from int8 vectors - pair cosine from float vectors| (MiniLM, export v6,
#: SmoothQuant): measured by ``benchmarks/onnx_error.py`` over 7,834 pairs at cosine >= 0.7 of
#: Python's pydoc topic texts that the export's calibration did not see, and edited copies of them:
#: median 0.0026, 99th percentile 0.016, 99.9th 0.022, largest 0.025 (export v5, unsmoothed: 99.9th
#: 0.053, largest 0.077, and this bound was 0.05). A pair beyond it is decided on int8.
INT8_PAIR_ERROR = 0.025
#: Bound on the int8 error of a document's ranking score (its mean cosine to its 10 nearest
#: neighbours, :attr:`dedupkit.neighbours.Neighbours.density`), measured the same way (export v6:
#: 99th percentile 0.012, 99.9th 0.027, largest 0.027): two documents whose scores differ by less
#: than this may swap places in the keep order.
INT8_DENSITY_ERROR = 0.03
#: Pairs at this cosine or above hold (bitwise) the same vector: the same text, encoded once
#: (:meth:`dedupkit.embed_onnx.OnnxEmbedder.encode`), ranked by index whatever the vectors.
SAME_VECTOR = 1.0 - 1e-6
RANKED_POLICIES = ("easy", "hard")


def wants_refine(config) -> bool:
    """Whether the semantic stage's embedder (``config``: an :class:`~dedupkit.embed.EmbedConfig`)
    is the int8 ONNX export with refinement (``--backend onnx``, or ``auto`` resolving to it)."""
    from dedupkit.embed import _st_factory, resolve_backend, resolve_model

    factory, arg = resolve_model(config.model)
    return factory is _st_factory and resolve_backend(arg, config) == "onnx"


class _Shifted:
    """``nb``'s edges with every cosine moved by ``delta``: what the stage's rule would decide if
    the int8 error pushed all pairs one way."""

    def __init__(self, nb, delta: float):
        self.edges, self.sims, self.density = nb.edges, nb.sims + np.float32(delta), nb.density


def uncertain_docs(nb, accept: Callable, ranked: bool, texts: Callable[[np.ndarray], dict[int, str]],
                   margin: float = INT8_PAIR_ERROR, density_margin: float = INT8_DENSITY_ERROR) -> np.ndarray:
    """Documents (sorted global indices) whose keep/drop could change if ``nb``'s cosines and
    densities were off by up to ``margin`` and ``density_margin``.

    Args:
        nb: the neighbours of the int8 vectors, searched down to the lowest cut minus ``margin``.
        accept: the stage's decision rule, ``accept(nb, texts)`` -> ``{eps: mask over nb's edges}``
            (:func:`dedupkit.stages.semantic.accepted_pairs`); a pair is uncertain when the rule
            decides it differently with every cosine ``margin`` higher and ``margin`` lower.
        ranked: the keep policy ranks by density (``easy``, ``hard``).
        texts: the texts of documents (global indices), for the rule's rewrite band.
    """
    s, e = nb.sims, nb.edges
    if not len(s):
        return np.zeros(0, np.int64)
    hi = accept(_Shifted(nb, margin), texts)
    lo = accept(_Shifted(nb, -margin), texts)
    unsure = np.zeros(len(s), bool)
    live = np.zeros(len(s), bool)
    for eps in hi:
        unsure |= hi[eps] != lo[eps]
        live |= hi[eps]
    if ranked:
        d = nb.density
        unsure |= live & (np.abs(d[e[:, 0]] - d[e[:, 1]]) < density_margin) & (s < SAME_VECTOR)
    picked = np.zeros(len(nb.density), bool)
    picked[e[unsure]] = True
    # Copies of one text share one int8 vector; refining some of them only would split them (and
    # costs nothing more: each text is encoded once). Copies are each other's nearest neighbours.
    same = s >= SAME_VECTOR
    picked[e[same][picked[e[same]].any(axis=1)]] = True
    return np.flatnonzero(picked)


def reencode(corpus, index: np.ndarray, texts: Callable[[np.ndarray], dict[int, str]], config,
             cache_dir: str | None, use_cache: bool, text_normalize: str = "none") -> np.ndarray:
    """Float (``onnx-fp32``) embeddings of the documents ``index`` (global indices), through that
    backend's embedding cache (its own key: int8 and float vectors never share a cache entry)."""
    from dedupkit.embed import (
        EmbeddingCache, get_embedder, normalize_texts, normalized_key, resolve_model, through_cache,
    )

    fconfig = replace(config, backend="onnx-fp32", **({"cache_dir": str(cache_dir)} if cache_dir else {}))
    factory, arg = resolve_model(fconfig.model)
    key = normalized_key(factory.cache_key(arg, fconfig), text_normalize)
    out = np.zeros((len(index), 0), np.float32)
    emb = None

    def encoder(sel: np.ndarray, rows: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        def encode(missing: np.ndarray) -> np.ndarray:  # missing: sorted row numbers of sel's shard
            nonlocal emb
            if emb is None:
                emb = get_embedder(fconfig, factory, arg)
            want = sel[np.isin(rows, missing)]
            want = want[np.argsort(corpus.rows[want], kind="stable")]
            got = texts(want)
            return emb.encode(normalize_texts([got.get(int(g), "") for g in want], text_normalize))
        return encode

    for si in np.unique(corpus.shard_index[index]):
        pos = np.flatnonzero(corpus.shard_index[index] == si)
        sel = index[pos]
        rows = np.asarray(corpus.rows[sel], np.int64)
        cache = EmbeddingCache(cache_dir, key) if use_cache else None
        vectors, _ = through_cache(cache, corpus.shards[int(si)].fingerprint, rows, encoder(sel, rows))
        if out.shape[1] == 0:
            out = np.zeros((len(index), vectors.shape[1]), np.float32)
        out[pos] = vectors
    return out


def refined_search(c, corpus, x: np.ndarray, lowest: float, search_fn: Callable, stats: dict,
                   texts: Callable[[np.ndarray], dict[int, str]], accept: Callable) -> tuple[np.ndarray, object]:
    """The semantic stage's neighbour search, with near-boundary refinement under ``--backend onnx``.

    Args:
        c: the stage's :class:`~dedupkit.stages.semantic.SemanticConfig`.
        corpus: the stage's corpus (texts are read back for the documents re-encoded).
        x: the embeddings (int8 under ``--backend onnx``).
        lowest: the lowest cosine any decision looks at.
        search_fn: ``search_fn(x, threshold)`` -> :class:`~dedupkit.neighbours.Neighbours`.
        stats: the stage's stats; ``stats["refine"]`` is set when refinement runs.
        texts: ``texts(index)``: the texts of documents (global indices), read back from the shards.
        accept: the stage's decision rule, ``accept(nb, texts)`` -> ``{eps: mask over nb's edges}``.

    Returns:
        ``(x, nb)``: the embeddings (refined rows replaced by float ones) and their neighbours;
        unchanged ``x`` and ``search_fn(x, lowest)`` for any other backend.
    """
    if not len(x) or not wants_refine(c.embed):
        return x, search_fn(x, lowest)
    t0 = time.perf_counter()
    memo: dict[int, str] = {}

    def read(idx: np.ndarray) -> dict[int, str]:  # texts read once, for the rule and the re-encode
        need = np.asarray([i for i in idx if int(i) not in memo], np.int64)
        if len(need):
            memo.update(texts(need))
        return {int(i): memo.get(int(i), "") for i in idx}

    nb = search_fn(x, lowest - INT8_PAIR_ERROR)
    redo = uncertain_docs(nb, accept, c.keep in RANKED_POLICIES, read)
    t1 = time.perf_counter()
    if len(redo):
        x = x.copy()
        x[redo] = reencode(corpus, redo, read, c.embed, c.cache_dir, c.use_cache, c.embed_normalize)
    t2 = time.perf_counter()
    nb = search_fn(x, lowest)
    stats["refine"] = {"docs": int(len(redo)), "share": round(len(redo) / len(x), 4),
                       "pair_error_bound": INT8_PAIR_ERROR, "density_error_bound": INT8_DENSITY_ERROR,
                       "select_s": round(t1 - t0, 3), "encode_s": round(t2 - t1, 3),
                       "search_s": round(time.perf_counter() - t2, 3)}
    log.info("refined %d of %d int8 embeddings near a decision with the float export", len(redo), len(x))
    return x, nb
