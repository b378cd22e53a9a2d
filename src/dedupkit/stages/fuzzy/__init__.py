"""Fuzzy deduplication: MinHash signatures, LSH band buckets, direct verification, greedy centres.

The work is split so that every step is a top-level function over a small task object that names
files under the work folder (the leaf module :mod:`~dedupkit.stages.fuzzy.tasks`);
:meth:`FuzzyStage.identify` runs them through ``self.engine.map``, so the local process pool and
the Ray engine execute the same code:

1. scan (runner): :class:`FuzzyMapper` writes per scan task ``sig`` (uint32 signature values),
   with ``--verify sets`` also ``wset``/``wsetn`` (every document's distinct word-shingle hashes),
   ``band`` (one uint64 key per LSH band) and ``nsh`` (shingles per document).
2. :func:`bucket_task` per (band, hash partition): sort the band keys, turn every bucket of two or
   more documents into candidate pairs, write them to ``pairs-*.npy``. The LSH banding comes from
   the *candidate* threshold, which may be lower than the verification thresholds (recall first).
3. :func:`verify_task` per chunk of unique candidate pairs: keep the pairs whose similarity reaches
   the threshold of at least one measure (``--measure``): the signature estimate of Jaccard
   (``--verify signature``), or, on the true shingle sets (``--verify sets``, recomputed by
   :func:`shingle_set_task` for candidate documents only), word-shingle Jaccard, containment of the
   smaller set in the larger, or char-n-gram Jaccard. Each kept pair carries its score and the
   measure that decided it.
4. greedy centre clustering of the verified pairs in keep-priority order
   (:func:`dedupkit.engine.graph.centre_clusters`): the best unclaimed document becomes a kept centre
   and claims its unclaimed verified neighbours. A dropped document is therefore always a *direct*
   verified neighbour of the document named in its ``duplicate_of`` (no chaining A~B~C that drops C
   for A), and its score is that pair's similarity.

Memory of one process is bounded by the number of documents (8-16 bytes per document per task,
plus the candidate pairs), never by their text: signatures stay in memory-mapped files.

Modules: ``tasks`` (the per-task functions), ``stage`` (:class:`FuzzyConfig`, :class:`FuzzyStage`),
``single`` (the global step in one process) and ``partitioned`` (the global step on a distributed
engine).
"""

from dedupkit.stages.fuzzy.stage import (
    CLUSTER_MODES, FUZZY_OPTIONS, MEASURES, VERIFY_MODES, FuzzyConfig, FuzzyStage,
)
from dedupkit.stages.fuzzy.tasks import (
    MEASURE_NAMES, FuzzyMapper, bucket_pairs, pack_payload, set_intersections, sorted_sets, unpack_payload,
)

__all__ = ["CLUSTER_MODES", "FUZZY_OPTIONS", "MEASURES", "MEASURE_NAMES", "VERIFY_MODES", "FuzzyConfig",
           "FuzzyMapper", "FuzzyStage", "bucket_pairs", "pack_payload", "set_intersections", "sorted_sets",
           "unpack_payload"]
