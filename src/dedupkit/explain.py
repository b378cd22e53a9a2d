"""Counts and drops in words: one meaning and one label for each count, and the reason of a drop.

Every place that shows counts (a stage's stderr line, ``--json``, ``dedupkit stats``, the HTML
report, ``dedupkit run``) reads them through :func:`stage_counts` and labels them with
:data:`LABELS`, so a number called "dropped by stage" means the same thing everywhere:

==================  =================================================================
``rows``            every input row
``considered``      the stage's own input: the rows no earlier stage (``--skip``) dropped
``dropped_by_stage`` the rows this stage dropped (duplicates and bad records)
``kept``            the rows kept after this stage (= considered - dropped_by_stage)
``dropped``         the rows dropped so far by this stage and every earlier one
                    (= rows - kept)
==================  =================================================================

Example:
    >>> c = stage_counts({"stage": "fuzzy", "counts": {"rows": 305, "considered": 257,
    ...                   "dropped_by_stage": 14, "kept": 243, "dropped": 62, "clusters": 14}})
    >>> count_line("fuzzy", c)
    'fuzzy: stage input 257 of 305 rows, dropped by stage 14, kept 243, dropped in total 62 (14 clusters)'
"""

from __future__ import annotations

import math
from typing import Any

#: The label of each count key, the same in every listing.
LABELS = {
    "rows": "all rows",
    "considered": "stage input",
    "dropped_by_stage": "dropped by stage",
    "kept": "kept",
    "dropped": "dropped in total",
    "clusters": "clusters",
    "largest_cluster": "largest cluster",
    "bad_records": "bad records",
    "drop_rate": "stage drop rate",
}
#: The order in which listings show the counts.
ORDER = ("considered", "dropped_by_stage", "kept", "dropped", "rows")


def _int(v: Any) -> int:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0


def stage_counts(summary: dict[str, Any]) -> dict[str, Any]:
    """The labelled counts of a finished stage (or, for a ``run`` summary, of all its stages together).

    Works on summaries written before these keys existed (``considered`` then defaults to
    ``rows`` and ``dropped_by_stage`` to ``dropped``).

    Args:
        summary: the content of ``OUT/summary.json``.

    Returns:
        ``rows``, ``considered``, ``dropped_by_stage``, ``kept``, ``dropped``, ``clusters``,
        ``largest_cluster``, ``bad_records`` (ints) and ``drop_rate`` (dropped_by_stage /
        considered).
    """
    c = summary.get("counts") if isinstance(summary.get("counts"), dict) else {}
    rows = _int(c.get("rows"))
    kept = _int(c.get("kept"))
    dropped = _int(c.get("dropped", rows - kept))
    by_stage = c.get("dropped_by_stage")
    if summary.get("pipeline") or isinstance(by_stage, dict):
        # all stages together (a combined run summary maps each stage to its drops): their input
        # is every row, their drops are every drop
        considered, by_stage = rows, dropped
    else:
        considered = _int(c.get("considered", rows))
        by_stage = _int(by_stage) if by_stage is not None else considered - kept
    return {
        "rows": rows, "considered": considered, "dropped_by_stage": by_stage, "kept": kept, "dropped": dropped,
        "clusters": _int(c.get("clusters")), "largest_cluster": _int(c.get("largest_cluster")),
        "bad_records": _int(c.get("bad_records")),
        "drop_rate": (by_stage / considered) if considered else 0.0,
    }


def count_line(name: str, c: dict[str, Any], note: str = "") -> str:
    """One line with every count labelled (what a stage prints on stderr, and ``run`` per stage).

    Args:
        name: the stage name (or ``run``).
        c: counts from :func:`stage_counts`.
        note: appended after a dash (e.g. ``reused``).
    """
    bad = f", {c['bad_records']} bad records" if c.get("bad_records") else ""
    return (f"{name}: {LABELS['considered']} {c['considered']} of {c['rows']} rows, "
            f"{LABELS['dropped_by_stage']} {c['dropped_by_stage']}, kept {c['kept']}, "
            f"{LABELS['dropped']} {c['dropped']} ({c['clusters']} clusters{bad})" + (f" - {note}" if note else ""))


# -- reasons ------------------------------------------------------------------------------------

#: Manifest columns a stage may add that refine the reason text.
MEASURE_COLUMN = "measure"  # which similarity decided a fuzzy pair (jaccard, containment, ...)
MATCH_COLUMN = "match"      # `dedupkit check`: index-exact, index-fuzzy, drop-exact, drop-fuzzy


#: How a fuzzy stage's ``measure`` values read in a reason.
MEASURE_WORDS = {
    "jaccard": "jaccard",                          # word-shingle Jaccard, computed exactly
    "jaccard_estimate": "estimated jaccard",       # from the MinHash signatures (--verify signature)
    "char": "char n-gram jaccard",                 # Jaccard of character n-grams
    "containment": "containment",                  # share of the shorter document's shingles in the other
    "candidate": "LSH candidate (not verified)",   # --verify none
}


def reason_text(stage: str, duplicate_of: str | None, score: float | None, measure: str | None = None,
                match: str | None = None, kind: str | None = None, bytes_cut: int | None = None) -> str:
    """Why a row was dropped as a duplicate, in words.

    ``exact duplicate of X``; ``jaccard 0.83 with X`` (fuzzy: the manifest's score, named by
    its ``measure`` column when the stage wrote one, else jaccard); ``cosine similarity 0.96 to X``
    (semantic: the score column is the cosine similarity, 1 - distance); ``dedupkit check`` adds
    ``in the index`` for matches of indexed documents; ``holds eval item SET/ITEM (overlap
    0.83)`` (decontaminate); ``shorter than min_length after cutting N repeated bytes``
    (substring). Another stage: ``STAGE duplicate of X (score 0.83)``. ``kind`` (exact, fuzzy, semantic) is what decided, when the stage's name
    differs (a built-in stage registered under another name).

    Example:
        >>> reason_text("fuzzy", "d7", 0.8312)
        'jaccard 0.83 with d7'
    """
    x = duplicate_of if duplicate_of is not None else "?"
    has_score = score is not None and not (isinstance(score, float) and math.isnan(score))
    kind = kind or stage
    where = ""
    if match:
        where = " in the index" if match.startswith("index") else ""
        kind = "exact" if match.endswith("exact") else "fuzzy"
    if kind == "exact":
        return f"exact duplicate of {x}{where}"
    if kind == "fuzzy":
        m = MEASURE_WORDS.get(measure or "jaccard", measure)
        if measure == "candidate" or not has_score:
            return f"{m} with {x}{where}" if measure == "candidate" else f"{m} match with {x}{where}"
        return f"{m} {score:.2f} with {x}{where}"
    if kind == "decontaminate":
        return f"holds eval item {x}" + (f" (overlap {score:.2f})" if has_score else "")
    if kind == "substring":
        return (f"shorter than min_length after cutting {bytes_cut} repeated bytes" if bytes_cut is not None
                else "shorter than min_length after cutting repeated passages")
    if kind == "semantic":
        return f"cosine similarity {score:.2f} to {x}" if has_score else f"semantic duplicate of {x}"
    return f"{stage} duplicate of {x}" + (f" (score {score:.2f})" if has_score else "")


def drop_reasons(stage: str, keep, duplicate_of, score, extra: dict | None = None, kind: str | None = None):
    """The ``reason`` column for a stage's active rows: null for kept rows, words for dropped ones.

    Args:
        stage: the stage name.
        keep: bool numpy array.
        duplicate_of: pyarrow string array (the representative's doc_id of dropped rows).
        score: float numpy array (NaN = no score).
        extra: the stage's extra manifest columns; ``measure``, ``match`` and ``bytes_cut`` refine
            the text.
        kind: see :func:`reason_text`.

    Returns:
        A pyarrow string array as long as ``keep``.
    """
    import numpy as np
    import pyarrow as pa

    n = len(keep)
    dropped = ~np.asarray(keep, bool)
    if (kind or stage) == "exact" and MATCH_COLUMN not in (extra or {}):
        return _exact_reasons(dropped, duplicate_of)
    drop = np.flatnonzero(dropped)
    out: list[str | None] = [None] * n
    if len(drop):
        idx = pa.array(drop)
        dups = duplicate_of.take(idx).to_pylist()
        scores = np.asarray(score, np.float64)[drop].tolist()
        extra = extra or {}
        col = {c: extra[c].take(idx).to_pylist() if c in extra else [None] * len(drop)
               for c in (MEASURE_COLUMN, MATCH_COLUMN, "bytes_cut")}
        for j, (i, d, s) in enumerate(zip(drop.tolist(), dups, scores)):
            out[i] = reason_text(stage, d, None if math.isnan(s) else s, col[MEASURE_COLUMN][j], col[MATCH_COLUMN][j],
                                 kind, col["bytes_cut"][j])
    return pa.array(out, pa.string())


def _exact_reasons(dropped, duplicate_of):
    """:func:`drop_reasons` of an exact stage, built by Arrow rather than a Python call per dropped
    row (0.19 s for the 100,000 dropped rows of 1M documents): "exact duplicate of X", null for
    kept rows, the same strings :func:`reason_text` gives."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(dropped)
    drop = np.flatnonzero(dropped)
    if not len(drop):
        return pa.nulls(n, pa.string())
    dups = pc.fill_null(duplicate_of.take(pa.array(drop)).cast(pa.string()), "?")
    text = pc.binary_join_element_wise(pa.scalar("exact duplicate of "), dups, "").cast(pa.string())
    # row i takes text[j] (its place among the dropped rows), or null when it is kept
    at = pa.Array.from_buffers(pa.int64(), n, [pa.py_buffer(np.packbits(dropped, bitorder="little")),
                                               pa.py_buffer(np.cumsum(dropped, dtype=np.int64) - 1)])
    return text.take(at)
