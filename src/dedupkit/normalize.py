"""Text normalization before hashing, vectorized over whole Arrow arrays.

Steps (applied in this fixed order, whatever order they are given in):

==========  ===================================================================================
nfkc        Unicode NFKC: full-width and compatibility forms fold (ｆｕｌｌ -> full, NBSP -> space)
lower       Unicode lower case
punctuation remove Unicode punctuation and symbols (\\p{P}, \\p{S})
digits      replace every run of decimal digits with one ``0`` (dates, counters, prices)
whitespace  collapse every run of whitespace to one space and trim both ends
==========  ===================================================================================

The exact stage's default is ``lower,whitespace``: re-serialised copies of a page (CRLF vs LF,
trailing newline, re-wrapped or re-indented paragraphs) and re-sends that only change case (an
UPPER-CASE or Title Case headline) are the commonest "exact" duplicates that a raw byte hash
misses, and neither step merges two texts whose words differ. On reuters-nd this finds every
natural exact-duplicate group (defined the same way) with precision 1.0; ``whitespace`` alone
misses the case-only re-sends (see benchmarks/RESULTS.md). ``punctuation`` and ``digits`` merge
texts a reader may call different (code, tables, prices), so they are opt-in; use
``--normalize whitespace`` (or ``none``) for source code, where case matters.
"""

from __future__ import annotations

import functools
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dedupkit import kernels
from dedupkit import settings as _S
from dedupkit.errors import ConfigError

STEPS = ("nfkc", "lower", "punctuation", "digits", "whitespace")
DEFAULT = tuple(_S.ExactConfig.normalize.split(","))  # lower,whitespace (dedupkit.settings)


def parse_steps(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """Parse ``"nfkc,lower"`` (or a list) into the canonical ordered tuple; ``none`` means no step."""
    if value is None:
        return DEFAULT
    items = value.split(",") if isinstance(value, str) else list(value)
    items = [i.strip().lower() for i in items if i and i.strip()]
    if items in ([], ["none"]):
        return ()
    unknown = [i for i in items if i not in STEPS]
    if unknown:
        raise ConfigError(
            f"unknown normalization step {unknown[0]!r}; choose from {', '.join(STEPS)} (comma-separated) or none"
        )
    return tuple(s for s in STEPS if s in items)


def _large(arr: pa.Array) -> pa.Array:
    return arr if pa.types.is_large_string(arr.type) else arr.cast(pa.large_string())


def text_buffers(arr: pa.Array) -> tuple[pa.Array, object, np.ndarray]:
    """What the C kernels take: ``arr`` as large_string, its data buffer (``b""`` when it has
    none) and its ``len(arr) + 1`` int64 offsets (a view, slice offset applied)."""
    arr = _large(arr)
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64)[arr.offset: arr.offset + len(arr) + 1]
    return arr, (bufs[2] if bufs[2] is not None else b""), offsets


def _collapse(arr: pa.Array, ascii_lower: bool) -> tuple[pa.Array, np.ndarray | None]:
    """collapse_whitespace, plus (C path only) a bool per document: holds a non-ASCII byte."""
    arr = _large(arr)
    if len(arr) == 0:
        return arr, np.zeros(0, bool)
    if arr.null_count:
        raise ValueError("collapse_whitespace expects no nulls")
    arr, buf, offsets = text_buffers(arr)
    if kernels.speedups is not None:
        out, new_offsets, flags = kernels.speedups.collapse_ws(buf, offsets.tobytes(), len(arr), ascii_lower)
        result = pa.LargeStringArray.from_buffers(len(arr), pa.py_buffer(new_offsets), pa.py_buffer(out))
        return result, np.frombuffer(flags, dtype=np.uint8).astype(bool)
    if ascii_lower:
        arr, buf, offsets = text_buffers(pc.ascii_lower(arr))
    o0 = int(offsets[0])
    data = np.frombuffer(buf, dtype=np.uint8)[o0: int(offsets[-1])]
    ws = (data == 32) | ((data >= 9) & (data <= 13))
    prev = np.empty_like(ws)
    if len(ws):
        prev[1:] = ws[:-1]
        starts = offsets[:-1] - o0
        prev[starts[starts < len(ws)]] = True  # a document start behaves like "after whitespace"
    keep = ~(ws & prev)
    del prev
    out = np.where(ws, np.uint8(32), data)[keep]
    # New offsets from per-document kept-byte counts (O(documents) memory); an index array of kept
    # positions would cost 8 bytes per input byte, 800 MB for one 100 MB document.
    lengths = np.diff(offsets)
    counts = np.zeros(len(arr), np.int64)
    nonempty = lengths > 0
    if nonempty.any():
        counts[nonempty] = np.add.reduceat(keep.view(np.uint8), (offsets[:-1] - o0)[nonempty], dtype=np.int64)
    new_offsets = np.concatenate([np.zeros(1, np.int64), np.cumsum(counts)])
    result = pa.LargeStringArray.from_buffers(len(arr), pa.py_buffer(new_offsets), pa.py_buffer(out))
    return pc.ascii_rtrim_whitespace(result), None  # at most one trailing ASCII space is left


def char_lengths(arr: pa.Array) -> np.ndarray:
    """Length in characters (code points) of every string of a string array without nulls."""
    if kernels.speedups is None or len(arr) == 0:
        return np.asarray(pc.utf8_length(arr), dtype=np.int64)
    arr, buf, offsets = text_buffers(arr)
    return np.frombuffer(kernels.speedups.utf8_lengths(buf, offsets.tobytes(), len(arr)), dtype=np.int64)


def collapse_whitespace(arr: pa.Array, ascii_lower: bool = False) -> pa.Array:
    """Collapse ASCII whitespace runs to one space and trim, on the raw UTF-8 bytes.

    Uses the C extension when it was built (one pass, several GB/s with AVX2), else numpy (several
    passes, still several times faster than a regex replace, which materialises a match per run).
    Other Unicode spaces are handled by ``nfkc`` (which maps them to U+0020) when that step is on.

    Args:
        arr: strings without nulls.
        ascii_lower: also lower-case ASCII letters (leaves other letters as they are).
    """
    return _collapse(arr, ascii_lower)[0]


@functools.cache
def _arrow_nfkc_composes() -> bool:
    """Whether this pyarrow's ``utf8_normalize`` composes: before pyarrow 26 it returned the
    decomposed form for NFC and NFKC too (apache/arrow#51225; the wheels for Python 3.10 are 25)."""
    return pc.utf8_normalize(pa.array(["e\u0301\ufb01"]), "NFKC")[0].as_py() == "\u00e9fi"


def nfkc(arr: pa.Array) -> pa.Array:
    """Unicode NFKC of a string array (nulls stay null): Arrow's kernel, or, on a pyarrow whose
    kernel does not compose, ``unicodedata`` on the non-ASCII rows (ASCII is NFKC-normal).

    Example:
        >>> nfkc(pa.array(["e\u0301tude", "\uff21B", None])).to_pylist()
        ['étude', 'AB', None]
    """
    if _arrow_nfkc_composes():
        return pc.utf8_normalize(arr, "NFKC")
    import unicodedata

    mask = pc.invert(pc.fill_null(pc.string_is_ascii(arr), True))
    if not pc.any(mask).as_py():
        return arr
    fixed = pa.array([unicodedata.normalize("NFKC", s) for s in arr.filter(mask).to_pylist()], arr.type)
    return pc.replace_with_mask(arr, mask, fixed)


def normalize_split(arr: pa.Array, steps: tuple[str, ...]) -> tuple[pa.Array, np.ndarray | None, pa.Array | None]:
    """Normalize, leaving the rare rows that need more work as a separate small array.

    Returns ``(out, idx, fixed)``: ``out`` holds every row normalized, except that the rows ``idx``
    (when not None) are normalized as ``fixed`` instead. This lets the exact stage hash ``out`` and
    re-hash only ``fixed``, instead of copying the whole batch to splice a few rows in.

    With ``lower`` and ``whitespace`` (the default) and the C extension, one pass collapses
    whitespace, lower-cases ASCII letters and flags documents with non-ASCII bytes; only those get
    Unicode lower-casing (``utf8_lower``) afterwards, on their collapsed text. Lower-casing never
    creates or removes ASCII whitespace, so the two orders give the same text.
    """
    arr = _large(arr)
    if "nfkc" in steps:
        arr = nfkc(arr)
    fusable = "lower" in steps and "whitespace" in steps and "punctuation" not in steps and "digits" not in steps
    if fusable and kernels.speedups is not None:
        out, flags = _collapse(arr, True)
        if flags is None or not flags.any():
            return out, None, None
        if flags.mean() > 0.5:  # mostly non-ASCII text: one pass over everything is cheaper
            return pc.utf8_lower(out), None, None
        idx = np.flatnonzero(flags)
        return out, idx, pc.utf8_lower(out.take(pa.array(idx)))
    # ASCII text is lower-cased inside the whitespace pass (one pass instead of two).
    fused_lower = fusable and bool(pc.all(pc.string_is_ascii(arr)).as_py())
    if "lower" in steps and not fused_lower:
        arr = pc.utf8_lower(arr)
    if "punctuation" in steps:
        arr = pc.replace_substring_regex(arr, r"[\p{P}\p{S}]+", "")
    if "digits" in steps:
        arr = pc.replace_substring_regex(arr, r"\d+", "0")
    if "whitespace" in steps:
        arr = collapse_whitespace(arr, ascii_lower=fused_lower)
    return arr, None, None


def normalize(arr: pa.Array, steps: tuple[str, ...]) -> pa.Array:
    """Apply normalization steps to a string array without nulls; returns a large_string array."""
    out, idx, fixed = normalize_split(arr, steps)
    if idx is None:
        return out
    index = np.arange(len(out), dtype=np.int64)
    index[idx] = len(out) + np.arange(len(idx), dtype=np.int64)
    return pa.concat_arrays([out, fixed.cast(out.type)]).take(pa.array(index))
