"""Exact deduplication: xxh3-128 of the (optionally normalized) text, grouped by sorting."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import xxhash

from dedupkit import kernels
from dedupkit.io.read import Batch
from dedupkit.normalize import DEFAULT, normalize, normalize_split, parse_steps, text_buffers
from dedupkit.policy import KeepPolicy, choose_representatives
from dedupkit.stages.base import Decisions, Mapper, Stage


@dataclass(frozen=True)
class ExactConfig:
    """Settings of the exact stage.

    Attributes:
        normalize: normalization steps before hashing (see :mod:`dedupkit.normalize`).
        policy: which copy survives.
    """

    normalize: tuple[str, ...] = DEFAULT
    policy: KeepPolicy = KeepPolicy()

    def __post_init__(self) -> None:
        object.__setattr__(self, "normalize", parse_steps(self.normalize))


def _c_hashes(arr, mode: int) -> tuple[np.ndarray, np.ndarray]:
    """The C kernel's (n, 2) hashes and per-row non-ASCII flags of a string array (no nulls)."""
    arr, buf, offsets = text_buffers(arr)
    n = len(arr)
    raw, flags = kernels.speedups.hash_texts(buf, offsets.tobytes(), n, mode)
    return np.frombuffer(raw, dtype=np.uint64).reshape(n, 2).copy(), np.frombuffer(flags, np.uint8).astype(bool)


def hash128(arr) -> np.ndarray:
    """xxh3-128 of every string of an Arrow string array, as an (n, 2) uint64 array (hi, lo).

    With the C extension, one call hashes the whole batch. Without it, the UTF-8 bytes are hashed
    in place through a memoryview of the Arrow buffer: no Python str per document, which makes
    that loop about 3x faster than hashing ``to_pylist()`` strings. Both give the same values.
    """
    n = len(arr)
    if n == 0:
        return np.zeros((0, 2), np.uint64)
    if kernels.speedups is not None:
        return _c_hashes(arr, 0)[0]
    bufs = arr.buffers()
    dtype = np.int64 if pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type) else np.int32
    offsets = np.frombuffer(bufs[1], dtype=dtype)[arr.offset: arr.offset + n + 1].tolist()
    mv = memoryview(bufs[2]) if bufs[2] is not None else memoryview(b"")
    digest = xxhash.xxh3_128_digest
    raw = b"".join([digest(mv[a:b]) for a, b in zip(offsets[:-1], offsets[1:])])
    # digest() is big-endian: the first 8 bytes are the high word.
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(n, 2)


# Normalizations the C kernel does while hashing: each document is normalized into a buffer that
# stays in cache and hashed from there.
_C_MODES = {("whitespace",): 1, ("lower", "whitespace"): 2}


def normalized_hash128(text, steps: tuple[str, ...]) -> np.ndarray:
    """:func:`hash128` of the texts after the normalization ``steps`` (shared with the index)."""
    if not steps or len(text) == 0:
        return hash128(text)
    mode = _C_MODES.get(tuple(steps))
    if kernels.speedups is not None and mode is not None:
        h, nonascii = _c_hashes(text, mode)
        if mode == 2 and nonascii.any():  # these rows need Unicode (not only ASCII) lower-casing
            idx = np.flatnonzero(nonascii)
            h[idx] = hash128(normalize(text.take(pa.array(idx)), steps))
        return h
    out, idx, fixed = normalize_split(text, steps)
    h = hash128(out)
    if idx is not None:  # rows that needed Unicode lower-casing after the fast pass
        h[idx] = hash128(fixed)
    return h


class ExactMapper(Mapper):
    # decoding a Parquet row costs about twice normalizing and hashing it (dedupkit.scan._cuts)
    decode_weight = 2.0
    # Rows per read batch at most (dedupkit.scan.run_scan_task; a smaller --batch-size wins): the
    # decoded texts, their normalized copy and the decoder's pages of one batch stay within the
    # caches, and a process touches less new memory (each page of it faulted in and zeroed by the
    # kernel). 8,192 rows of c100k are ~30 MB of text: the scan cost 0.82 CPU s in a new process,
    # 0.71 with 2,048; with --workers 2, each worker pays its first touch, and the run's system
    # time fell from 0.36-0.76 to 0.19-0.26 s (whole run 0.98 -> 0.80 s, --workers 1 1.01 -> 0.93).
    batch_rows = 2048

    def __init__(self, steps: tuple[str, ...]):
        self.steps = steps

    def map_batch(self, batch: Batch) -> dict[str, np.ndarray]:
        return {"hash": normalized_hash128(batch.text, self.steps)}

    def empty(self) -> dict[str, np.ndarray]:
        return {"hash": np.zeros((0, 2), np.uint64)}


def group_labels(keys: np.ndarray) -> np.ndarray:
    """Label rows of equal keys ((n, k) uint64) with a shared int64 label; -1 for unique rows.

    Sorts by the first word only (one argsort of uint64, over 10x faster than a lexsort over
    every word), then checks all words of neighbours. Rows whose first words collide while other
    words differ could be split by the sort; when that happens (never, in practice, for 128-bit
    hashes) the full lexsort decides instead.
    """
    n = len(keys)
    labels = np.full(n, -1, dtype=np.int64)
    if n < 2:
        return labels
    order = np.argsort(keys[:, 0])  # equal keys share a label whatever their order: no need for stable
    first = keys[order, 0]
    same_first = first[1:] == first[:-1]
    same_as_prev = same_first.copy()
    for w in range(1, keys.shape[1]):
        col = keys[order, w]
        same_as_prev &= col[1:] == col[:-1]
    if (same_first & ~same_as_prev).any():
        order = np.lexsort(keys.T[::-1])
        sk = keys[order]
        same_as_prev = np.all(sk[1:] == sk[:-1], axis=1)
    starts = np.r_[True, ~same_as_prev]
    group = np.cumsum(starts) - 1
    sizes = np.bincount(group)
    dup = sizes[group] > 1
    labels[order[dup]] = group[dup]
    return labels


class ExactStage(Stage):
    """Drop documents whose normalized text has the same xxh3-128 hash as a kept one.

    Example:
        >>> from dedupkit.io.read import ReadSpec
        >>> from dedupkit.runner import run_stage
        >>> from dedupkit.stages.exact import ExactConfig, ExactStage
        >>> stage = ExactStage(ExactConfig(normalize=("nfkc", "whitespace")))  # case kept: d1, d2 differ
        >>> run_stage(stage, [str(data)], tmp / "exact", ReadSpec()).summary["counts"]["dropped"]
        0
    """

    name = "exact"
    uses_engine = False  # grouping 128-bit hashes is one sort in the driver

    def __init__(self, config: ExactConfig = ExactConfig()):
        self.config = config

    def mapper(self) -> Mapper:
        return ExactMapper(self.config.normalize)

    def read_columns(self) -> tuple[str, ...]:
        return (self.config.policy.keep_by,) if self.config.policy.keep_by else ()

    def key(self) -> str:
        return f"exact:xxh3_128:{','.join(self.config.normalize)}"

    def config_dict(self) -> dict:
        return {"normalize": list(self.config.normalize), "hash": "xxh3_128", **asdict(self.config.policy)}

    def identify(self, corpus, workdir: str) -> Decisions:
        hashes = corpus.feature("hash").reshape(-1, 2).astype(np.uint64, copy=False)
        labels = group_labels(hashes)
        pol = self.config.policy
        keys = pol.priority(len(corpus), corpus.lengths, corpus.extra.get(pol.keep_by) if pol.keep_by else None)
        rep = choose_representatives(labels, keys)
        score = np.where(labels >= 0, 1.0, np.nan).astype(np.float32)
        return Decisions(representative=rep, labels=labels, score=score)
