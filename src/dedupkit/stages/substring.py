"""Substring dedup: cut repeated passages out of documents, and measure how much text repeats.

``unit="span"`` (ExactSubstr, Lee et al. 2022, done by hashing instead of a suffix array):

1. *hash* (one task per scan task, on the engine): every document is split into tokens (see
   :func:`tokenize`); every window of ``min_tokens`` consecutive tokens is hashed with xxh3-128 over
   its exact bytes (from its first token's first byte to its last token's last byte). Records
   ``(hash, document, byte start)`` go to ``partitions`` files by the hash's top bits, so a partition
   holds every occurrence of its windows, whichever part of the corpus they come from.
2. *group* (one task per partition): a sort finds the windows that occur twice or more; each
   occurrence gets the group size and a reference (the first occurrence in keep-policy order; the
   first occurrence itself refers to the second).
3. *cut* (one task per scan task): the text is read again, windows are mapped back to byte ranges,
   and the ranges of every repeated window except the first occurrence (``keep="none"``: every
   occurrence) are merged into maximal spans.

Why this is exact for token-based lengths: a substring of at least ``k`` whole tokens that occurs
twice contains ``k``-token windows that occur twice, and the union of the repeated windows is the
set of bytes inside repeated ``k``-token passages. Two windows are taken as equal when their
128-bit hashes are equal: a false match needs an xxh3-128 collision (about 1e-20 for 1e9 windows);
this, and passages that do not start on a token, are the limits (see docs/substring.md).

``unit="line"`` / ``"paragraph"``: each line (paragraph) is normalised (whitespace collapsed, lower
case) and hashed; a unit found in at least ``min_docs`` documents is cut from every document but the
first. ``protect`` leaves a document whole when the cuts would remove more than that share of it.

Documents with cuts that are left with fewer than ``min_length`` bytes (whitespace counted)
are dropped.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dedupkit import kernels
from dedupkit import settings as _S
from dedupkit.errors import ConfigError, InputError
from dedupkit.io.read import Batch
from dedupkit.normalize import text_buffers
from dedupkit.policy import KeepPolicy
from dedupkit.spans import SpanWriter, corpus_span_table, merge_spans
from dedupkit.stages.base import Decisions, Mapper, Stage

UNITS = _S.choices(_S.SubstringConfig, "unit")
KEEPS = _S.choices(_S.SubstringConfig, "keep")
THRESHOLDS = (2, 10, 100)
TOP_SPANS = 20
SNIPPET_BYTES = 240

HASH_REC = np.dtype([("hi", "<u8"), ("lo", "<u8"), ("doc", "<u4"), ("start", "<u4")])
DUP_REC = np.dtype([("doc", "<u4"), ("start", "<u4"), ("count", "<u4"), ("ref_doc", "<u4"),
                    ("ref_start", "<u4"), ("first", "u1")])

# the Python twin of the C tokenizer: runs of non-whitespace characters below U+0800, or one
# character at or above U+0800
TOKEN_RE = re.compile(r"[^\t\n\v\f\r \u0800-\U0010ffff]+|[\u0800-\U0010ffff]")


@dataclass(frozen=True)
class SubstringConfig:
    """Settings of the substring stage.

    Attributes:
        unit: ``span`` (repeated passages of at least ``min_tokens`` tokens), ``line`` or
            ``paragraph`` (repeated normalised lines / paragraphs).
        min_tokens: shortest repeated passage cut (span), or shortest unit considered (line,
            paragraph); default 50 for spans, 5 for lines and paragraphs.
        keep: ``first`` keeps the first occurrence (in keep-policy order), ``none`` cuts every copy.
        min_length: a document with cuts left shorter than this many bytes is dropped.
        min_docs: line/paragraph: cut a unit only when it occurs in at least this many documents.
        protect: line/paragraph: a document never loses more than this share of its bytes; when
            the cuts would take more, the document is left whole.
        partitions: hash partitions (0 = about one per 48 MB of input).
        policy: which document counts as first (``--keep-by`` etc.).
    """

    unit: str = _S.SubstringConfig.unit
    min_tokens: int | None = None
    keep: str = _S.SubstringConfig.keep
    min_length: int = _S.SubstringConfig.min_length
    min_docs: int = _S.SubstringConfig.min_docs
    protect: float = _S.SubstringConfig.protect
    partitions: int = _S.SubstringConfig.partitions
    policy: KeepPolicy = field(default_factory=KeepPolicy)

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ConfigError(f"unit must be one of {', '.join(UNITS)}, got {self.unit!r}")
        if self.keep not in KEEPS:
            raise ConfigError(f"keep must be first or none, got {self.keep!r}")
        if self.min_tokens is None:
            object.__setattr__(self, "min_tokens", 50 if self.unit == "span" else 5)
        if self.min_tokens < 1:
            raise ConfigError(f"min_tokens must be at least 1, got {self.min_tokens}")
        if self.min_length < 0:
            raise ConfigError(f"min_length must be 0 or more, got {self.min_length}")
        if self.min_docs < 2:
            raise ConfigError(f"min_docs must be at least 2, got {self.min_docs}")
        if not 0.0 < self.protect <= 1.0:
            raise ConfigError(f"protect must be in (0, 1], got {self.protect}")
        if self.partitions < 0 or self.partitions > 4096:
            raise ConfigError(f"partitions must be between 0 (auto) and 4096, got {self.partitions}")


# --- tokens and windows ----------------------------------------------------------------------------

def tokenize(text) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token byte ranges of every string of an Arrow string array.

    Returns:
        (start, end, counts): int64 start/end positions relative to each document's first byte,
        documents in order, and the number of tokens per document.

    Example:
        >>> import pyarrow as pa
        >>> [a.tolist() for a in tokenize(pa.array(["ab c", "日本"]))]
        [[0, 3, 0, 3], [2, 4, 3, 6], [2, 2]]
    """
    ts, te, cnt, base = _tokens(text)
    return ts - base, te - base, cnt


def _tokens(text):
    """(start, end, counts, doc base per token), positions in the Arrow data buffer."""
    arr, buf, offsets = text_buffers(text)
    n = len(arr)
    if kernels.substring is not None:
        a, b, c = kernels.substring.tokenize(buf, offsets.tobytes(), n)
        ts, te, cnt = np.frombuffer(a, np.int64), np.frombuffer(b, np.int64), np.frombuffer(c, np.int64)
    else:
        ts_l, te_l, cnt_l = [], [], []
        data = bytes(memoryview(buf)) if n else b""
        for i in range(n):
            a0, b0 = int(offsets[i]), int(offsets[i + 1])
            s = data[a0:b0].decode("utf-8")
            pos = np.cumsum([0] + [len(ch.encode()) for ch in s]) + a0
            m = [(pos[x.start()], pos[x.end()]) for x in TOKEN_RE.finditer(s)]
            ts_l += [x for x, _ in m]
            te_l += [y for _, y in m]
            cnt_l.append(len(m))
        ts, te, cnt = (np.array(ts_l, np.int64), np.array(te_l, np.int64), np.array(cnt_l, np.int64))
    base = np.repeat(offsets[:-1].astype(np.int64), cnt)
    return ts, te, cnt, base


def _window_hashes(text, ts, te, cnt, k: int) -> np.ndarray:
    """(n_windows, 2) uint64 xxh3-128 (high, low) of every window of ``k`` tokens."""
    arr, buf, _ = text_buffers(text)
    if kernels.substring is not None:
        raw = kernels.substring.window_hashes(buf, np.ascontiguousarray(ts).tobytes(),
                                              np.ascontiguousarray(te).tobytes(),
                                              np.ascontiguousarray(cnt).tobytes(), k)
        return np.frombuffer(raw, np.uint64).reshape(-1, 2)
    import xxhash

    mv = memoryview(buf)
    out = []
    base = 0
    for c in cnt.tolist():
        for t in range(c - k + 1):
            d = xxhash.xxh3_128_digest(mv[int(ts[base + t]): int(te[base + t + k - 1])])
            out.append(np.frombuffer(d, ">u8").astype(np.uint64))
        base += c
    return np.array(out, np.uint64).reshape(-1, 2)


def _window_index(cnt: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For every window: its document (position in the batch) and its first token (global)."""
    nwin = np.maximum(cnt - k + 1, 0)
    doc = np.repeat(np.arange(len(cnt), dtype=np.int64), nwin)
    tok_base = np.concatenate([[0], np.cumsum(cnt)[:-1]]).astype(np.int64)
    win_base = np.concatenate([[0], np.cumsum(nwin)[:-1]]).astype(np.int64)
    tok = np.arange(int(nwin.sum()), dtype=np.int64) - np.repeat(win_base, nwin) + np.repeat(tok_base, nwin)
    return doc, tok


# --- tasks -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HashTask:
    scan: Any  # dedupkit.scan.ScanTask
    first_doc: int  # global index of the task's first active document
    n_docs: int
    k: int
    pbits: int
    out: str  # prefix of the partition files


def _read(scan, first_doc: int, n_docs: int):
    """The task's good rows, batch by batch, with the global index of each batch's first document."""
    reader = scan.reader()
    g = first_doc
    for batch in reader:
        yield g, batch
        g += len(batch)
    if g - first_doc != n_docs:
        raise InputError(f"{scan.shard.name} changed while dedupkit was reading it ({g - first_doc} good rows "
                         f"now, {n_docs} at the scan); rerun when the file is no longer written")


def hash_task(task: HashTask) -> int:
    """Write the (hash, document, start) record of every window to its partition file."""
    nparts = 1 << task.pbits
    paths = [f"{task.out}.p{p:05d}.bin" for p in range(nparts)]
    for path in paths:  # start empty (a killed run may have left some); appended batch by batch
        open(path, "wb").close()
    n = 0
    # files are opened per batch, so thousands of partitions never exhaust the file handles
    for g0, batch in _read(task.scan, task.first_doc, task.n_docs):
        ts, te, cnt, base = _tokens(batch.text)
        h = _window_hashes(batch.text, ts, te, cnt, task.k)
        if not len(h):
            continue
        doc, tok = _window_index(cnt, task.k)
        rec = np.empty(len(h), HASH_REC)
        rec["hi"], rec["lo"] = h[:, 0], h[:, 1]
        rec["doc"] = doc + g0
        rec["start"] = ts[tok] - base[tok]
        # uint16 partition numbers: numpy's stable sort of 16-bit keys is a radix sort
        part = (h[:, 0] >> np.uint64(64 - task.pbits)).astype(np.uint16) if task.pbits else np.zeros(len(h), np.uint16)
        order = np.argsort(part, kind="stable")
        bounds = np.searchsorted(part[order], np.arange(nparts + 1, dtype=np.int64))
        rec = rec[order]
        for p in np.flatnonzero(bounds[1:] > bounds[:-1]).tolist():
            with open(paths[p], "ab") as fh:
                rec[bounds[p]:bounds[p + 1]].tofile(fh)
        n += len(h)
    return n


@dataclass(frozen=True)
class GroupTask:
    files: tuple[str, ...]
    rank: str | None  # .npy of each document's keep-policy rank, None = global index order
    out: str


def group_task(task: GroupTask) -> dict:
    """Find the repeated windows of one partition; write their occurrences sorted by (doc, start)."""
    parts = [np.fromfile(f, HASH_REC) for f in task.files]
    rec = np.concatenate(parts) if parts else np.zeros(0, HASH_REC)
    del parts
    n = len(rec)
    if n < 2:
        np.save(task.out, np.zeros(0, DUP_REC))
        np.save(_doc_path(task.out), np.zeros(0, np.uint32))
        return {"windows": n, "repeated_windows": 0, "groups": 0}
    # contiguous columns: numpy is several times slower on the fields of a record array
    hi, lo = np.ascontiguousarray(rec["hi"]), np.ascontiguousarray(rec["lo"])
    doc, start = np.ascontiguousarray(rec["doc"]), np.ascontiguousarray(rec["start"])
    del rec
    order = np.argsort(hi)
    hs, ls = hi[order], lo[order]
    if bool(((hs[1:] == hs[:-1]) & (ls[1:] != ls[:-1])).any()):  # equal high words, other low ones
        order = np.lexsort((lo, hi))
        hs, ls = hi[order], lo[order]
    same = (hs[1:] == hs[:-1]) & (ls[1:] == ls[:-1])
    del hs, ls, hi, lo
    starts = np.r_[True, ~same]
    gid = np.cumsum(starts) - 1
    sizes = np.bincount(gid)
    dup = sizes[gid] > 1
    idx = order[dup]  # original positions of the repeated windows' occurrences, group by group
    g = gid[dup]
    del order, gid, starts, same
    m = len(idx)
    if m == 0:
        np.save(task.out, np.zeros(0, DUP_REC))
        np.save(_doc_path(task.out), np.zeros(0, np.uint32))
        return {"windows": int(n), "repeated_windows": 0, "groups": 0}
    d, st = doc[idx], start[idx]
    # the kept occurrence: lowest (keep-policy rank of the document, start); ranks are unique
    prio = np.load(task.rank, mmap_mode="r")[d].astype(np.uint64) if task.rank is not None else d.astype(np.uint64)
    key = (prio << np.uint64(32)) | st.astype(np.uint64)
    heads = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    gi = np.repeat(np.arange(len(heads)), np.diff(np.r_[heads, m]))
    is_first = key == np.minimum.reduceat(key, heads)[gi]
    first_pos = np.empty(len(heads), np.int64)
    first_pos[gi[is_first]] = np.flatnonzero(is_first)
    other = np.where(first_pos == heads, heads + 1, heads)  # any other occurrence: an example location
    ref = np.where(is_first, other[gi], first_pos[gi])
    out = np.empty(m, DUP_REC)
    out["doc"], out["start"] = d, st
    out["count"] = sizes[g]
    out["ref_doc"], out["ref_start"] = d[ref], st[ref]
    out["first"] = is_first
    pos = (d.astype(np.uint64) << np.uint64(32)) | st.astype(np.uint64)
    out = out[np.argsort(pos)]  # (doc, start) pairs are unique within a partition
    np.save(task.out, out)
    np.save(_doc_path(task.out), np.ascontiguousarray(out["doc"]))  # contiguous, for searchsorted on a memmap
    return {"windows": int(n), "repeated_windows": int(m), "groups": int(len(heads))}


@dataclass(frozen=True)
class CutTask:
    scan: Any
    index: int
    first_doc: int
    n_docs: int
    k: int
    keep: str
    dups: tuple[str, ...]
    out: str  # .npz of the task's spans and figures


def _doc_path(path: str) -> str:
    return path[:-4] + ".doc.npy"


def _load_dups(files, g0: int, g1: int) -> np.ndarray:
    """The repeated-window occurrences in documents [g0, g1), from every partition, by (doc, start)."""
    parts = []
    for f in files:
        docs = np.load(_doc_path(f), mmap_mode="r")
        if not len(docs):
            continue
        a, b = np.searchsorted(docs, [g0, g1])
        if b > a:
            parts.append(np.array(np.load(f, mmap_mode="r")[a:b]))
    if not parts:
        return np.zeros(0, DUP_REC)
    out = np.concatenate(parts)
    key = (out["doc"].astype(np.uint64) << np.uint64(32)) | out["start"].astype(np.uint64)
    return out[np.argsort(key, kind="stable")]


def cut_task(task: CutTask) -> dict:
    """Turn the task's repeated windows into merged spans, and count the audit figures."""
    k = task.k
    span_parts: dict[str, list[np.ndarray]] = {n: [] for n in ("doc", "start", "end", "ref_doc", "ref_start")}
    cut_bytes = np.zeros(task.n_docs, np.int64)
    tokens = 0
    covered = np.zeros(len(THRESHOLDS), np.int64)
    top: list[dict] = []
    for g0, batch in _read(task.scan, task.first_doc, task.n_docs):
        nb = len(batch)
        ts, te, cnt, base = _tokens(batch.text)
        tokens += int(cnt.sum())
        d = _load_dups(task.dups, g0, g0 + nb)  # a batch at a time: memory stays bounded
        if not len(d):
            continue
        local = d["doc"].astype(np.int64) - g0
        _, buf, offsets = text_buffers(batch.text)
        doc_base = offsets[:-1].astype(np.int64)
        pos = doc_base[local] + d["start"].astype(np.int64)
        tok = np.searchsorted(ts, pos)
        if len(tok) and (tok.max() >= len(ts) or not np.array_equal(ts[tok], pos)):
            raise InputError(f"{task.scan.shard.name} changed while dedupkit was reading it (a window no "
                             "longer starts on a token); rerun when the file is no longer written")
        wend = te[tok + k - 1] - doc_base[local]
        wstart = d["start"].astype(np.int64)
        # spans to cut
        sel = np.flatnonzero(d["first"] == 0) if task.keep == "first" else np.arange(len(d))
        if len(sel):
            r, s, e = merge_spans(local[sel], wstart[sel], wend[sel])
            # each merged span starts where one of its windows starts: that window's reference
            key_sel = local[sel] * (1 << 32) + wstart[sel]
            j = sel[np.searchsorted(key_sel, r * (1 << 32) + s)]
            span_parts["doc"].append(r + g0)
            span_parts["start"].append(s)
            span_parts["end"].append(e)
            if task.keep == "first":
                span_parts["ref_doc"].append(d["ref_doc"][j].astype(np.int64))
                span_parts["ref_start"].append(d["ref_start"][j].astype(np.int64))
            else:
                span_parts["ref_doc"].append(np.full(len(r), -1, np.int64))
                span_parts["ref_start"].append(np.full(len(r), -1, np.int64))
            cut_bytes += np.bincount(r + g0 - task.first_doc, weights=e - s, minlength=task.n_docs).astype(np.int64)
        # audit: tokens inside windows repeated at least c times
        ntok = len(ts)
        for ci, c in enumerate(THRESHOLDS):
            m = d["count"] >= c
            if not m.any():
                continue
            delta = np.bincount(tok[m], minlength=ntok + 1) - np.bincount(tok[m] + k, minlength=ntok + 1)
            covered[ci] += int((np.cumsum(delta[:-1]) > 0).sum())
        top += _top_spans(d, local, tok, ts, te, k, buf, doc_base, g0)
        top = sorted(top, key=lambda x: (-x["count"], -(x["end"] - x["start"])))[:TOP_SPANS]
    arrays = {n: (np.concatenate(v) if v else np.zeros(0, np.int64)) for n, v in span_parts.items()}
    np.savez(task.out, cut_bytes=cut_bytes, **arrays)
    return {"index": task.index, "tokens": tokens, "covered": covered.tolist(), "top": top}


def _top_spans(d, local, tok, ts, te, k, buf, doc_base, g0) -> list[dict]:
    """The most repeated passages of a batch: runs of first occurrences with one count."""
    f = np.flatnonzero(d["first"] == 1)
    if not len(f):
        return []
    cnt = d["count"][f].astype(np.int64)
    best = np.sort(np.unique(cnt))[::-1][:TOP_SPANS]
    f = f[cnt >= best[-1]]
    cnt = d["count"][f].astype(np.int64)
    lo, t = local[f], tok[f]
    brk = np.r_[True, (lo[1:] != lo[:-1]) | (t[1:] != t[:-1] + 1) | (cnt[1:] != cnt[:-1])]
    heads = np.flatnonzero(brk)
    tails = np.r_[heads[1:], len(f)] - 1
    out = []
    mv = memoryview(buf)
    for h, tl in zip(heads.tolist(), tails.tolist()):
        a, b = int(ts[t[h]]), int(te[t[tl] + k - 1])
        snippet = bytes(mv[a:min(b, a + SNIPPET_BYTES)]).decode("utf-8", "ignore")
        out.append({"count": int(cnt[h]), "doc": int(lo[h] + g0), "start": a - int(doc_base[lo[h]]),
                    "end": b - int(doc_base[lo[h]]), "text": snippet,
                    "other_doc": int(d["ref_doc"][f[h]]), "other_start": int(d["ref_start"][f[h]])})
    return sorted(out, key=lambda x: (-x["count"], -(x["end"] - x["start"])))[:TOP_SPANS]


# --- line / paragraph units ------------------------------------------------------------------------

@dataclass(frozen=True)
class UnitTask:
    scan: Any
    first_doc: int
    n_docs: int
    unit: str
    min_tokens: int
    out: str


_LINE = re.compile(rb"[^\n]*\n?")
_PARA = re.compile(rb"(?:[ \t\r\f\v]*\S[^\n]*(?:\n|\Z))+")


def unit_task(task: UnitTask) -> int:
    """Hash every normalised line (paragraph) of at least ``min_tokens`` tokens: (hash, doc, start, end)."""
    import xxhash

    from dedupkit.normalize import normalize

    hi, lo, docs, starts, ends = [], [], [], [], []
    pat = _LINE if task.unit == "line" else _PARA
    for g0, batch in _read(task.scan, task.first_doc, task.n_docs):
        texts = batch.text.to_pylist()
        units, where = [], []
        for i, t in enumerate(texts):
            raw = t.encode("utf-8")
            for m in pat.finditer(raw):
                seg = m.group()
                if not seg.strip():
                    continue
                body = seg.decode("utf-8")
                if len(TOKEN_RE.findall(body)) < task.min_tokens:
                    continue
                units.append(body)
                where.append((g0 + i, m.start(), m.end()))
        if not units:
            continue
        import pyarrow as pa

        norm = normalize(pa.array(units, pa.large_string()), ("lower", "whitespace")).to_pylist()
        for u, (g, s, e) in zip(norm, where):
            h = xxhash.xxh3_128_intdigest(u.encode("utf-8"))
            hi.append(h >> 64)
            lo.append(h & 0xFFFFFFFFFFFFFFFF)
            docs.append(g)
            starts.append(s)
            ends.append(e)
    np.savez(task.out, hi=np.array(hi, np.uint64), lo=np.array(lo, np.uint64), doc=np.array(docs, np.int64),
             start=np.array(starts, np.int64), end=np.array(ends, np.int64))
    return len(hi)


# --- the stage -------------------------------------------------------------------------------------

class NBytesMapper(Mapper):
    """Each document's UTF-8 length (for ``min_length`` and ``protect``)."""

    def map_batch(self, batch: Batch) -> dict[str, np.ndarray]:
        _, _, offsets = text_buffers(batch.text)
        return {"nbytes": np.diff(offsets).astype(np.int64)}

    def empty(self) -> dict[str, np.ndarray]:
        return {"nbytes": np.zeros(0, np.int64)}


def _auto_pbits(corpus, partitions: int) -> int:
    if partitions:
        return max(0, math.ceil(math.log2(partitions)))
    size = sum(s.size for s in corpus.shards)
    return max(0, min(12, math.ceil(math.log2(max(1, size / (48 << 20))))))


class SubstringStage(Stage):
    """Cut repeated passages (or lines, paragraphs) out of documents; write ``OUT/spans``.

    Example:
        >>> from dedupkit.io.read import ReadSpec
        >>> from dedupkit.runner import run_stage
        >>> from dedupkit.stages.substring import SubstringConfig, SubstringStage
        >>> stage = SubstringStage(SubstringConfig(min_tokens=5))  # d2 repeats d1's last 14 tokens
        >>> counts = run_stage(stage, [str(data)], tmp / "substring", ReadSpec()).summary["counts"]
        >>> counts["documents_cut"], counts["dropped"]
        (1, 0)
    """

    name = "substring"

    def __init__(self, config: SubstringConfig = SubstringConfig(), write_spans: bool = True):
        self.config = config
        self.write_spans = write_spans

    def mapper(self) -> Mapper:
        return NBytesMapper()

    def read_columns(self) -> tuple[str, ...]:
        return (self.config.policy.keep_by,) if self.config.policy.keep_by else ()

    def key(self) -> str:
        return "substring:nbytes"

    def config_dict(self) -> dict:
        c = self.config
        return {"unit": c.unit, "min_tokens": c.min_tokens, "keep": c.keep, "min_length": c.min_length,
                "min_docs": c.min_docs, "protect": c.protect, "partitions": c.partitions,
                "hash": "xxh3_128", "policy": asdict(c.policy)}

    def _rank(self, corpus, work: Path) -> str | None:
        pol = self.config.policy
        keys = pol.priority(len(corpus), corpus.lengths, corpus.extra.get(pol.keep_by) if pol.keep_by else None)
        if not keys:
            return None
        n = len(corpus)
        order = np.lexsort([np.arange(n)] + list(reversed(keys)))
        rank = np.empty(n, np.int64)
        rank[order] = np.arange(n)
        path = str(work / "rank.npy")
        np.save(path, rank)
        return path

    def _tasks(self, corpus):
        for i, t in enumerate(corpus.tasks):
            yield i, t, int(corpus.task_offsets[i]), int(corpus.task_sizes[i])

    def identify(self, corpus, workdir: str) -> Decisions:
        from dedupkit.engine.local import LocalEngine

        engine = self.engine or LocalEngine()
        work = Path(workdir)
        work.mkdir(parents=True, exist_ok=True)
        n = len(corpus)
        if n >= 1 << 32:
            raise ConfigError(f"substring handles at most {1 << 32} documents per run, got {n}; run it on parts")
        nbytes = corpus.feature("nbytes").astype(np.int64) if n else np.zeros(0, np.int64)
        if (nbytes >= 1 << 32).any():
            i = int(np.argmax(nbytes))
            raise InputError(f"document {corpus.doc_ids([i])[0]} is {nbytes[i]} bytes; substring handles "
                             "documents below 4 GiB")
        if self.config.unit == "span":
            spans, stats = self._spans(corpus, work, engine)
        else:
            spans, stats = self._units(corpus, work, engine, nbytes)
        cut = np.zeros(n, np.int64)
        if len(spans["doc"]):
            np.add.at(cut, spans["doc"], spans["end"] - spans["start"])
        # min_length on the bytes left (whitespace counted: a close bound, and no text decoding)
        keep = ~((cut > 0) & (nbytes - cut < self.config.min_length))
        if self.write_spans:
            writer = SpanWriter(work / "spans")
            step = 1_000_000
            for part, s in enumerate(range(0, max(1, len(spans["doc"])), step)):
                sl = slice(s, s + step)
                writer.write(corpus_span_table(corpus, spans["doc"][sl], spans["start"][sl], spans["end"][sl],
                                               self.name, duplicate_index=spans["ref_doc"][sl],
                                               duplicate_start=spans["ref_start"][sl]), part)
        idx = np.arange(n, dtype=np.int64)
        stats.update({"documents_cut": int((cut > 0).sum()), "bytes_cut": int(cut.sum()),
                      "bytes": int(nbytes.sum()), "dropped_too_short": int((~keep).sum())})
        import pyarrow as pa

        extra = {"bytes_cut": pa.array(cut, pa.int64())}
        return Decisions(representative=idx, labels=np.full(n, -1, np.int64), score=np.full(n, np.nan),
                         keep=keep, stats=stats, extra=extra,
                         spans=str(work / "spans") if self.write_spans else None)

    def _spans(self, corpus, work: Path, engine) -> tuple[dict, dict]:
        k = self.config.min_tokens
        pbits = _auto_pbits(corpus, self.config.partitions)
        t0 = time.perf_counter()
        htasks = [HashTask(t, g, nd, k, pbits, str(work / f"hash-{i:05d}")) for i, t, g, nd in self._tasks(corpus)]
        nwin = engine.map(hash_task, htasks, desc="substring: hash windows")
        t1 = time.perf_counter()
        rank = self._rank(corpus, work)
        gtasks = [GroupTask(tuple(f"{h.out}.p{p:05d}.bin" for h in htasks), rank, str(work / f"dup-{p:05d}.npy"))
                  for p in range(1 << pbits)]
        gstats = engine.map(group_task, gtasks, desc="substring: group")
        for h in htasks:  # the window records are no longer needed: free the disk early
            for p in range(1 << pbits):
                Path(f"{h.out}.p{p:05d}.bin").unlink(missing_ok=True)
        t2 = time.perf_counter()
        ctasks = [CutTask(t, i, g, nd, k, self.config.keep, tuple(x.out for x in gtasks), str(work / f"cut-{i:05d}.npz"))
                  for i, t, g, nd in self._tasks(corpus)]
        cres = engine.map(cut_task, ctasks, desc="substring: cut")
        t3 = time.perf_counter()
        parts = [np.load(c.out) for c in ctasks]
        spans = {name: (np.concatenate([p[name] for p in parts]) if parts else np.zeros(0, np.int64)).astype(np.int64)
                 for name in ("doc", "start", "end", "ref_doc", "ref_start")}
        stats = {"unit": "span", "min_tokens": k, "partitions": 1 << pbits, "windows": int(sum(nwin)),
                 "repeated_windows": int(sum(g["repeated_windows"] for g in gstats)),
                 "repeated_groups": int(sum(g["groups"] for g in gstats)),
                 "audit": self._audit(corpus, cres),
                 "timings": {"hash_s": round(t1 - t0, 3), "group_s": round(t2 - t1, 3), "cut_s": round(t3 - t2, 3)}}
        return spans, stats

    def _audit(self, corpus, cres: list[dict]) -> dict:
        """The memorisation-risk profile: shares of tokens inside repeated passages, top passages."""
        per_shard: dict[str, dict] = {}
        for r in cres:
            name = corpus.tasks[r["index"]].shard.name
            s = per_shard.setdefault(name, {"tokens": 0, "covered": [0] * len(THRESHOLDS)})
            s["tokens"] += r["tokens"]
            s["covered"] = [a + b for a, b in zip(s["covered"], r["covered"])]
        total = sum(s["tokens"] for s in per_shard.values())
        cov = [sum(s["covered"][i] for s in per_shard.values()) for i in range(len(THRESHOLDS))]

        def shares(tokens, covered):
            return {f"repeated_{c}x": (covered[i] / tokens if tokens else 0.0) for i, c in enumerate(THRESHOLDS)}

        top = sorted((t for r in cres for t in r["top"]), key=lambda x: (-x["count"], -(x["end"] - x["start"]),
                                                                         x["doc"], x["start"]))[:TOP_SPANS]
        if top:
            ids = corpus.doc_ids(np.array([t["doc"] for t in top] + [t["other_doc"] for t in top])).to_pylist()
            for i, t in enumerate(top):
                t["locations"] = [{"doc_id": ids[i], "start": t["start"], "end": t["end"]},
                                  {"doc_id": ids[len(top) + i], "start": t["other_start"],
                                   "end": t["other_start"] + t["end"] - t["start"]}]
                for key in ("doc", "other_doc", "other_start"):
                    t.pop(key)
        return {
            "min_tokens": self.config.min_tokens, "tokens": total,
            "tokens_in_repeats": {f"{c}x": cov[i] for i, c in enumerate(THRESHOLDS)},
            "share": shares(total, cov),
            "shards": [{"shard": name, "tokens": s["tokens"], "share": shares(s["tokens"], s["covered"])}
                       for name, s in per_shard.items()],
            "top_spans": top,
        }

    def _units(self, corpus, work: Path, engine, nbytes: np.ndarray) -> tuple[dict, dict]:
        c = self.config
        t0 = time.perf_counter()
        tasks = [UnitTask(t, g, nd, c.unit, c.min_tokens, str(work / f"units-{i:05d}.npz"))
                 for i, t, g, nd in self._tasks(corpus)]
        engine.map(unit_task, tasks, desc=f"substring: hash {c.unit}s")
        parts = [np.load(t.out) for t in tasks]
        u = {k: (np.concatenate([p[k] for p in parts]) if parts else np.zeros(0)) for k in ("hi", "lo", "doc", "start", "end")}
        doc = u["doc"].astype(np.int64)
        rank_path = self._rank(corpus, work)
        rank = np.load(rank_path) if rank_path else np.arange(len(corpus), dtype=np.int64)
        order = np.lexsort((u["start"], doc, rank[doc] if len(doc) else doc, u["lo"], u["hi"]))
        hi, lo, d, s, e = u["hi"][order], u["lo"][order], doc[order], u["start"][order].astype(np.int64), \
            u["end"][order].astype(np.int64)
        same = np.r_[False, (hi[1:] == hi[:-1]) & (lo[1:] == lo[:-1])] if len(hi) else np.zeros(0, bool)
        gid = np.cumsum(~same) - 1
        new_doc = np.r_[True, (d[1:] != d[:-1]) | ~same[1:]] if len(d) else np.zeros(0, bool)
        ndocs = np.bincount(gid, weights=new_doc).astype(np.int64) if len(gid) else np.zeros(0, np.int64)
        first = np.flatnonzero(~same) if len(same) else np.zeros(0, np.int64)
        first_doc = d[first][gid] if len(gid) else d
        hit = ndocs[gid] >= c.min_docs if len(gid) else np.zeros(0, bool)
        cut = hit & ((d != first_doc) if c.keep == "first" else True)
        cd, cs, ce = d[cut], s[cut], e[cut]
        if c.keep == "first":
            crd, crs = first_doc[cut], s[first][gid][cut]
        else:
            crd = crs = np.full(len(cd), -1, np.int64)
        per_doc = np.bincount(cd, weights=ce - cs, minlength=len(corpus)).astype(np.int64)
        protected = (per_doc > 0) & (per_doc > c.protect * np.maximum(nbytes, 1))
        ok = ~protected[cd]
        o = np.lexsort((cs[ok], cd[ok]))
        spans = {"doc": cd[ok][o], "start": cs[ok][o], "end": ce[ok][o], "ref_doc": crd[ok][o], "ref_start": crs[ok][o]}
        stats = {"unit": c.unit, "min_tokens": c.min_tokens, "min_docs": c.min_docs, "protect": c.protect,
                 "units": int(len(hi)), "repeated_units": int(hit.sum()),
                 "protected_documents": int(protected.sum()),
                 "timings": {"units_s": round(time.perf_counter() - t0, 3)}}
        return spans, stats
