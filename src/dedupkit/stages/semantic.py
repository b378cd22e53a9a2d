"""Semantic deduplication on sentence embeddings: nearest neighbours over the whole corpus.

Steps:

1. **Embed** every active document, shard by shard (in worker processes through the run's engine),
   reusing the per-shard embedding cache (:class:`dedupkit.embed.EmbeddingCache`) keyed by the
   embedder (model files, truncation) and the shard's content fingerprint.
2. **Search** each document's ``neighbours`` nearest documents (:mod:`dedupkit.neighbours`): over
   the whole corpus, exactly up to 100,000 documents and with an IVF index beyond (``search =
   auto``), or only inside its k-means cluster (``search = kmeans``, SemDeDup's way, Abbas et al.
   2023). Pairs at cosine >= 1 - max(eps) - :func:`band_depth` are kept. This is the costly step, and it does not depend
   on eps beyond that bound, so ``analyze`` evaluates many eps values at the cost of one.
3. **Rank** by the keep policy (``hard`` keeps the least typical document first: farthest from its
   k-means centroid, or with a global search the lowest mean cosine to its neighbours; ``easy`` the
   most typical; ``random`` a seeded shuffle; ``first`` the lowest (shard, row)); ``keep_by`` ranks
   by a column first.
4. **Pairs**: cosine >= 1 - eps, or in the rewrite band (cosine >= 1 - eps - rewrite_eps) when the
   two texts read as a rewrite of each other (:func:`rewrite_ok`: long enough, sharing content
   words, no conflicting number, not one template with another name filled in); such a rewrite
   counts ``mutual_eps`` further down (off by default) when the two texts are each other's
   nearest neighbour (:func:`mutual_nearest`).
5. **Decide** with greedy centres, as the fuzzy stage does: in rank order, an unclaimed document is
   kept and claims the unclaimed documents it forms a pair with. Every dropped row's
   ``duplicate_of`` is therefore a direct neighbour forming a pair with it (no chaining through
   intermediate documents), and ``score`` is their cosine.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dedupkit.engine.base import report_progress
from dedupkit.embed import (
    ENCODE_CHUNK, EmbedConfig, EmbeddingCache, get_embedder, normalize_texts, normalized_key, passive_openmp,
    resolve_model, through_cache,
)
from dedupkit import settings as _S
from dedupkit.errors import ConfigError, InputError, require
from dedupkit.io.read import ReadSpec, read_rows
from dedupkit.io.shards import Shard
from dedupkit.neighbours import SEARCH_MODES, resolve_method, search
from dedupkit.policy import KeepPolicy
from dedupkit.stages.base import Decisions, Stage
from dedupkit.stages.semantic_refine import refined_search

log = logging.getLogger(__name__)

SEMANTIC_KEEP = _S.choices(_S.SemanticConfig, "keep")
DEFAULT_EPS = float(_S.SemanticConfig.eps)
DEFAULT_REWRITE_EPS = float(_S.SemanticConfig.rewrite_eps)
#: The rewrite rule (:func:`rewrite_ok`): a pair between ``1 - eps - rewrite_eps`` and ``1 - eps`` is
#: a duplicate only when both texts have this many words ...
REWRITE_MIN_WORDS = 20
#: ... and share this share of the smaller one's content words (stopwords left out).
REWRITE_MIN_OVERLAP = 0.4
#: ... and are not one template with another name in it: each side has at most this many content
#: words the other lacks, a name among them on each side, and only names on at least one side.
REWRITE_MAX_SWAP = 3
#: ``mutual_eps`` (off by default): a rewrite (:func:`rewrite_ok`) whose two texts are each other's
#: nearest neighbour counts this much further below the band (``1 - eps - rewrite_eps - mutual_eps``):
#: the bitext-mining signal. Two translations of one text pick each other first, while a formulaic
#: passage that shares words with many others ("... gardens beneath which rivers flow") has a closer
#: neighbour than the one it is compared with. The value measured for translations is
#: :data:`MUTUAL_EPS_TRANSLATIONS` (benchmarks/semantic_decision_model.py, docs/semantic.md).
DEFAULT_MUTUAL_EPS = float(_S.SemanticConfig.mutual_eps)
MUTUAL_EPS_TRANSLATIONS = 0.105
_WORD = re.compile(r"\w+")
#: English function words (and their archaic forms), left out of the content-word overlap: they say
#: nothing about the subject, and an old translation's "thou hast ... unto" would count against it.
STOPWORDS = frozenset("""thee thou thy thine ye hath hast doth dost shalt wilt unto a an the of to in on at for by with from and or but if then so as is are was were be
been being am do does did doing have has had having i me my we our you your he him his she her it its they
them their this that these those what which who whom whose when where why how can could would should will
shall may might must not no nor than too very s t just there here about into over under up down out off again
further once all any both each few more most other some such only own same also get got""".split())
#: Automatic cluster count: one cluster per this many documents, so the average pairwise block
#: is ~1000 x 1000 and k-means stays cheap (K = n / 1000 centroids).
AUTO_CLUSTER_SIZE = 1000
POINTS_PER_CENTROID = 256  # default fit sample: 256 documents per centroid ...
MIN_FIT_SAMPLE = 10_000  # ... and at least 10,000
SAMPLE_PAIRS = 3  # pairs shown on each side of each eps threshold


@dataclass(frozen=True)
class SemanticConfig:
    """Settings of the semantic stage.

    Attributes:
        embed: which embedder, device, batch size, truncation.
        eps: a document is a duplicate when its cosine to a kept neighbour is at least ``1 - eps``.
            With ``analyze``, every value is evaluated.
        rewrite_eps: depth of the rewrite band below the threshold: a pair at cosine between
            ``1 - eps - rewrite_eps`` and ``1 - eps`` is a duplicate too when :func:`rewrite_ok`
            says the two texts are a rewrite of each other; 0 = cosine only.
        mutual_eps: how much further down a rewrite counts when its two texts are each other's
            nearest neighbour (:func:`mutual_nearest`); 0 (default) = off; needs ``rewrite_eps`` > 0.
        embed_normalize: what the embedder reads: ``none`` (default) the text as it is,
            ``archaic`` (opt-in) archaic English word forms replaced by modern ones
            (:mod:`dedupkit.archaic`). The data itself is never changed.
        search: auto | exact | ivf | kmeans: where neighbours are looked for (see
            :mod:`dedupkit.neighbours`); auto = exact up to 100,000 documents, ivf beyond.
        neighbours: nearest documents looked at per document.
        nprobe: with ivf, inverted lists scanned per query; None = 32.
        clusters: with search = kmeans, k-means centroids; None = ``ceil(n / 1000)``.
        fit_sample: documents k-means is fitted on (a seeded sample); None = max(256 * clusters,
            10,000), all documents when there are fewer.
        niter: k-means iterations.
        keep: hard | easy | random | first | last | longest | shortest.
        keep_by: rank by this column first (``order`` desc = largest kept).
        order: asc | desc for ``keep_by``.
        seed: k-means sample, initialisation and the ``random`` policy.
        analyze: write an all-keep manifest and per-eps counts and sample pairs instead of drops.
        cache_dir: embedding cache root (default ``$DEDUPKIT_CACHE_DIR`` or ``~/.cache/dedupkit``).
        use_cache: read and write the embedding cache.
    """

    embed: EmbedConfig = field(default_factory=EmbedConfig)
    eps: tuple[float, ...] = (DEFAULT_EPS,)
    rewrite_eps: float = DEFAULT_REWRITE_EPS
    mutual_eps: float = DEFAULT_MUTUAL_EPS
    embed_normalize: str = _S.SemanticConfig.embed_normalize
    search: str = _S.SemanticConfig.search
    neighbours: int = _S.SemanticConfig.neighbours
    nprobe: int | None = None
    clusters: int | None = None
    fit_sample: int | None = None
    niter: int = _S.SemanticConfig.niter
    keep: str = _S.SemanticConfig.keep
    keep_by: str | None = None
    order: str = _S.SemanticConfig.keep_order
    seed: int = _S.SemanticConfig.seed
    analyze: bool = False
    cache_dir: str | None = None
    use_cache: bool = True

    def __post_init__(self) -> None:
        eps = parse_eps(self.eps)
        object.__setattr__(self, "eps", eps)
        if not self.analyze and len(eps) != 1:
            raise ConfigError(f"one --eps value is needed without --analyze, got {len(eps)}; "
                              "pass --analyze to compare several")
        if not 0.0 <= self.rewrite_eps <= 2.0 or math.isnan(self.rewrite_eps):
            raise ConfigError(f"rewrite_eps (the rewrite band's depth below 1 - eps) must be in [0, 2] "
                              f"(0 = cosine only), got {self.rewrite_eps}")
        if not 0.0 <= self.mutual_eps <= 2.0 or math.isnan(self.mutual_eps):
            raise ConfigError(f"mutual_eps (the mutual nearest neighbours' depth below the rewrite band) must be "
                              f"in [0, 2] (0 = off), got {self.mutual_eps}")
        if self.keep not in SEMANTIC_KEEP:
            raise ConfigError(f"keep must be one of {', '.join(SEMANTIC_KEEP)}, got {self.keep!r}")
        if self.order not in ("asc", "desc"):
            raise ConfigError(f"keep order must be asc or desc, got {self.order!r}")
        from dedupkit.archaic import EMBED_NORMALIZE

        if self.embed_normalize not in EMBED_NORMALIZE:
            raise ConfigError(f"embed_normalize must be one of {', '.join(EMBED_NORMALIZE)}, "
                              f"got {self.embed_normalize!r}")
        if self.search not in SEARCH_MODES:
            raise ConfigError(f"search must be one of {', '.join(SEARCH_MODES)}, got {self.search!r}")
        if self.neighbours < 1:
            raise ConfigError(f"neighbours must be at least 1, got {self.neighbours}")
        if self.nprobe is not None and self.nprobe < 1:
            raise ConfigError(f"nprobe must be at least 1, got {self.nprobe}")
        if self.clusters is not None and self.clusters < 1:
            raise ConfigError(f"clusters must be at least 1, got {self.clusters}")
        if self.fit_sample is not None and self.fit_sample < 1:
            raise ConfigError(f"fit_sample must be at least 1, got {self.fit_sample}")
        if self.niter < 1:
            raise ConfigError(f"niter must be at least 1, got {self.niter}")


def parse_eps(value: float | str | Sequence[float | str]) -> tuple[float, ...]:
    """``0.05`` or ``"0.01,0.05"`` or a sequence -> sorted tuple of floats in (0, 2]."""
    if isinstance(value, (int, float)):
        items: list = [value]
    elif isinstance(value, str):
        items = [v for v in value.split(",") if v.strip()]
    else:
        items = []
        for v in value:
            items.extend(v.split(",") if isinstance(v, str) else [v])
    out = []
    for v in items:
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ConfigError(f"eps must be numbers like 0.05 or 0.01,0.05,0.1; got {v!r}") from None
        if not 0.0 < f <= 2.0 or math.isnan(f):
            raise ConfigError(f"eps must be in (0, 2] (duplicates have cosine >= 1 - eps); got {f}")
        out.append(f)
    if not out:
        raise ConfigError("no eps value given; pass --eps 0.07 (or several with --analyze)")
    return tuple(sorted(set(out)))


# -- step 1: embeddings, per shard, through the engine -----------------------------------------


@dataclass(frozen=True)
class EmbedTask:
    index: int
    shard: Shard
    text_spec: ReadSpec
    n_rows: int
    rows: np.ndarray  # active rows of the shard, sorted
    fingerprint: str
    config: EmbedConfig
    factory: Callable
    arg: str
    cache_dir: str | None
    use_cache: bool
    out_path: str
    text_normalize: str = "none"  # what the embedder reads: "archaic" = dedupkit.archaic.modernise

    @property
    def ray_resources(self) -> dict:
        """On ``--engine ray``, ``--device cuda`` embedding tasks ask for a GPU each, and run on
        one long-lived actor per GPU (the model loads once per actor); see engine/ray.py."""
        return {"num_gpus": 1} if self.config.device == "cuda" else {}


@dataclass
class EmbedResult:
    path: str
    n: int
    computed: int  # rows embedded now (the rest came from the cache)
    seconds: float
    encode_s: float  # inside the embedder's encode() only
    load_s: float  # loading the model
    key: str
    dim: int
    device: str | None = None  # where encode() ran; None when every row came from the cache


def cache_key(emb, config: EmbedConfig) -> str:
    """The embedder's key plus the truncation, unless the embedder says it does not truncate."""
    if getattr(emb, "truncates", True) and f"maxtok={config.max_tokens}" not in emb.key:
        return f"{emb.key}:maxtok={config.max_tokens}"
    return emb.key


def run_embed_task(task: EmbedTask) -> EmbedResult:
    """Worker entry point: the embeddings of one shard's active rows, saved to ``task.out_path``."""
    t0 = time.perf_counter()
    key_fn = getattr(task.factory, "cache_key", None)
    key = key_fn(task.arg, task.config) if key_fn else None
    key = normalized_key(key, task.text_normalize)
    emb = None
    load_s = encode_s = 0.0
    if key is None:
        emb = get_embedder(task.config, task.factory, task.arg)
        key = normalized_key(cache_key(emb, task.config), task.text_normalize)
        load_s = time.perf_counter() - t0
    cache = EmbeddingCache(task.cache_dir, key) if task.use_cache else None

    def encode(missing: np.ndarray) -> np.ndarray:
        nonlocal emb, load_s, encode_s
        if emb is None:
            t_load = time.perf_counter()
            emb = get_embedder(task.config, task.factory, task.arg)
            load_s = time.perf_counter() - t_load
        rows, texts = read_rows(task.shard, task.text_spec, missing, task.n_rows)
        if not np.array_equal(rows, missing):
            raise InputError(f"{task.shard.name} changed while it was being read (expected {len(missing)} "
                             f"rows, read {len(rows)}); rerun on a stable copy")
        texts = normalize_texts(texts, task.text_normalize)
        t_enc = time.perf_counter()
        report_progress(len(task.rows) - len(missing))  # cached rows
        parts = []
        for a in range(0, len(texts), ENCODE_CHUNK):
            parts.append(emb.encode(texts[a:a + ENCODE_CHUNK]))
            report_progress(len(parts[-1]))
        encode_s = time.perf_counter() - t_enc
        return np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros((0, emb.dim), np.float32)

    out, computed = through_cache(cache, task.fingerprint, task.rows, encode)
    np.save(task.out_path, out)
    return EmbedResult(path=task.out_path, n=len(task.rows), computed=computed,
                       seconds=time.perf_counter() - t0, encode_s=encode_s, load_s=load_s, key=key,
                       dim=int(out.shape[1]), device=getattr(emb, "device", "cpu") if computed else None)


def embed_corpus(corpus, config: EmbedConfig, workdir: str, engine=None, cache_dir: str | None = None,
                 use_cache: bool = True, text_normalize: str = "none") -> tuple[np.ndarray, dict[str, Any]]:
    """Embeddings of every active document of ``corpus`` in global order, and embedding stats."""
    if cache_dir and config.cache_dir != cache_dir:  # --model static keeps its distilled model there too
        config = replace(config, cache_dir=str(cache_dir))
    factory, arg = resolve_model(config.model)
    spec0 = corpus.tasks[0].spec if corpus.tasks else ReadSpec()
    text_spec = ReadSpec(text_column=spec0.text_column, batch_size=spec0.batch_size, on_bad_record="skip",
                         max_record_bytes=spec0.max_record_bytes)
    bounds = np.searchsorted(corpus.shard_index, np.arange(len(corpus.shards) + 1), side="left")
    tasks = []
    for si, info in enumerate(corpus.shards):
        a, b = int(bounds[si]), int(bounds[si + 1])
        if b <= a:
            continue
        tasks.append(EmbedTask(
            index=len(tasks), shard=info.shard, text_spec=text_spec, n_rows=info.n_rows,
            rows=np.asarray(corpus.rows[a:b], np.int64), fingerprint=info.fingerprint, config=config,
            factory=factory, arg=arg, cache_dir=cache_dir, use_cache=use_cache, text_normalize=text_normalize,
            out_path=str(Path(workdir) / f"emb-{len(tasks):05d}.npy"),
        ))
    if engine is None:
        from dedupkit.engine.local import LocalEngine

        engine = LocalEngine(1)
    t0 = time.perf_counter()
    results: list[EmbedResult] = engine.map(run_embed_task, tasks, desc="semantic: embed",
                                            sizes=[len(t.rows) for t in tasks]) if tasks else []
    parts = [np.load(r.path) for r in results]
    if parts:
        x = np.concatenate(parts)
    else:
        x = np.zeros((0, get_embedder(config, factory, arg).dim if len(corpus) else 0), np.float32)
    stats = {"model_key": results[0].key if results else None, "dim": int(x.shape[1]) if x.ndim == 2 else 0,
             "embedded_now": int(sum(r.computed for r in results)),
             "from_cache": int(sum(r.n - r.computed for r in results)),
             "embed_s": round(time.perf_counter() - t0, 3),
             "encode_s": round(sum(r.encode_s for r in results), 3),
             "model_load_s": round(sum(r.load_s for r in results), 3),
             # where the encoding ran ("cuda", "cpu"); "cache" when nothing was embedded now
             "device": ",".join(sorted({r.device for r in results if r.device})) or "cache"}
    return x, stats


# -- step 2 with search = kmeans: the clusters -------------------------------------------------


def auto_clusters(n: int) -> int:
    return max(1, math.ceil(n / AUTO_CLUSTER_SIZE))


def kmeans(x: np.ndarray, k: int, fit_sample: int | None, niter: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means with FAISS: (assignment per row, centroids)."""
    n, d = x.shape
    if k <= 1 or n <= 1:
        c = x.mean(axis=0, keepdims=True)
        nrm = np.linalg.norm(c)
        return np.zeros(n, np.int64), (c / nrm if nrm > 0 else c).astype(np.float32)
    passive_openmp()
    faiss = require("faiss", "semantic")
    # FAISS's own rule of thumb: 256 points per centroid fit k-means well; more only costs time.
    m = min(n, fit_sample or max(POINTS_PER_CENTROID * k, MIN_FIT_SAMPLE))
    rng = np.random.default_rng(seed)
    sample = x if m >= n else x[np.sort(rng.choice(n, m, replace=False))]
    k = min(k, len(sample))
    km = faiss.Kmeans(d, k, niter=niter, seed=seed, spherical=True, verbose=False,
                      max_points_per_centroid=max(1, len(sample)), min_points_per_centroid=1)
    km.train(np.ascontiguousarray(sample, dtype=np.float32))
    assign = np.empty(n, np.int64)
    step = 65536
    for a in range(0, n, step):
        _, idx = km.index.search(np.ascontiguousarray(x[a:a + step], dtype=np.float32), 1)
        assign[a:a + step] = idx[:, 0]
    return assign, np.asarray(km.centroids, dtype=np.float32)


def content_words(text: str) -> tuple[int, frozenset[str]]:
    """(number of words, set of lower-cased words that are not :data:`STOPWORDS`) of a text."""
    w = _WORD.findall(text.lower())
    return len(w), frozenset(x for x in w if x not in STOPWORDS)


def proper_names(text: str) -> frozenset[str]:
    """Lower-cased words written with a capital inside a sentence (not after ``. ! ?`` and a space,
    an opening quote or bracket, or at the start): names of places, people, products."""
    out = set()
    for m in _WORD.finditer(text):
        w = m.group()
        if not w[0].isupper():
            continue
        before = text[:m.start()]
        prev = before.rstrip()
        if not prev or prev[-1] in "\"'\u201c\u2018(:" or (prev[-1] in ".!?" and len(prev) < len(before)):
            continue
        out.add(w.lower())
    return frozenset(out)


# Ranking scores closer than this tie (and go to the lowest global index): the float noise of a
# search (FAISS's summation order changes with the thread count) is ~1e-6, so copies of one text,
# whose scores are equal in exact arithmetic, would otherwise be ordered by that noise.
TYPICAL_STEP = 1e-4


def typical_key(typical: np.ndarray, keep: str) -> np.ndarray:
    """The keep-priority key of how typical each document is (``hard``: the least typical ranks
    first; ``easy``: the most typical), on a grid of :data:`TYPICAL_STEP` so that scores equal up to
    float noise tie and the tie goes to the lowest global index.

    Example:
        >>> typical_key(np.array([0.9, 0.9 + 1e-7, 0.5], np.float32), "easy").tolist()
        [-9000.0, -9000.0, -5000.0]
    """
    q = np.round(np.asarray(typical, np.float64) / TYPICAL_STEP)
    return q if keep == "hard" else -q


def rewrite_ok(a: tuple[int, frozenset[str]], b: tuple[int, frozenset[str]],
               names: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())) -> bool:
    """Whether two texts (:func:`content_words` of each) close in meaning are a rewrite of each other.

    Below cosine ``1 - eps`` an embedding alone cannot tell a rewrite from a near miss: short
    questions on one subject that ask different things (QQP's hard negatives, about 10 words) sit
    at cosine 0.9 and above. A pair there counts only when both texts have at least
    :data:`REWRITE_MIN_WORDS` words (the subject is then a smaller part of the vector), share at
    least :data:`REWRITE_MIN_OVERLAP` of the smaller text's content words (independent texts on
    one topic share fewer), do not each hold a number the other lacks (another year, price or
    version: another fact), and are not **one template with another name filled in**: when each
    text has at most :data:`REWRITE_MAX_SWAP` content words the other lacks, a name
    (:func:`proper_names`, passed in ``names``) among them on each side and nothing but names on
    at least one side ("hotels in Manali" / "hotels in Jhansi"), the words say the texts are the
    same and the cosine, below ``1 - eps``, says the swapped names matter: another place, person
    or product. A rewrite changes many words; a near copy sits above ``1 - eps``.

    Example:
        >>> a = content_words("The committee approved the 2019 budget after a long debate about "
        ...                   "school funding and the cost of new roads in the northern district")
        >>> b = content_words("After a long debate about school funding and the cost of new roads in "
        ...                   "the northern district, the committee approved the 2019 budget")
        >>> rewrite_ok(a, b), rewrite_ok(a, content_words("The committee approved the 2020 budget "
        ...     "after a long debate about school funding and the cost of new roads in the northern district"))
        (True, False)
        >>> t1 = "What are good gifts for a visitor to bring when invited to a family home in Pakistan for their first dinner?"
        >>> t2 = "What are good gifts for a visitor to bring when invited to a family home in Thailand for their first dinner?"
        >>> rewrite_ok(content_words(t1), content_words(t2), (proper_names(t1), proper_names(t2)))
        False
    """
    (na, wa), (nb, wb) = a, b
    if min(na, nb) < REWRITE_MIN_WORDS:
        return False
    if len(wa & wb) < REWRITE_MIN_OVERLAP * max(1, min(len(wa), len(wb))):
        return False
    da, db = wa - wb, wb - wa
    if any(w.isdigit() for w in da) and any(w.isdigit() for w in db):
        return False
    na_, nb_ = names
    swap = (0 < len(da) <= REWRITE_MAX_SWAP and 0 < len(db) <= REWRITE_MAX_SWAP and bool(da & na_)
            and bool(db & nb_) and (da <= na_ or db <= nb_))
    return not swap


def band_depth(rewrite_eps: float, mutual_eps: float = DEFAULT_MUTUAL_EPS) -> float:
    """How far below ``1 - eps`` any pair can be accepted: the rewrite band, and ``mutual_eps`` more
    for mutual nearest neighbours (nothing when the band is off). The search floor is ``1 - max(eps)
    - band_depth(rewrite_eps, mutual_eps)``."""
    return rewrite_eps + mutual_eps if rewrite_eps > 0 else 0.0


def mutual_nearest(nb) -> np.ndarray:
    """Mask over ``nb``'s edges: the two documents are each other's nearest neighbour among the
    edges (ties: the higher cosine, then the lower index). Depends only on the order of the
    cosines, so shifting every cosine by one amount (semantic_refine) does not change it."""
    e, s = nb.edges, np.asarray(nb.sims)
    m = len(s)
    if not m:
        return np.zeros(0, bool)
    ends = np.concatenate([e[:, 0], e[:, 1]])
    other = np.concatenate([e[:, 1], e[:, 0]])
    ss = np.concatenate([s, s])
    order = np.lexsort((other, -ss, ends))  # per document: highest cosine first, then lowest index
    first = order[np.r_[True, ends[order][1:] != ends[order][:-1]]]
    return np.bincount(first % m, minlength=m) == 2


def accepted_pairs(nb, eps_values: Sequence[float], rewrite_eps: float,
                   texts: Callable[[np.ndarray], dict[int, str]],
                   mutual_eps: float = DEFAULT_MUTUAL_EPS) -> dict[float, np.ndarray]:
    """For each eps, which of ``nb``'s edges make a duplicate pair: cosine >= 1 - eps, or cosine
    >= 1 - eps - rewrite_eps and :func:`rewrite_ok`, or cosine >= 1 - eps - rewrite_eps -
    mutual_eps and :func:`rewrite_ok` and :func:`mutual_nearest`. ``texts(index)``
    returns the texts of documents (global indices); it is called once, only for the documents of
    pairs in a band.

    The band sits at a fixed depth below each threshold, so a strict eps keeps a narrow band near
    it (precise) and a loose eps reaches further (more recall), rather than one fixed floor for all.
    Every accepted pair is monotone in the cosine: raising all cosines never removes a pair.
    """
    out = {eps: nb.sims >= 1.0 - eps for eps in eps_values}
    if rewrite_eps <= 0 or not len(eps_values):
        return out
    deep = band_depth(rewrite_eps, mutual_eps)
    band = np.flatnonzero((nb.sims >= 1.0 - max(eps_values) - deep) & (nb.sims < 1.0 - min(eps_values)))
    ok = np.zeros(len(nb.sims), bool)
    if len(band):
        docs = np.unique(nb.edges[band])
        got = texts(docs)
        feats = {int(d): (content_words(got.get(int(d), "")), proper_names(got.get(int(d), ""))) for d in docs}
        ok[band] = [rewrite_ok(feats[int(i)][0], feats[int(j)][0], (feats[int(i)][1], feats[int(j)][1]))
                    for i, j in nb.edges[band]]
    mutual = mutual_nearest(nb) if len(band) and mutual_eps > 0 else np.zeros(len(nb.sims), bool)
    for eps in eps_values:
        out[eps] |= ok & ((nb.sims >= 1.0 - eps - rewrite_eps) | (mutual & (nb.sims >= 1.0 - eps - deep)))
    return out


def claims(nb, threshold: float, rank: np.ndarray,
           accept: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy centres over the neighbour pairs at cosine >= threshold, in keep-priority order.

    The fuzzy stage's clustering (:func:`dedupkit.engine.graph.centre_clusters`): the best-ranked
    unclaimed document becomes a kept centre and claims its unclaimed neighbours, so every dropped
    document's ``duplicate_of`` is a direct neighbour at or above the threshold (no chaining).

    ``accept`` (a mask over ``nb``'s edges, from :func:`accepted_pairs`) replaces the threshold.

    Returns:
        ``(docs, centre, cosine)``: dropped documents (ascending), the centre of each, and their cosine.
    """
    from dedupkit.engine import graph

    sel = nb.sims >= threshold if accept is None else accept
    e = nb.edges[sel]
    # the cosine rides along as the pair's payload: its float32 bits in an int64
    pay = nb.sims[sel].astype(np.float32).view(np.int32).astype(np.int64)
    docs, centre, payload = graph.centre_clusters(np.column_stack([e, pay]) if len(e) else
                                                  np.zeros((0, 3), np.int64), rank)
    return docs, centre, payload.astype(np.int32).view(np.float32)


class SemanticStage(Stage):
    """Drop documents whose embedding is within ``eps`` (cosine >= 1 - eps) of a kept neighbour.

    Example:
        >>> from dedupkit.io.read import ReadSpec
        >>> from dedupkit.runner import run_stage
        >>> from dedupkit.stages.semantic import SemanticConfig, SemanticStage
        >>> stage = SemanticStage(SemanticConfig(eps=0.05, cache_dir=str(tmp / "cache")))
        >>> run_stage(stage, [str(data)], tmp / "semantic", ReadSpec()).summary["counts"]["dropped"]
        1
    """

    name = "semantic"

    def __init__(self, config: SemanticConfig = SemanticConfig()):
        self.config = config
        self.analysis: dict[str, Any] | None = None

    def read_columns(self) -> tuple[str, ...]:
        return (self.config.keep_by,) if self.config.keep_by else ()

    def key(self) -> str:
        return "semantic:scan"  # the scan computes nothing: embeddings live in their own cache

    def config_dict(self) -> dict:
        c = self.config
        d = {k: v for k, v in asdict(c).items() if k != "embed"}
        d["eps"] = list(c.eps)
        d.update({f"embed_{k}": v for k, v in asdict(c.embed).items()})
        return d

    def _priority(self, corpus, x: np.ndarray, assign: np.ndarray | None, centroids: np.ndarray | None,
                  density: np.ndarray) -> list[np.ndarray]:
        c = self.config
        n = len(corpus)
        base = "first" if c.keep in ("hard", "easy", "random") else c.keep
        pol = KeepPolicy(base, c.keep_by, c.order)
        keys = pol.priority(n, corpus.lengths, corpus.extra.get(c.keep_by) if c.keep_by else None)
        if c.keep in ("hard", "easy"):
            # How typical a document is: its cosine to its k-means centroid (SemDeDup) or, with a
            # global search, the mean cosine to its nearest neighbours (the same idea, local).
            if assign is not None and centroids is not None and n:
                typical = np.einsum("ij,ij->i", x, centroids[assign])
            else:
                typical = np.asarray(density, np.float32)
            keys.append(typical_key(typical, c.keep))
        elif c.keep == "random":
            keys.append(np.random.default_rng(c.seed).random(n))
        return keys

    def identify(self, corpus, workdir: str) -> Decisions:
        from dedupkit.policy import priority_rank

        c = self.config
        n = len(corpus)
        t0 = time.perf_counter()
        x, stats = embed_corpus(corpus, c.embed, workdir, self.engine, c.cache_dir, c.use_cache,
                                c.embed_normalize)
        t1 = time.perf_counter()
        method = resolve_method(c.search, n)
        assign = centroids = None
        if method == "kmeans" and n:
            assign, centroids = kmeans(x, c.clusters or auto_clusters(n), c.fit_sample, c.niter, c.seed)
            sizes = np.bincount(assign, minlength=len(centroids))
            stats.update({"clusters": int(len(centroids)), "largest_kmeans_cluster": int(sizes.max())})
        t2 = time.perf_counter()
        thresholds = {eps: 1.0 - eps for eps in c.eps}
        lowest = min(thresholds.values()) - band_depth(c.rewrite_eps, c.mutual_eps)  # the bands below each threshold
        # --backend onnx: documents near a decision are re-encoded in float first (semantic_refine)
        x, nb = refined_search(c, corpus, x, lowest, lambda v, t: search(
            v, c.neighbours, t, method, groups=assign, nprobe=c.nprobe, seed=c.seed), stats,
            lambda idx: fetch_texts(corpus, idx), lambda g, texts: accepted_pairs(g, c.eps, c.rewrite_eps, texts,
                                                                                 c.mutual_eps)
        ) if n else (x, None)
        t3 = time.perf_counter()
        stats["search"] = nb.stats if nb else {"method": method}
        stats.update({"kmeans_s": round(t2 - t1, 3), "search_s": round(t3 - t2, 3)})
        density = nb.density if nb else np.zeros(0, np.float32)
        rank = priority_rank(self._priority(corpus, x, assign, centroids, density), n)

        per_eps = []
        decided = {}
        t4 = time.perf_counter()
        accept = accepted_pairs(nb, c.eps, c.rewrite_eps, lambda idx: fetch_texts(corpus, idx),
                                c.mutual_eps) if nb else {}
        stats["rewrite_s"] = round(time.perf_counter() - t4, 3)
        for eps, thr in thresholds.items():
            docs, centre, sim = claims(nb, thr, rank, accept[eps]) if nb else (np.zeros(0, np.int64),) * 3
            decided[eps] = (docs, centre, sim)
            per_eps.append({"eps": eps, "threshold": round(thr, 6), "drop": int(len(docs)),
                            "drop_rate": float(len(docs) / n) if n else 0.0,
                            "pairs": int(accept[eps].sum()) if nb else 0,
                            "rewrite_pairs": int((accept[eps] & (nb.sims < thr)).sum()) if nb else 0,
                            # of those, the mutual nearest neighbours' tier below the rewrite band
                            "mutual_pairs": int((accept[eps] & (nb.sims < thr - c.rewrite_eps)).sum()) if nb else 0})
        stats["per_eps"] = per_eps

        nearest = nb.nearest if nb else np.zeros(0, np.int64)
        nearest_sim = nb.nearest_sim if nb else np.zeros(0, np.float32)
        has = nearest >= 0
        near_ids = corpus.doc_ids(np.where(has, nearest, 0)) if n else pa.array([], pa.string())
        extra = {
            "nearest_sim": pa.array(np.where(has, nearest_sim, np.nan).astype(np.float32), pa.float32(),
                                    mask=~has),
            "nearest_doc": pc.if_else(pa.array(has, pa.bool_()), near_ids, pa.scalar(None, pa.string()))
            if n else pa.array([], pa.string()),
        }
        idx = np.arange(n, dtype=np.int64)
        if c.analyze:
            self.analysis = {"per_eps": per_eps, "search": stats["search"],
                             "samples": self._samples(corpus, nb, list(thresholds.items())) if nb else [],
                             "clusters": stats.get("clusters", 0), "documents": n}
            stats["analysis"] = self.analysis
            stats["identify_s"] = round(time.perf_counter() - t0, 3)
            return Decisions(representative=idx.copy(), labels=np.full(n, -1, np.int64),
                             score=np.full(n, np.nan, np.float32), extra=extra, stats=stats)

        docs, centre, sim = decided[c.eps[0]]
        stats["identify_s"] = round(time.perf_counter() - t0, 3)
        return Decisions.of_centres(n, docs, centre, sim, extra=extra, stats=stats)

    def _samples(self, corpus, nb, thresholds: list[tuple[float, float]]) -> list[dict]:
        """Pairs (a document and its nearest neighbour) just above and just below each threshold."""
        has = np.flatnonzero(nb.nearest >= 0)
        # each unordered pair once: the document with the smaller index speaks for it
        has = has[(has < nb.nearest[has]) | (nb.nearest[nb.nearest[has]] != has)]
        nearest, nearest_sim = nb.nearest, nb.nearest_sim
        if not len(has):
            return [{"eps": eps, "threshold": thr, "above": [], "below": []} for eps, thr in thresholds]
        sims = nearest_sim[has]
        order = np.argsort(sims, kind="stable")
        ssorted = sims[order]
        picked: list[tuple[float, float, str, list[int]]] = []
        for eps, thr in thresholds:
            cut = int(np.searchsorted(ssorted, thr, side="left"))
            above = has[order[cut:cut + SAMPLE_PAIRS]]
            below = has[order[max(0, cut - SAMPLE_PAIRS):cut]][::-1]
            picked.append((eps, thr, "above", list(above)))
            picked.append((eps, thr, "below", list(below)))
        need = sorted({int(i) for *_, docs in picked for d in docs for i in (d, nearest[d])})
        texts = fetch_texts(corpus, np.asarray(need, np.int64))
        ids = corpus.doc_ids(np.asarray(need, np.int64)).to_pylist()
        id_of = dict(zip(need, ids))
        out: dict[float, dict] = {}
        for eps, thr, side, docs in picked:
            entry = out.setdefault(eps, {"eps": eps, "threshold": round(thr, 6), "above": [], "below": []})
            for d in docs:
                p = int(nearest[d])
                entry[side].append({"cosine": round(float(nearest_sim[d]), 4), "doc": id_of[int(d)],
                                    "text": _clip(texts.get(int(d), "")), "neighbour": id_of[p],
                                    "neighbour_text": _clip(texts.get(p, ""))})
        return list(out.values())


def _clip(s: str, n: int = 200) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "\u2026"


def fetch_texts(corpus, index: np.ndarray) -> dict[int, str]:
    """Texts of a few active documents (global indices), read back from their shards."""
    spec0 = corpus.tasks[0].spec
    spec = ReadSpec(text_column=spec0.text_column, batch_size=spec0.batch_size, on_bad_record="skip",
                    max_record_bytes=spec0.max_record_bytes)
    out: dict[int, str] = {}
    for si in np.unique(corpus.shard_index[index]):
        sel = index[corpus.shard_index[index] == si]
        rows = corpus.rows[sel]
        info = corpus.shards[int(si)]
        order = np.argsort(rows)
        got_rows, texts = read_rows(info.shard, spec, rows[order], info.n_rows)
        by_row = dict(zip(got_rows.tolist(), texts))
        for g, r in zip(sel.tolist(), rows.tolist()):
            out[g] = by_row.get(r, "")
    return out
