"""MinHash signatures and LSH banding, computed for whole batches with numpy.

The signatures are *the same numbers* that :class:`datasketch.MinHash` gives for the same shingles,
seed and 64-bit shingle hash (:func:`shingle_hash`, built on xxh3); only the loop is different:
datasketch applies the permutations document by document in Python, this module applies them to
every shingle of a batch at once and takes per-document minima with ``np.minimum.reduceat``.
``tests/test_minhash.py`` proves the equality for both supported datasketch schemes.

Schemes (datasketch >= 2.0 names):

- ``affine64`` (default): the 64-bit shingle hash is pre-mixed with the MurmurHash3 finalizer, then
  permuted with ``a * h + b mod 2**64`` (``a`` odd: a bijection, so the permutation step adds no
  collisions). Three cheap uint64 passes per (shingle, permutation): the fastest exact scheme for a
  64-bit hash.
- ``legacy`` (datasketch < 2.0, text-dedup): ``((a * h + b) mod 2**64 mod (2**61 - 1)) & (2**32 - 1)``.

Example:
    >>> cfg = MinHashConfig(num_perm=128, threshold=0.8)
    >>> sigs = signatures(["a b c d e f", "a b c d e g"], cfg)
    >>> sigs.shape
    (2, 128)
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from dedupkit import kernels
from dedupkit.errors import ConfigError
from dedupkit import settings as _S
from dedupkit.normalize import nfkc, text_buffers

SHINGLES = _S.choices(_S.FuzzyConfig, "shingle")
SCHEMES = _S.choices(_S.FuzzyConfig, "scheme")

_MERSENNE = np.uint64((1 << 61) - 1)
_MAX32 = np.uint64((1 << 32) - 1)
_MAX64 = np.uint64((1 << 64) - 1)
# Word tokens are maximal runs of letters, marks, digits and underscore of any script (Latin,
# Cyrillic, Greek, Arabic, Devanagari...): text is split on runs of anything else (RE2 syntax, run
# by Arrow). Scripts written without spaces (Chinese, Japanese, Thai) come out as one token per
# run; use --shingle char for them.
SEPARATOR_RE2 = r"[^\p{L}\p{N}\p{M}_]+"
_WS_RE = re.compile(r"\s+")

# Shingles per numpy block: a (512, 128) uint64 block is 512 KiB and stays in L2 cache across the
# multiply, add and min passes; 4096-shingle blocks measured 2x slower (memory-bound).
_BLOCK = 512


@dataclass(frozen=True)
class MinHashConfig:
    """MinHash and LSH settings.

    Attributes:
        num_perm: permutations (signature length).
        seed: seed of the permutations (``numpy.random.RandomState(seed)``, as datasketch).
        shingle: ``word`` (n-grams of ``\\w+`` tokens) or ``char`` (n-grams of characters, for text
            without spaces).
        ngram: shingle length in tokens (word) or characters (char).
        threshold: Jaccard similarity that counts as a duplicate.
        bands, rows: LSH banding; when both are None, datasketch's optimal-parameter rule picks them
            for ``threshold`` and ``num_perm``. ``bands * rows`` must not exceed ``num_perm``.
        scheme: the datasketch permutation scheme, ``affine64`` or ``legacy``.
    """

    num_perm: int = _S.IndexConfig.num_perm
    seed: int = _S.IndexConfig.seed
    shingle: str = _S.IndexConfig.shingle
    ngram: int = _S.IndexConfig.ngram
    threshold: float = _S.IndexConfig.threshold
    bands: int | None = None
    rows: int | None = None
    scheme: str = _S.FuzzyConfig.scheme

    def __post_init__(self) -> None:
        # ranges and choices: the schema's (dedupkit.settings), checked without converting
        _S.validate(_S.IndexConfig, {k: getattr(self, k) for k in ("num_perm", "seed", "shingle", "ngram",
                                                                      "threshold")})
        _S.validate(_S.FuzzyConfig, {"scheme": self.scheme})
        if (self.bands is None) != (self.rows is None):
            raise ConfigError("give both bands and rows (--bands B --rows R), or neither to derive "
                              "them from the threshold")
        if self.bands is not None:
            if self.bands < 1 or self.rows < 1:
                raise ConfigError(f"bands and rows must be positive, got bands={self.bands} rows={self.rows}")
            if self.bands * self.rows > self.num_perm:
                raise ConfigError(f"bands * rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}; "
                                  "lower --bands/--rows or raise --num-perm")

    def resolved(self) -> tuple[int, int]:
        """(bands, rows): the given ones, else datasketch's optimal choice for the threshold."""
        if self.bands is not None and self.rows is not None:
            return self.bands, self.rows
        return optimal_params(float(self.threshold), self.num_perm)


# --- LSH parameters: datasketch's rule, from datasketch -----------------------------------------

@functools.lru_cache(maxsize=64)
def optimal_params(threshold: float, num_perm: int, fp_weight: float = 0.5,
                   fn_weight: float = 0.5) -> tuple[int, int]:
    """The (bands, rows) that minimise the weighted false-positive + false-negative area.

    This is datasketch's own search (``datasketch.lsh._optimal_param``, what
    ``MinHashLSH(threshold, num_perm)`` uses; datasketch has no public name for it, and
    ``MinHashLSH`` itself refuses fewer than 2 bands): the probability that two documents of
    Jaccard ``s`` share at least one band is ``1 - (1 - s**r)**b``; the false-positive area
    integrates it over ``[0, threshold]``, the false-negative area its complement over
    ``[threshold, 1]`` (scipy's ``quad``), and the first (b, r) with the smallest weighted sum wins.

    Example:
        >>> optimal_params(0.5, 128)
        (25, 5)
    """
    k = round(threshold * 100)
    if fp_weight == fn_weight == 0.5 and k / 100 == threshold and 1 <= k <= 99 and num_perm in _PRECOMPUTED:
        b, r = _PRECOMPUTED[num_perm].split()[k - 1].split("x")
        return int(b), int(r)
    from datasketch.lsh import _optimal_param

    b, r = _optimal_param(float(threshold), int(num_perm), float(fp_weight), float(fn_weight))
    return int(b), int(r)


# datasketch's answer for every threshold of two decimals (0.01 .. 0.99, the k-th entry is k/100)
# and the usual signature lengths, default weights: computing it imports scipy.integrate (through
# datasketch), ~0.4 CPU s, more than a tenth of a 100,000-document fuzzy run's start-up on the
# main process, before any worker gets a task. tests/test_minhash.py checks entries against
# datasketch (all of them with --run-slow); other values are computed.
_PRECOMPUTED = {
    64: (
        "64x1 64x1 54x1 40x1 32x1 26x1 22x1 19x1 17x1 15x1 13x1 32x2 32x2 32x2 32x2 32x2 32x2 32x2 31x2 "
        "28x2 25x2 23x2 21x2 19x2 18x2 16x2 21x3 21x3 21x3 21x3 21x3 21x3 21x3 21x3 21x3 21x3 19x3 17x3 "
        "16x3 16x4 16x4 16x4 16x4 16x4 16x4 16x4 16x4 16x4 15x4 14x4 12x5 12x5 12x5 12x5 12x5 12x5 12x5 "
        "12x5 10x6 10x6 10x6 10x6 10x6 10x6 9x7 9x7 9x7 9x7 9x7 8x8 8x8 8x8 8x8 7x9 7x9 7x9 6x10 6x10 "
        "6x10 5x11 5x12 5x12 5x12 5x12 4x15 4x16 4x16 4x16 3x19 3x21 3x21 3x21 2x27 2x32 2x32 2x32 1x54 "
        "1x64 1x64"
    ),
    128: (
        "128x1 82x1 54x1 40x1 32x1 26x1 22x1 19x1 64x2 64x2 64x2 64x2 64x2 59x2 51x2 45x2 40x2 35x2 31x2 "
        "28x2 25x2 42x3 42x3 42x3 42x3 42x3 42x3 42x3 41x3 37x3 33x3 30x3 27x3 32x4 32x4 32x4 32x4 32x4 "
        "32x4 32x4 32x4 29x4 26x4 24x4 25x5 25x5 25x5 25x5 25x5 25x5 25x5 22x5 21x6 21x6 21x6 21x6 21x6 "
        "21x6 18x7 18x7 18x7 18x7 18x7 16x8 16x8 16x8 16x8 16x8 14x9 14x9 14x9 12x10 12x10 12x10 11x11 "
        "11x11 11x11 10x12 10x12 9x13 9x14 9x14 8x16 8x16 8x16 7x18 7x18 6x21 6x21 5x25 5x25 4x29 4x32 "
        "4x32 3x42 3x42 2x64 2x64 1x128"
    ),
    256: (
        "166x1 82x1 54x1 40x1 32x1 128x2 128x2 128x2 128x2 117x2 96x2 81x2 69x2 59x2 51x2 45x2 85x3 85x3 "
        "85x3 85x3 85x3 85x3 83x3 73x3 64x3 57x3 51x3 45x3 64x4 64x4 64x4 64x4 64x4 64x4 61x4 55x4 49x4 "
        "44x4 51x5 51x5 51x5 51x5 51x5 51x5 47x5 42x5 42x6 42x6 42x6 42x6 42x6 42x6 38x6 36x7 36x7 36x7 "
        "36x7 36x7 32x8 32x8 32x8 32x8 32x8 28x9 28x9 28x9 28x9 25x10 25x10 25x10 23x11 23x11 21x12 21x12 "
        "21x12 19x13 18x14 18x14 17x15 17x15 16x16 15x17 14x18 13x19 13x19 12x21 11x23 11x23 10x25 9x28 "
        "8x31 8x32 7x36 6x42 5x51 4x60 3x74 3x85 1x166"
    ),
}


def detection_probability(s: float, bands: int, rows: int) -> float:
    """Probability that two documents of Jaccard ``s`` share at least one LSH band."""
    return float(1.0 - (1.0 - s ** rows) ** bands)


# --- shingles ---------------------------------------------------------------------------------
#
# Text is normalised and tokenised for a whole batch at once in Arrow's C++ kernels (utf8proc NFKC
# and lower case, an RE2 split), so the reference per-text functions below run the very same code
# on a one-element array: there is one definition of a token, not two that may drift apart.
#
# A word shingle's 64-bit hash is built from the xxh3-64 hashes of its tokens (see _combine), so
# each distinct token of a batch is hashed once in Python (Arrow's dictionary_encode finds them)
# and the n-gram hashes are combined with numpy; hashing every shingle's bytes in Python was 3x
# slower than all the rest of the signature work. :func:`shingle_hash` is the same function on
# one shingle's bytes: the ``hashfunc`` that makes datasketch give the same signatures.

_MASK = (1 << 64) - 1
_K0 = 0x9E3779B97F4A7C15
_K1 = 0xBF58476D1CE4E5B9


def _string_array(texts) -> pa.Array:
    """One Arrow array of a string array, a chunked one or a sequence of str."""
    if isinstance(texts, pa.ChunkedArray):
        return texts.combine_chunks() if texts.num_chunks else pa.array([], pa.string())
    if not isinstance(texts, pa.Array):
        return pa.array(list(texts), pa.string())
    return texts


def normalize_array(texts) -> pa.Array:
    """NFKC and lower case of a string array (or a sequence of str); nulls stay null."""
    texts = _string_array(texts)
    if len(texts) == 0:
        return texts
    if pc.all(pc.string_is_ascii(texts)).as_py() is not False:
        # NFKC leaves ASCII unchanged, and ASCII lower-casing is ~20x faster than the UTF-8 kernel.
        return pc.ascii_lower(texts)
    return pc.utf8_lower(nfkc(texts))


_WORD_BYTE = np.zeros(256, dtype=bool)
for _c in b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_":
    _WORD_BYTE[_c] = True


def _re2_tokens(norm: pa.Array) -> tuple[pa.Array, np.ndarray]:
    lists = pc.split_pattern_regex(norm, pattern=SEPARATOR_RE2)
    flat = pc.list_flatten(lists)
    parents = pc.list_parent_indices(lists)
    nonempty = pc.greater(pc.binary_length(flat), 0)
    flat = flat.filter(nonempty)
    parents = np.asarray(parents.filter(nonempty), dtype=np.int64)
    return flat, np.bincount(parents, minlength=len(norm)).astype(np.int64)


def _ascii_tokens(norm: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """The RE2 split's tokens for ASCII-only texts, found with a byte lookup table in numpy
    (4-5x faster than the regex; on ASCII, letters/marks/digits/_ are exactly [0-9A-Za-z_])."""
    n = len(norm)
    bufs = norm.buffers()
    off_type = np.int64 if pa.types.is_large_string(norm.type) else np.int32
    offsets = np.frombuffer(bufs[1], dtype=off_type)[norm.offset: norm.offset + n + 1].astype(np.int64)
    base = int(offsets[0])
    offsets -= base
    data = np.frombuffer(bufs[2], dtype=np.uint8)[base: base + int(offsets[-1])] if bufs[2] is not None \
        else np.zeros(0, np.uint8)
    w = _WORD_BYTE[data]
    starts = w.copy()
    starts[1:] &= ~w[:-1]
    doc_first = offsets[:-1][offsets[:-1] < len(data)]
    starts[doc_first] = w[doc_first]  # a token never runs across two texts
    ends = w.copy()
    ends[:-1] &= ~w[1:]
    doc_last = offsets[1:][offsets[1:] > offsets[:-1]] - 1
    ends[doc_last] = w[doc_last]
    start_pos = np.flatnonzero(starts)
    lens = np.flatnonzero(ends) - start_pos + 1  # (a per-byte cumsum here was 5x slower)
    tok_off = np.zeros(len(start_pos) + 1, dtype=np.int32)
    np.cumsum(lens, out=tok_off[1:])
    flat = pa.StringArray.from_buffers(len(start_pos), pa.py_buffer(tok_off.tobytes()),
                                       pa.py_buffer(data[w].tobytes()))
    counts = np.bincount(np.searchsorted(offsets, start_pos, side="right") - 1, minlength=n).astype(np.int64)
    return flat, counts


def _tokens(norm: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """All non-empty tokens of a normalised batch (flat, in order) and the token count per text.

    ASCII texts take the numpy path, the others the RE2 split; both give the same tokens.
    """
    n = len(norm)
    norm = pc.fill_null(norm, "")
    asc = np.asarray(pc.string_is_ascii(norm), dtype=bool)
    if asc.all():
        return _ascii_tokens(norm)
    if not asc.any():
        return _re2_tokens(norm)
    ia, ib = np.flatnonzero(asc), np.flatnonzero(~asc)
    fa, ca = _ascii_tokens(norm.take(pa.array(ia)))
    fb, cb = _re2_tokens(norm.take(pa.array(ib)))
    if fa.type != fb.type:
        fa = fa.cast(fb.type)
    idx, counts = _interleave(n, ia, len(fa), ca, ib, cb)
    return pa.concat_arrays([fa, fb]).take(pa.array(idx)), counts


def _interleave(n: int, ia: np.ndarray, len_a: int, ca: np.ndarray, ib: np.ndarray,
                cb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Put per-document runs of two flat arrays back in document order.

    Documents ``ia`` own runs of ``ca`` items in flat array A (``len_a`` items), documents ``ib``
    runs of ``cb`` items in flat array B. Returns the positions, in A followed by B, that list
    every document's items in document order, and the item count of every document.
    """
    counts = np.zeros(n, np.int64)
    counts[ia], counts[ib] = ca, cb
    src = np.zeros(n, np.int64)
    src[ia] = np.cumsum(ca) - ca
    src[ib] = len_a + np.cumsum(cb) - cb
    total = int(counts.sum())
    idx = np.repeat(src, counts) + (np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts))
    return idx, counts


def _hash_strings(arr: pa.Array) -> np.ndarray:
    """xxh3-64 of the UTF-8 bytes of every string (hashes the Arrow buffer in place)."""
    n = len(arr)
    if n == 0:
        return np.zeros(0, np.uint64)
    bufs = arr.buffers()
    off_type = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    offsets = np.frombuffer(bufs[1], dtype=off_type)[arr.offset: arr.offset + n + 1].tolist()
    mv = memoryview(bufs[2]) if bufs[2] is not None else memoryview(b"")
    h = xxhash.xxh3_64_intdigest
    return np.array([h(mv[a:b]) for a, b in zip(offsets[:-1], offsets[1:])], dtype=np.uint64)


def _token_hashes(flat: pa.Array) -> np.ndarray:
    """xxh3-64 of every token; each distinct token is hashed once."""
    if len(flat) == 0:
        return np.zeros(0, np.uint64)
    enc = pc.dictionary_encode(flat)
    return _hash_strings(enc.dictionary)[np.asarray(enc.indices)]


def _combine(token_hashes: Sequence[int]) -> int:
    """The 64-bit hash of a word shingle from its tokens' xxh3-64 hashes (scalar reference)."""
    h = _K0
    for t in token_hashes:
        h = ((h ^ t) * _K1) & _MASK
        h ^= h >> 31
    h ^= len(token_hashes)
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _MASK
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _MASK
    return h ^ (h >> 33)


def shingle_hash(shingle: bytes, cfg: "MinHashConfig") -> int:
    """64-bit hash of one shingle's UTF-8 bytes, as used by the signatures.

    Word shingles (tokens joined by single spaces; tokens never contain spaces) hash to
    ``_combine(xxh3_64(token) for token)``; char shingles to ``xxh3_64(bytes)``.
    """
    if cfg.shingle == "word":
        return _combine([xxhash.xxh3_64_intdigest(t) for t in shingle.split(b" ")])
    return xxhash.xxh3_64_intdigest(shingle)


def _word_shingle_hashes(flat: pa.Array, counts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    tok = _token_hashes(flat)
    nsh = np.where(counts >= n, counts - n + 1, np.minimum(counts, 1)).astype(np.int64)
    total = int(nsh.sum())
    if total == 0:
        return np.zeros(0, np.uint64), nsh
    off = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=off[1:])
    first = np.repeat(off[:-1], nsh)
    within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(nsh) - nsh, nsh)
    start = first + within
    klen = np.minimum(np.repeat(counts, nsh), n).astype(np.uint64)
    h = np.full(total, np.uint64(_K0), dtype=np.uint64)
    short = klen < np.uint64(n)
    with np.errstate(over="ignore"):
        for j in range(n):
            if short.any():
                m = ~short | (klen > np.uint64(j))
                idx = np.flatnonzero(m)
                v = (h[idx] ^ tok[start[idx] + j]) * np.uint64(_K1)
                h[idx] = v ^ (v >> np.uint64(31))
            else:
                v = (h ^ tok[start + j]) * np.uint64(_K1)
                h = v ^ (v >> np.uint64(31))
        h ^= klen
        h = _fmix64(h)
    return h, nsh


def _char_shingle_list(s: str, n: int) -> list[str]:
    s = _WS_RE.sub(" ", s).strip()
    if len(s) < n:
        return [s] if s else []
    return [s[i:i + n] for i in range(len(s) - n + 1)]


# Code-point classes for the C kernel's Unicode path (the CP_* constants of _speedups.c), filled
# per process for the code points met so far: each is classified by Arrow's own kernels, so the C
# path gives exactly what NFKC + utf8_lower + the RE2 split give.
_CP_UNSAFE, _CP_SEP, _CP_WORD, _CP_MAP = 1, 2, 3, 4
_CP: dict = {}  # "class": uint8 per code point, "lower": uint32 per code point, "map": uint32 table
# Hangul conjoining jamo compose with their neighbours under NFKC without being marks; variation
# selectors are marks that never compose (no decomposition holds them) and follow many emoji.
_JAMO = ((0x1100, 0x11FF), (0xA960, 0xA97F), (0xD7B0, 0xD7FF))
_VS = ((0xFE00, 0xFE0F), (0xE0100, 0xE01EF))


def _inert(ch: str) -> bool:
    """A code point that NFKC never combines with a neighbour (it composes nothing and is not
    reordered): not a mark (except variation selectors), not a conjoining jamo, assigned."""
    import unicodedata

    c = ord(ch)
    cat = unicodedata.category(ch)
    if any(a <= c <= b for a, b in _VS):
        return True
    return cat[0] != "M" and cat not in ("Cn", "Cs") and not unicodedata.combining(ch) and \
        not any(a <= c <= b for a, b in _JAMO)


def _classify(cps: np.ndarray) -> None:
    """Fill the class and lower case of code points ``cps`` (uint32) from Arrow's kernels.

    A code point is safe (CP_SEP/CP_WORD) when NFKC leaves it unchanged, it is inert (see _inert)
    and its lower case is one code point: a text of ASCII and safe code points is NFKC-normal, so
    its tokens are its lower-cased runs of token characters. It is CP_MAP when NFKC replaces it by
    inert code points (``…`` by ``...``, ``²`` by ``2``): that replacement does not depend on
    its neighbours, and the C kernel feeds the lower-cased replacement to the tokenizer.
    """
    cls, lower = _CP["class"], _CP["lower"]
    chars = [chr(c) if not 0xD800 <= c <= 0xDFFF else "" for c in cps.tolist()]
    arr = pa.array(chars, pa.string())
    nfkc_arr = nfkc(arr)
    stable = np.asarray(pc.equal(nfkc_arr, arr), dtype=bool)
    low = pc.utf8_lower(nfkc_arr).to_pylist()
    pieces = sorted({x for s in low for x in s})
    parr = pa.array(pieces, pa.string())
    is_word = dict(zip(pieces, np.asarray(pc.equal(pc.list_value_length(
        pc.split_pattern_regex(parr, pattern=SEPARATOR_RE2)), 1), dtype=bool).tolist()))
    table = list(_CP["map"].tolist())
    for k, (c, ch) in enumerate(zip(cps.tolist(), chars)):
        cls[c] = _CP_UNSAFE
        if not ch or not _inert(ch):
            continue
        out, src = low[k], nfkc_arr[k].as_py()
        if stable[k] and len(out) == 1:
            cls[c] = _CP_WORD if is_word[out] else _CP_SEP
            lower[c] = ord(out)
        elif not stable[k] and out and len(out) <= 30 and len(out) == len(src) and all(map(_inert, src)):
            cls[c] = _CP_MAP
            lower[c] = len(table)
            table += [len(out)] + [ord(x) | (0x80000000 if is_word[x] else 0) for x in out]
    _CP["map"] = np.asarray(table, np.uint32)


def _cp_tables(buf, offsets: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not _CP:
        _CP.update({"class": np.zeros(0x110000, np.uint8), "lower": np.zeros(0x110000, np.uint32),
                    "map": np.zeros(0, np.uint32)})
    new = np.frombuffer(kernels.speedups.unknown_codepoints(buf, offsets.tobytes(), n, _CP["class"]), np.uint32)
    if len(new):
        _classify(new)
    return _CP["class"], _CP["lower"], _CP["map"]


def _c_word_shingle_hashes(texts: pa.Array, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """Word-shingle hashes from the C kernel for ASCII texts and texts NFKC leaves unchanged, the
    Arrow path for the others."""
    arr, buf, offsets = text_buffers(pc.fill_null(texts, "") if texts.null_count else texts)
    n = len(arr)
    raw, cnt, flags = kernels.speedups.word_shingles(buf, offsets.tobytes(), n, ngram, *_cp_tables(buf, offsets, n))
    h = np.frombuffer(raw, dtype=np.uint64)
    counts = np.frombuffer(cnt, dtype=np.int64)
    other = np.frombuffer(flags, dtype=np.uint8).astype(bool)
    if not other.any():
        return h, counts
    ib = np.flatnonzero(other)
    flat, cb = _tokens(normalize_array(arr.take(pa.array(ib))))
    hb, cb = _word_shingle_hashes(flat, cb, ngram)
    # splice each Arrow-path document's run into the C output (which holds none for it): a few
    # slices per such document, not an index over every shingle of the batch
    at = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=at[1:])
    hb_at = np.zeros(len(ib) + 1, np.int64)
    np.cumsum(cb, out=hb_at[1:])
    cut = at[ib].tolist()
    parts = []
    prev = 0
    for k, c in enumerate(cut):
        parts += [h[prev:c], hb[hb_at[k]:hb_at[k + 1]]]
        prev = c
    parts.append(h[prev:])
    counts = counts.copy()
    counts[ib] = cb
    return np.concatenate(parts), counts


def batch_shingle_hashes(texts, cfg: MinHashConfig) -> tuple[np.ndarray, np.ndarray]:
    """Shingle hashes of many texts: (all hashes concatenated in text order, count per text).

    ``texts`` is a pyarrow string array or a sequence of str (None = no text). With the C
    extension, word shingles of ASCII texts come from one C pass (lower case, tokens, xxh3-64,
    n-gram combination: the same values as the Arrow + numpy path, which tests compare).
    """
    if cfg.shingle == "word" and kernels.speedups is not None:
        texts = _string_array(texts)
        if len(texts) == 0:
            return np.zeros(0, np.uint64), np.zeros(0, np.int64)
        return _c_word_shingle_hashes(texts, cfg.ngram)
    if cfg.shingle == "char":
        return char_shingle_hashes(texts, cfg.ngram)
    norm = normalize_array(texts)
    if len(norm) == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    flat, counts = _tokens(norm)
    return _word_shingle_hashes(flat, counts, cfg.ngram)


def char_shingle_hashes(texts, k: int) -> tuple[np.ndarray, np.ndarray]:
    """xxh3-64 hashes of the character ``k``-grams of many texts (see :func:`shingles`, ``char``):
    (all hashes concatenated in text order, count per text). One C pass per batch after Arrow's
    NFKC and lower case; the Python fallback hashes :func:`_char_shingle_list` (tests compare)."""
    norm = normalize_array(texts)
    if len(norm) == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    if kernels.speedups is not None:
        _, buf, offsets = text_buffers(pc.fill_null(norm, "") if norm.null_count else norm)
        raw, cnt = kernels.speedups.char_shingles(buf, offsets.tobytes(), len(norm), k)
        return np.frombuffer(raw, np.uint64), np.frombuffer(cnt, np.int64)
    h = xxhash.xxh3_64_intdigest
    out: list[int] = []
    counts = np.zeros(len(norm), dtype=np.int64)
    for i, s in enumerate(norm.to_pylist()):
        if s:
            sh = _char_shingle_list(s, k)
            out.extend([h(x.encode("utf-8")) for x in sh])
            counts[i] = len(sh)
    return np.array(out, dtype=np.uint64), counts


def shingles(text: str, cfg: MinHashConfig) -> list[str]:
    """The shingle strings of one text (the reference definition; signatures hash exactly these).

    Word shingles are ``ngram`` consecutive tokens joined by one space, where a token is a maximal
    run of letters, marks, digits and ``_`` of any script (so Devanagari vowel signs and Arabic
    diacritics stay inside their word) after NFKC and lower case. Char shingles are ``ngram``
    consecutive characters after collapsing whitespace runs to one space. A text shorter than one
    n-gram gives one shingle (all of it); a text without any token gives none.
    """
    norm = normalize_array([text])
    n = cfg.ngram
    if cfg.shingle == "word":
        flat, _ = _tokens(norm)
        toks = flat.to_pylist()
        if len(toks) < n:
            return [" ".join(toks)] if toks else []
        return [" ".join(g) for g in zip(*[toks[i:] for i in range(n)])]
    s = norm[0].as_py()
    return _char_shingle_list(s, n) if s else []


def shingle_hashes(text: str, cfg: MinHashConfig) -> np.ndarray:
    """64-bit hash of each shingle of ``text`` (uint64, in text order; see :func:`shingle_hash`)."""
    return batch_shingle_hashes([text], cfg)[0]


# --- permutations and signatures --------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def permutations(num_perm: int, seed: int, scheme: str = _S.FuzzyConfig.scheme) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) permutation parameters, drawn exactly as datasketch draws them for ``scheme``."""
    gen = np.random.RandomState(seed)
    if scheme == "legacy":
        ab = np.array([(gen.randint(1, _MERSENNE, dtype=np.uint64), gen.randint(0, _MERSENNE, dtype=np.uint64))
                       for _ in range(num_perm)], dtype=np.uint64).T
        return ab[0].copy(), ab[1].copy()
    if scheme == "affine64":
        a = gen.randint(0, 1 << 63, num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        b = gen.randint(0, 1 << 64, num_perm, dtype=np.uint64)
        return a, b
    raise ConfigError(f"unknown scheme {scheme!r}")


def _fmix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def empty_value(scheme: str) -> np.uint64:
    """The value of every slot of an empty document's signature (datasketch's initial state)."""
    return _MAX32 if scheme == "legacy" else _MAX64


def _permute(hv: np.ndarray, a: np.ndarray, b: np.ndarray, scheme: str, buf: np.ndarray) -> np.ndarray:
    """Permuted values of shingle hashes ``hv`` (m,) into ``buf`` (m, num_perm)."""
    with np.errstate(over="ignore"):
        if scheme == "legacy":
            np.multiply(hv[:, None], a[None, :], out=buf)
            np.add(buf, b[None, :], out=buf)
            # x mod (2**61 - 1) for any uint64 x: (x & p) + (x >> 61) is below 2p, subtract once.
            hi = buf >> np.uint64(61)
            np.bitwise_and(buf, _MERSENNE, out=buf)
            np.add(buf, hi, out=buf)
            np.subtract(buf, _MERSENNE, out=buf, where=buf >= _MERSENNE)
            np.bitwise_and(buf, _MAX32, out=buf)
        else:
            np.multiply(_fmix64(hv)[:, None], a[None, :], out=buf)
            np.add(buf, b[None, :], out=buf)
    return buf


def signatures_from_hashes(hashes: np.ndarray, counts: np.ndarray, cfg: MinHashConfig,
                           num: int | None = None) -> np.ndarray:
    """Signatures (uint64, (len(counts), num_perm)) from concatenated shingle hashes.

    A document without shingles gets datasketch's empty signature (every slot at the maximum).
    The C kernel when :mod:`dedupkit.kernels` has it, else numpy (the same values).
    ``num``: only the first ``num`` values of each signature (those LSH bands use).
    """
    a, b = permutations(cfg.num_perm, cfg.seed, cfg.scheme)
    n, p = len(counts), cfg.num_perm
    if num is not None and num < p:
        a, b, p = a[:num], b[:num], num
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    if kernels.speedups is not None and n:
        # The C kernel does the same uint64 arithmetic in one pass per document (no (m, p) buffer).
        raw = kernels.speedups.minhash(np.ascontiguousarray(hashes, dtype=np.uint64), offsets, n, a, b, p,
                                       cfg.scheme == "legacy")
        return np.frombuffer(raw, dtype=np.uint64).reshape(n, p)
    sig = np.full((n, p), empty_value(cfg.scheme), dtype=np.uint64)
    if n == 0 or len(hashes) == 0:
        return sig
    buf = np.empty((_BLOCK, p), dtype=np.uint64)
    d = 0
    while d < n:
        if counts[d] == 0:
            d += 1
            continue
        start = offsets[d]
        if counts[d] >= _BLOCK:
            # One long document: running minimum over blocks of its shingles.
            end = offsets[d + 1]
            for s in range(start, end, _BLOCK):
                e = min(s + _BLOCK, end)
                blk = _permute(hashes[s:e], a, b, cfg.scheme, buf[: e - s])
                np.minimum(sig[d], blk.min(axis=0), out=sig[d])
            d += 1
            continue
        # Whole documents whose shingles fit in one block.
        stop = int(np.searchsorted(offsets, start + _BLOCK, side="right")) - 1
        stop = max(stop, d + 1)
        end = offsets[stop]
        blk = _permute(hashes[start:end], a, b, cfg.scheme, buf[: end - start])
        docs = np.arange(d, stop)
        nonempty = docs[counts[d:stop] > 0]
        sig[nonempty] = np.minimum.reduceat(blk, offsets[nonempty] - start, axis=0)
        d = stop
    return sig


def signatures(texts: Sequence[str], cfg: MinHashConfig) -> np.ndarray:
    """MinHash signatures of texts (a sequence of str or a pyarrow string array).

    Returns:
        uint64 array of shape ``(len(texts), num_perm)``; row ``i`` equals
        ``datasketch.MinHash(num_perm, seed, hashfunc=lambda b: shingle_hash(b, cfg), scheme=...)``
        after ``update_batch`` with the UTF-8 bytes of ``shingles(texts[i])``.
    """
    hashes, counts = batch_shingle_hashes(texts, cfg)
    return signatures_from_hashes(hashes, counts, cfg)


_MIX1 = np.uint64(0x9E3779B97F4A7C15)
_MIX2 = np.uint64(0xBF58476D1CE4E5B9)


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit key per band: a hash of the band's ``rows`` signature values.

    Two documents share a key (up to a 2**-64 chance) exactly when they agree on every value of
    the band, which is when datasketch's MinHashLSH puts them in the same bucket.

    Returns:
        uint64 array of shape ``(n, bands)``.
    """
    sigs = np.asarray(sigs, dtype=np.uint64)
    n = len(sigs)
    if bands * rows > sigs.shape[1] if sigs.ndim == 2 else True:
        raise ConfigError(f"bands * rows = {bands * rows} exceeds the signature length")
    cube = sigs[:, : bands * rows].reshape(n, bands, rows)
    key = np.full((n, bands), np.uint64(rows), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for c in range(rows):
            key ^= cube[:, :, c]
            key *= _MIX1
            key ^= key >> np.uint64(31)
            key *= _MIX2
            key ^= key >> np.uint64(29)
    return key
