"""MinHash signatures and LSH banding, computed for whole batches with numpy.

The signatures are *the same numbers* that :class:`datasketch.MinHash` gives for the same shingles,
seed and hash function (a 64-bit xxh3 of each shingle's UTF-8 bytes); only the loop is different:
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
import unicodedata
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import xxhash

from dedupkit.errors import ConfigError

SHINGLES = ("word", "char")
SCHEMES = ("affine64", "legacy")

_MERSENNE = np.uint64((1 << 61) - 1)
_MAX32 = np.uint64((1 << 32) - 1)
_MAX64 = np.uint64((1 << 64) - 1)
# Unicode-aware word tokens: letters, digits and underscore of any script (Latin, Cyrillic,
# Greek, Arabic, Devanagari...). Scripts written without spaces (Chinese, Japanese, Thai) come
# out as one token per run; use --shingle char for them.
TOKEN_RE = re.compile(r"\w+")
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

    num_perm: int = 128
    seed: int = 1
    shingle: str = "word"
    ngram: int = 5
    threshold: float = 0.65
    bands: int | None = None
    rows: int | None = None
    scheme: str = "affine64"

    def __post_init__(self) -> None:
        if not isinstance(self.num_perm, int) or not 1 <= self.num_perm <= 4096:
            raise ConfigError(f"num_perm must be an integer from 1 to 4096, got {self.num_perm!r}")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ConfigError(f"seed must be an integer from 0 to 2**32-1, got {self.seed!r}")
        if self.shingle not in SHINGLES:
            raise ConfigError(f"shingle must be word or char, got {self.shingle!r}")
        if not isinstance(self.ngram, int) or not 1 <= self.ngram <= 64:
            raise ConfigError(f"ngram must be an integer from 1 to 64, got {self.ngram!r}")
        if not 0.0 < float(self.threshold) <= 1.0:
            raise ConfigError(f"threshold must be in (0, 1], got {self.threshold!r}")
        if self.scheme not in SCHEMES:
            raise ConfigError(f"scheme must be one of {', '.join(SCHEMES)}, got {self.scheme!r}")
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


# --- LSH parameters (datasketch.lsh._optimal_param, same integrals, same tie-breaking) ---------

def _fp(threshold: float, b: int, r: int) -> float:
    from scipy.integrate import quad

    return quad(lambda s: 1 - (1 - s ** float(r)) ** float(b), 0.0, threshold)[0]


def _fn(threshold: float, b: int, r: int) -> float:
    from scipy.integrate import quad

    return quad(lambda s: 1 - (1 - (1 - s ** float(r)) ** float(b)), threshold, 1.0)[0]


@functools.lru_cache(maxsize=64)
def optimal_params(threshold: float, num_perm: int, fp_weight: float = 0.5,
                   fn_weight: float = 0.5) -> tuple[int, int]:
    """The (bands, rows) that minimise the weighted false-positive + false-negative area.

    This is datasketch's rule (``MinHashLSH(threshold, num_perm)`` picks the same pair): the
    probability that two documents of Jaccard ``s`` share at least one band is
    ``1 - (1 - s**r)**b``; the false-positive area integrates it over ``[0, threshold]``, the
    false-negative area integrates its complement over ``[threshold, 1]``.
    """
    best, opt = float("inf"), (0, 0)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            err = _fp(threshold, b, r) * fp_weight + _fn(threshold, b, r) * fn_weight
            if err < best:
                best, opt = err, (b, r)
    return opt


def detection_probability(s: float, bands: int, rows: int) -> float:
    """Probability that two documents of Jaccard ``s`` share at least one LSH band."""
    return float(1.0 - (1.0 - s ** rows) ** bands)


# --- shingles ---------------------------------------------------------------------------------

def normalize_text(text: str) -> str:
    """NFKC and lower case: the text shingles are cut from."""
    return unicodedata.normalize("NFKC", text).lower()


def shingles(text: str, cfg: MinHashConfig) -> list[str]:
    """The shingle strings of one text (the reference definition; ``shingle_hashes`` hashes them).

    Word shingles are ``ngram`` consecutive ``\\w+`` tokens joined by one space; char shingles are
    ``ngram`` consecutive characters after collapsing whitespace runs to one space. A text shorter
    than one n-gram gives one shingle (all of it); an empty text (no token) gives none.
    """
    s = normalize_text(text)
    n = cfg.ngram
    if cfg.shingle == "word":
        toks = TOKEN_RE.findall(s)
        if len(toks) < n:
            return [" ".join(toks)] if toks else []
        return [" ".join(g) for g in zip(*[toks[i:] for i in range(n)])]
    s = _WS_RE.sub(" ", s).strip()
    if len(s) < n:
        return [s] if s else []
    return [s[i:i + n] for i in range(len(s) - n + 1)]


def shingle_hashes(text: str, cfg: MinHashConfig) -> np.ndarray:
    """64-bit xxh3 of the UTF-8 bytes of each shingle of ``text`` (uint64, in text order)."""
    h = xxhash.xxh3_64_intdigest
    sh = shingles(text, cfg)
    return np.fromiter((h(x.encode("utf-8")) for x in sh), dtype=np.uint64, count=len(sh))


def batch_shingle_hashes(texts, cfg: MinHashConfig) -> tuple[np.ndarray, np.ndarray]:
    """Shingle hashes of many texts: (all hashes concatenated, shingles per text as int64).

    Same values as :func:`shingle_hashes` per text; the word path hashes slices of one encoded
    buffer per document instead of building a bytes object per shingle.
    """
    if not isinstance(texts, list):
        texts = texts.to_pylist() if hasattr(texts, "to_pylist") else list(texts)
    h = xxhash.xxh3_64_intdigest
    n = cfg.ngram
    out: list[int] = []
    counts = np.zeros(len(texts), dtype=np.int64)
    word = cfg.shingle == "word"
    for k, text in enumerate(texts):
        if text is None:
            continue
        s = normalize_text(text)
        before = len(out)
        if word:
            toks = TOKEN_RE.findall(s)
            if not toks:
                continue
            joined = " ".join(toks)
            if len(toks) < n:
                out.append(h(joined.encode("utf-8")))
            else:
                buf = joined.encode("utf-8")
                if len(buf) == len(joined):  # ASCII: character offsets are byte offsets
                    lens = [len(t) for t in toks]
                else:
                    lens = [len(t.encode("utf-8")) for t in toks]
                starts = np.zeros(len(toks), dtype=np.int64)
                np.cumsum(np.asarray(lens[:-1], dtype=np.int64) + 1, out=starts[1:])
                ends = starts + np.asarray(lens, dtype=np.int64)
                mv = memoryview(buf)
                out.extend([h(mv[a:b]) for a, b in zip(starts[: len(toks) - n + 1].tolist(),
                                                         ends[n - 1:].tolist())])
        else:
            s = _WS_RE.sub(" ", s).strip()
            if not s:
                continue
            if len(s) < n:
                out.append(h(s.encode("utf-8")))
            else:
                out.extend([h(s[i:i + n].encode("utf-8")) for i in range(len(s) - n + 1)])
        counts[k] = len(out) - before
    return np.array(out, dtype=np.uint64), counts


# --- permutations and signatures --------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def permutations(num_perm: int, seed: int, scheme: str = "affine64") -> tuple[np.ndarray, np.ndarray]:
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


def signatures_from_hashes(hashes: np.ndarray, counts: np.ndarray, cfg: MinHashConfig) -> np.ndarray:
    """Signatures (uint64, (len(counts), num_perm)) from concatenated shingle hashes.

    A document without shingles gets datasketch's empty signature (every slot at the maximum).
    """
    a, b = permutations(cfg.num_perm, cfg.seed, cfg.scheme)
    n, p = len(counts), cfg.num_perm
    sig = np.full((n, p), empty_value(cfg.scheme), dtype=np.uint64)
    if n == 0 or len(hashes) == 0:
        return sig
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
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
        ``datasketch.MinHash(num_perm, seed, hashfunc=xxh3_64_intdigest, scheme=...)`` after
        ``update_batch`` with the UTF-8 bytes of ``shingles(texts[i])``.
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
