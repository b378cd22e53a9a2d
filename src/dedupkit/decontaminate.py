"""Decontamination: find the items of evaluation sets inside training documents.

Method (``docs/decontaminate.md``):

- **Tokens.** Text is lower-cased (Unicode), NFKC-normalised, and split into maximal runs of
  letters, digits, marks and ``_`` of any script; everything else (punctuation, whitespace, line
  breaks) only separates tokens. So case, punctuation, whitespace and line wrapping never matter.
- **Items.** An item is the text of its ``--eval-fields`` joined in order; the first field is its
  *prompt* (the question). An item whose prompt has at least ``ngram`` tokens is indexed by every
  ``ngram``-token window that starts inside the prompt; a shorter prompt is one window of all of its
  tokens (extended into the following fields up to ``min_tokens``), so it is matched whole. Items
  with fewer than ``min_tokens`` tokens in all are not indexed (counted in the summary). A prompt
  that several items share ("Which of the following is true?") does not identify an item: such
  items are matched on the text of all their fields instead.
- **Overlap.** A document contains an item when the item's windows found in the document cover at
  least ``min_overlap`` of the prompt's tokens. One shared idiom covers a small share of a long
  prompt, so it is not a hit; a short prompt must appear whole.
- **Speed.** One C pass per batch (``dedupkit._decon.ngram_scan``) tokenizes and hashes every
  document and walks one hash chain per token position, which yields the keys of every window size
  at once; two bitmaps (the keys of the windows' first tokens, and the full keys) stop the chain at
  almost every position, so only true candidates reach the exact lookup in numpy.

Example:
    >>> import json
    >>> from dedupkit.decontaminate import DecontaminateConfig, EvalIndex, load_eval_sets
    >>> _ = (tmp / "quiz.jsonl").write_text(json.dumps({"question": "Who wrote it?", "answer": "Ann"}))
    >>> items = load_eval_sets([f"quiz={tmp / 'quiz.jsonl'}"], fields=("question", "answer"))
    >>> len(items), items.prompts[0].as_py()
    (1, 'Who wrote it?')
    >>> index = EvalIndex.build(items, DecontaminateConfig())
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from dedupkit import kernels
from dedupkit import settings as _S
from dedupkit.atomic import atomic_write
from dedupkit.errors import ConfigError, DedupkitError, InputError
from dedupkit.io.read import Batch
from dedupkit.normalize import nfkc, text_buffers
from dedupkit.stages.base import Decisions, Mapper, Stage

MODES = _S.choices(_S.DecontaminateConfig, "mode")
#: prompt fields tried, in order, when --eval-fields is not given
GUESS_FIELDS = ("question", "prompt", "problem", "query", "input", "text")
_TABLE_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz", ".jsonl.zst", ".json", ".ndjson")
_MAX_MATCHED_CHARS = 400


@dataclass(frozen=True)
class DecontaminateConfig:
    """Settings of the decontamination stage.

    Attributes:
        ngram: window length in tokens for prompts of at least that many tokens.
        min_tokens: shortest window (a shorter prompt is extended into the following fields);
            items with fewer tokens in all are not indexed.
        min_overlap: share of an item's prompt tokens that matched windows must cover.
        mode: ``drop`` removes the document; ``cut`` removes the matched spans (plus ``margin``).
        margin: characters removed on each side of a matched span (cut mode).
        max_pieces: cut mode drops a document that would be cut into more pieces than this.
        max_cut_fraction: cut mode drops a document when more than this share of its bytes is cut.
    """

    ngram: int = _S.DecontaminateConfig.ngram
    min_tokens: int = _S.DecontaminateConfig.min_tokens
    min_overlap: float = _S.DecontaminateConfig.min_overlap
    mode: str = _S.DecontaminateConfig.mode
    margin: int = _S.DecontaminateConfig.margin
    max_pieces: int = _S.DecontaminateConfig.max_pieces
    max_cut_fraction: float = _S.DecontaminateConfig.max_cut_fraction

    def __post_init__(self) -> None:
        if not isinstance(self.ngram, int) or not 1 <= self.ngram <= 64:
            raise ConfigError(f"ngram must be an integer from 1 to 64, got {self.ngram!r}")
        if not isinstance(self.min_tokens, int) or not 1 <= self.min_tokens <= self.ngram:
            raise ConfigError(f"min_tokens must be from 1 to ngram ({self.ngram}), got {self.min_tokens!r}")
        if not 0.0 < float(self.min_overlap) <= 1.0:
            raise ConfigError(f"min_overlap must be in (0, 1], got {self.min_overlap!r}")
        if self.mode not in MODES:
            raise ConfigError(f"mode must be drop or cut, got {self.mode!r}")
        if self.margin < 0:
            raise ConfigError(f"margin must be at least 0, got {self.margin}")
        if self.max_pieces < 1:
            raise ConfigError(f"max_pieces must be at least 1, got {self.max_pieces}")
        if not 0.0 < float(self.max_cut_fraction) <= 1.0:
            raise ConfigError(f"max_cut_fraction must be in (0, 1], got {self.max_cut_fraction!r}")


# --- eval sets --------------------------------------------------------------------------------

@dataclass(frozen=True)
class EvalSource:
    """One ``--against`` value: a name and a file or folder."""

    name: str
    path: str


def parse_against(values: Sequence[str]) -> list[EvalSource]:
    """``name=path`` or ``path`` (named by its file name without suffixes) for each value.

    Raises:
        ConfigError: no value, an empty name or path, or two sets with one name.
    """
    out: list[EvalSource] = []
    for v in values:
        name, sep, path = v.partition("=")
        if not sep or os.path.exists(v):
            name, path = "", v
        if not path:
            raise ConfigError(f"--against {v!r}: give a path, or NAME=PATH")
        if not name:
            base = os.path.basename(os.path.normpath(path))
            for suf in _TABLE_SUFFIXES + (".txt",):
                if base.endswith(suf):
                    base = base[: -len(suf)]
                    break
            name = base
        out.append(EvalSource(name, path))
    if not out:
        raise ConfigError("give at least one eval set: --against FILE_OR_FOLDER (or NAME=PATH)")
    names = [s.name for s in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"two eval sets are named {dup[0]!r}; name them apart with NAME=PATH")
    return out


@dataclass
class EvalItems:
    """Items of one or more eval sets, flat (Arrow string arrays: a million items stay cheap).

    Attributes:
        sets: eval set names; ``set_index[i]`` is item i's set.
        ids: item ids (the ``--eval-id`` value, else the 0-based row or 1-based line number).
        prompts: the first field of every item.
        texts: all fields joined by newlines (starts with the prompt).
        sources: per set, the files read and their item counts.
    """

    sets: list[str] = field(default_factory=list)
    set_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    ids: pa.Array = field(default_factory=lambda: pa.array([], pa.string()))
    prompts: pa.Array = field(default_factory=lambda: pa.array([], pa.string()))
    texts: pa.Array = field(default_factory=lambda: pa.array([], pa.string()))
    sources: list[dict] = field(default_factory=list)
    _fp: str | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def item_id(self, i: int) -> str:
        return self.ids[int(i)].as_py()

    def set_name(self, i: int) -> str:
        return self.sets[int(self.set_index[int(i)])]

    def fingerprint(self) -> str:
        """A hash of every set name, item id, prompt and text (what the index depends on)."""
        if self._fp is None:
            h = xxhash.xxh3_128()
            h.update(json.dumps(self.sets).encode())
            h.update(np.ascontiguousarray(self.set_index, np.int32).tobytes())
            for arr in (self.ids, self.prompts, self.texts):
                arr = arr.cast(pa.large_string())
                for b in arr.buffers()[1:]:
                    if b is not None:
                        h.update(memoryview(b))
            self._fp = h.hexdigest()
        return self._fp


def _value_text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, (list, tuple)):
        return "\n".join(_value_text(x) for x in v)
    if isinstance(v, dict):
        return "\n".join(_value_text(x) for x in v.values())
    return str(v)


def _eval_files(path: str) -> list[str]:
    if os.path.isdir(path):
        found = []
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
            for f in sorted(files):
                if not f.startswith((".", "_")) and (f.endswith(_TABLE_SUFFIXES) or f.endswith(".txt")):
                    found.append(os.path.join(root, f))
        if not found:
            raise InputError(f"eval folder {path} holds no .jsonl, .parquet or .txt file")
        return found
    if not os.path.exists(path):
        raise InputError(f"eval set {path} does not exist; pass a file or folder of eval items")
    return [path]


def _compression(path: str) -> str | None:
    return "gzip" if path.endswith(".gz") else "zstd" if path.endswith(".zst") else None


def _read_jsonl_python(path: str) -> pa.Table:
    """The slow reader: any JSON objects (mixed types), with the line of a malformed record."""
    recs: list[dict] = []
    cols: dict[str, None] = {}
    with pa.input_stream(path, compression=_compression(path)) as raw:
        for ln, line in enumerate(raw.read().decode("utf-8", "replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except ValueError as exc:
                raise InputError(f"eval set {path} line {ln}: not valid JSON ({exc}); fix the line") from exc
            if not isinstance(r, dict):
                raise InputError(f"eval set {path} line {ln}: expected a JSON object, got {type(r).__name__}")
            recs.append(r)
            for k in r:
                cols.setdefault(k, None)
    # every value as text already, so mixed types never stop the table
    return pa.table({c: pa.array([_value_text(r.get(c)) if c in r else None for r in recs], pa.string())
                     for c in cols})


def _read_table(path: str) -> pa.Table:
    """A JSONL or Parquet eval file as a table (Arrow's JSON reader first, Python's on failure)."""
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"eval set {path}: not a readable Parquet file ({exc})") from exc
    import pyarrow.json as pj

    try:
        with pa.input_stream(path, compression=_compression(path)) as fh:
            return pj.read_json(fh)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return _read_jsonl_python(path)


def _column_text(col) -> pa.Array:
    """A column as one string per row: strings as they are, lists (choices) joined by newlines."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    t = col.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return pc.fill_null(col, "").cast(pa.string())
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and (
            pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type)):
        return pc.fill_null(pc.binary_join(col, "\n"), "").cast(pa.string())
    return pa.array([_value_text(v) for v in col.to_pylist()], pa.string())


def _row_ids(n: int, prefix: str, start: int = 0) -> pa.Array:
    rows = pc.cast(pa.array(np.arange(start, start + n, dtype=np.int64)), pa.string())
    return pc.binary_join_element_wise(prefix, rows, "") if prefix else rows


def load_eval_sets(against: Sequence[str], fields: Sequence[str] | None = None,
                   id_field: str | None = None) -> EvalItems:
    """Read the items of every eval set named in ``against`` (see :func:`parse_against`).

    A ``.txt`` file (or any file that is not JSONL/Parquet) holds one item per non-empty line. In
    JSONL and Parquet files, ``fields`` name what to index (the first is the prompt); list values
    (choices) are joined. Without ``fields``, the first of question, prompt, problem, query, input,
    text that the file has.

    Raises:
        InputError: a missing file, a field or id column the file lacks, a malformed record.
        ConfigError: see :func:`parse_against`.
    """
    sets, set_index, ids, prompts, texts, sources = [], [], [], [], [], []
    for si, src in enumerate(parse_against(against)):
        sets.append(src.name)
        files = []
        paths = _eval_files(src.path)
        for path in paths:
            prefix = f"{os.path.basename(path)}:" if len(paths) > 1 or src.path != path else ""
            if path.endswith(_TABLE_SUFFIXES):
                t = _read_table(path)
                cols = t.column_names
                use = list(fields) if fields else [next((c for c in GUESS_FIELDS if c in cols), "")]
                if not use[0]:
                    raise InputError(f"eval set {path}: none of {', '.join(GUESS_FIELDS)} is a column (columns: "
                                     f"{', '.join(cols[:12]) or 'none'}); pass --eval-fields, e.g. "
                                     "--eval-fields question,answer")
                missing = [f for f in use if f not in cols]
                if missing:
                    raise InputError(f"eval set {path}: no column {missing[0]!r} (columns: {', '.join(cols[:12])}); "
                                     "fix --eval-fields")
                if id_field and id_field not in cols:
                    raise InputError(f"eval set {path}: no id column {id_field!r} (columns: {', '.join(cols[:12])}); "
                                     "fix --eval-id or leave it out to use row numbers")
                parts = [_column_text(t.column(f)) for f in use]
                prompt = parts[0]
                text = pc.binary_join_element_wise(*parts, "\n") if len(parts) > 1 else prompt
                if id_field:
                    col = t.column(id_field).combine_chunks()
                    idv = col.cast(pa.string()) if not pa.types.is_string(col.type) else col
                    idv = pc.if_else(pc.is_valid(idv), idv, _row_ids(len(t), prefix))
                else:
                    idv = _row_ids(len(t), prefix)
            else:
                try:
                    with open(path, encoding="utf-8") as fh:
                        lines = fh.read().splitlines()
                except UnicodeDecodeError as exc:
                    raise InputError(f"eval set {path} is not UTF-8 text ({exc}); convert it, or use JSONL") from exc
                keep = [(ln, line) for ln, line in enumerate(lines, 1) if line.strip()]
                prompt = text = pa.array([line for _, line in keep], pa.string())
                idv = pa.array([f"{prefix}{ln}" for ln, _ in keep], pa.string())
            ids.append(idv.cast(pa.string()))
            prompts.append(prompt.cast(pa.string()))
            texts.append(text.cast(pa.string()))
            set_index.append(np.full(len(idv), si, np.int32))
            files.append({"path": os.path.abspath(path), "items": len(idv)})
        sources.append({"name": src.name, "path": src.path, "files": files, "items": sum(f["items"] for f in files)})

    def cat(arrs):
        return pa.concat_arrays(arrs) if arrs else pa.array([], pa.string())

    return EvalItems(sets=sets, set_index=np.concatenate(set_index) if set_index else np.zeros(0, np.int32),
                     ids=cat(ids), prompts=cat(prompts), texts=cat(texts), sources=sources)


# --- tokens and n-gram keys -------------------------------------------------------------------

# Non-ASCII characters that are not letters, digits or marks become spaces (one per character, so
# that offsets do not move); ASCII separators are handled by the kernel.
_NON_WORD_NON_ASCII = r"[^\x00-\x7f\p{L}\p{N}\p{M}]"


# Code points that NFKC may change (their NFKC form differs, or they are marks or Hangul jamo that
# compose with what precedes them), as hex ranges merged across gaps of up to 16 (Unicode 14, from
# unicodedata; tests/test_decontaminate.py checks the cover). A text without any of them is its own
# NFKC form, so only texts holding one pay for the normalisation.
_NFKC_RANGES = (
    "a0-be 132-149 17f-17f 1c4-1cc 1f1-1f3 2b0-2b8 2d8-2e4 300-387 3d0-3d6 3f0-3f9 483-489 587-5c7 "
    "610-61a 64b-65f 670-678 6d6-6ed 711-711 730-74a 7a6-7b0 7eb-7fd 816-82d 859-85b 898-89f 8ca-903 "
    "93a-963 981-983 9bc-9e3 9fe-a03 a33-a5e a70-a83 abc-acd ae2-ae3 afa-b03 b3c-b63 b82-b82 bbe-bd7 "
    "c00-c04 c3c-c63 c81-c83 cbc-ce3 d00-d03 d3b-d63 d81-d83 dca-ddf df2-df3 e31-e4e eb1-edd f0c-f19 "
    "f35-fc6 102b-103e 1056-109d 10fc-11ff 135d-135f 1712-1715 1732-1734 1752-1753 1772-1773 "
    "17b4-17dd 180b-180f 1885-1886 18a9-18a9 1920-193b 1a17-1a1b 1a55-1a7f 1ab0-1ace 1b00-1b04 "
    "1b34-1b44 1b6b-1b82 1ba1-1bad 1be6-1bf3 1c24-1c37 1cd0-1cf9 1d2c-1d78 1d9b-1dff 1e9a-1e9b "
    "1f71-1f7d 1fbb-205f 2070-20a8 20d0-2189 222c-2230 2329-232a 2460-24ea 2a0c-2a0c 2a74-2a76 "
    "2adc-2adc 2c7c-2c7d 2cef-2cf1 2d6f-2d7f 2de0-2dff 2e9f-2e9f 2ef3-2fd5 3000-3000 302a-303a "
    "3099-309f 30ff-30ff 3131-319f 3200-33ff a66f-a67d a69c-a69f a6f0-a6f1 a770-a770 a7f2-a80b "
    "a823-a82c a880-a881 a8b4-a8c5 a8e0-a8ff a926-a92d a947-a953 a980-a983 a9b3-a9c0 a9e5-a9e5 "
    "aa29-aa4d aa7b-aa7d aab0-aac1 aaeb-aaf6 ab5c-ab69 abe3-abed f900-fad9 fb00-fbb1 fbd3-fd3d "
    "fd50-fdc7 fdf0-ffee 101fd-101fd 102e0-102e0 10376-1037a 10781-107ba 10a01-10a0f 10a38-10a3f "
    "10ae5-10ae6 10d24-10d27 10eab-10eac 10f46-10f50 10f82-10f85 11000-11002 11038-11046 11070-11082 "
    "110b0-110c2 11100-11102 11127-11134 11145-11146 11173-11182 111b3-111cf 1122c-1123e 112df-112ea "
    "11300-11303 1133b-11374 11435-11446 1145e-1145e 114b0-114c3 115af-115c0 115dc-115dd 11630-11640 "
    "116ab-116b7 1171d-1172b 1182c-1183a 11930-11943 119d1-119e4 11a01-11a0a 11a33-11a5b 11a8a-11a99 "
    "11c2f-11c3f 11c92-11cb6 11d31-11d47 11d8a-11d97 11ef3-11ef6 16af0-16af4 16b30-16b36 16f4f-16f92 "
    "16fe4-16ff1 1bc9d-1bc9e 1cf00-1cf46 1d15e-1d18b 1d1aa-1d1c0 1d242-1d244 1d400-1d7ff 1da00-1da84 "
    "1da9b-1daaf 1e000-1e02a 1e130-1e136 1e2ae-1e2ae 1e2ec-1e2ef 1e8d0-1e8d6 1e944-1e94a 1ee00-1eebb "
    "1f100-1f14f 1f16a-1f16c 1f190-1f190 1f200-1f251 1fbf0-1fbf9 2f800-2fa1d e0100-e01ef "
)
_NFKC_CLASS = "[" + "".join(f"\\x{{{a}}}-\\x{{{b}}}" for a, b in (r.split("-") for r in _NFKC_RANGES.split())) + "]"


def prepare(texts: pa.Array) -> pa.Array:
    """The text the kernel tokenizes: ASCII documents unchanged; the others NFKC-normalised,
    non-ASCII separators replaced by spaces and lower-cased (the kernel lower-cases ASCII)."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks() if texts.num_chunks else pa.array([], pa.large_string())
    if texts.null_count:
        texts = pc.fill_null(texts, "")
    if len(texts) == 0:
        return texts
    nonascii = pc.invert(pc.string_is_ascii(texts))
    if not pc.any(nonascii).as_py():
        return texts
    sub = texts.filter(nonascii)
    unstable = pc.match_substring_regex(sub, _NFKC_CLASS)
    if pc.any(unstable).as_py():
        sub = pc.replace_with_mask(sub, unstable, nfkc(sub.filter(unstable)))
    sub = pc.replace_substring_regex(sub, _NON_WORD_NON_ASCII, " ")
    sub = pc.utf8_lower(sub)
    return pc.replace_with_mask(texts.cast(sub.type) if texts.type != sub.type else texts, nonascii, sub)


_PY_TOKEN = re.compile(r"[0-9A-Za-z_\u0080-\U0010ffff]+")
_K0, _K1, _MASK = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, (1 << 64) - 1


def _fmix(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _MASK
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _MASK
    return h ^ (h >> 33)


def _bit(bm: np.ndarray, lg: int, key: int) -> bool:
    i = key >> (64 - lg)
    return bool((int(bm[i >> 3]) >> (i & 7)) & 1)


def _py_ngram_scan(prepared: list[str], sizes: bytes, k0: int, pre: np.ndarray, pre_log2: int,
                   full: np.ndarray, full_log2: int, emit_all: bool):
    """Pure-Python twin of ``_decon.ngram_scan`` (used without a C compiler; tests compare)."""
    out = ([], [], [], [], [])
    ntok = []
    maxw = max(w for w in range(65) if sizes[w] and w >= k0)
    for d, s in enumerate(prepared):
        t = [xxhash.xxh3_64_intdigest(m.group().encode("utf-8").lower()) for m in _PY_TOKEN.finditer(s)]
        ntok.append(len(t))
        for i in range(len(t)):
            h, prefix = _K0, 0
            for j in range(min(len(t) - i, maxw)):
                h = ((h ^ t[i + j]) * _K1) & _MASK
                h ^= h >> 31
                w = j + 1
                if w == k0:
                    prefix = _fmix(h ^ w)
                    if not emit_all and not _bit(pre, pre_log2, prefix):
                        break
                if w < k0 or not sizes[w]:
                    continue
                key = _fmix(h ^ w)
                if not emit_all and not _bit(full, full_log2, key):
                    continue
                for lst, v in zip(out, (d, i, w, key, prefix)):
                    lst.append(v)
    return (np.array(out[0], np.int64), np.array(out[1], np.int64), np.array(out[2], np.int64),
            np.array(out[3], np.uint64), np.array(out[4], np.uint64), np.array(ntok, np.int64))


def ngram_scan(texts, sizes: Sequence[int], pre: np.ndarray | None = None, pre_log2: int = 3,
               full: np.ndarray | None = None, full_log2: int = 3, emit_all: bool = False,
               k0: int | None = None):
    """Window keys of ``texts`` (see ``_decon.c``): arrays doc, pos, size, key, prefix, and the
    token count of every text. ``texts``: a string array or a sequence of str, not yet prepared."""
    if not isinstance(texts, (pa.Array, pa.ChunkedArray)):
        texts = pa.array(list(texts), pa.string())
    arr = prepare(texts)
    flags = bytearray(65)
    for w in sizes:
        flags[int(w)] = 1
    k0 = min(int(w) for w in sizes) if k0 is None else int(k0)
    if pre is None:
        pre = np.zeros(1, np.uint8)
    if full is None:
        full = np.zeros(1, np.uint8)
    if kernels.decon is not None:
        arr, buf, offsets = text_buffers(arr)
        r = kernels.decon.ngram_scan(buf, offsets.tobytes(), len(arr), bytes(flags), k0, pre, pre_log2, full,
                                     full_log2, emit_all)
        return (np.frombuffer(r[0], np.int64), np.frombuffer(r[1], np.int64), np.frombuffer(r[2], np.int64),
                np.frombuffer(r[3], np.uint64), np.frombuffer(r[4], np.uint64), np.frombuffer(r[5], np.int64))
    return _py_ngram_scan(arr.to_pylist(), bytes(flags), k0, pre, pre_log2, full, full_log2, emit_all)


def token_counts(texts) -> np.ndarray:
    """Tokens of every text (as decontamination counts them)."""
    # k0 = 1 and an empty prefix bitmap: every chain stops after its first token.
    return ngram_scan(texts, [64], emit_all=False, k0=1)[5]


# --- the index --------------------------------------------------------------------------------

def _bitmap(keys: np.ndarray, bits_per_key: int = 32, min_log2: int = 16,
            presorted: bool = False) -> tuple[np.ndarray, int]:
    """A bitmap of 2**lg bits with the bit of every key's top lg bits set (about 1/bits_per_key
    false positives). ``presorted``: the keys are sorted already."""
    lg = max(min_log2, int(np.ceil(np.log2(max(1, len(keys)) * bits_per_key))))
    lg = min(lg, 36)
    bm = np.zeros(1 << (lg - 3), np.uint8)
    if len(keys) and not presorted and lg <= 24:  # a bool per bit (at most 16 MiB) beats a sort
        bits = np.zeros(1 << lg, bool)
        bits[(keys >> np.uint64(64 - lg)).astype(np.int64)] = True
        return np.packbits(bits, bitorder="little"), lg
    if len(keys):
        i = keys >> np.uint64(64 - lg)
        if not presorted:
            i.sort()
        byte = (i >> np.uint64(3)).astype(np.int64)
        bits = np.left_shift(np.uint8(1), (i & np.uint64(7)).astype(np.uint8))
        starts = np.flatnonzero(np.r_[True, byte[1:] != byte[:-1]])
        bm[byte[starts]] = np.bitwise_or.reduceat(bits, starts)
    return bm, lg


_BUILD_CHUNK = 65536


def _shared_prompts(prompts: pa.Array) -> np.ndarray:
    """True for every prompt whose text, lower-cased and trimmed, is another item's prompt."""
    n = len(prompts)
    if n < 2:
        return np.zeros(n, bool)
    norm = pc.utf8_trim_whitespace(pc.utf8_lower(prepare(prompts)))
    enc = pc.dictionary_encode(norm)
    codes = np.asarray(enc.indices)
    return (np.bincount(codes, minlength=len(enc.dictionary))[codes] > 1) & np.asarray(
        pc.greater(pc.utf8_length(norm), 0), bool)


_INDEX_FILES = ("keys", "item", "ipos", "width", "lq", "pre", "full")


@dataclass
class EvalIndex:
    """The windows of every indexed item, sorted by key, and the two bitmaps of the scan.

    Attributes:
        keys, item, ipos: one entry per window: its key, item index and start token in the item.
        width: window size of every item (0 = not indexed: too few tokens).
        lq: prompt tokens of every item.
        pre, full: bitmaps of the windows' k0-token prefix keys and of their keys.
    """

    keys: np.ndarray
    item: np.ndarray
    ipos: np.ndarray
    width: np.ndarray
    lq: np.ndarray
    pre: np.ndarray
    full: np.ndarray
    meta: dict

    @property
    def sizes(self) -> list[int]:
        return [int(w) for w in self.meta["sizes"]]

    @classmethod
    def build(cls, items: EvalItems, cfg: DecontaminateConfig) -> "EvalIndex":
        """Index ``items`` with the window rule of the module docstring."""
        n = len(items)
        lq = token_counts(items.prompts) if n else np.zeros(0, np.int64)
        total = token_counts(items.texts) if n else np.zeros(0, np.int64)
        # A prompt that several items share ("Which of the following is true?") does not identify
        # an item: such items are matched on all their fields (the unit is the whole item).
        shared = _shared_prompts(items.prompts) & (total > lq)
        lq = np.where(shared, total, lq)
        width = np.where(lq >= cfg.ngram, cfg.ngram, np.minimum(np.maximum(lq, cfg.min_tokens), total))
        width = np.where(total < cfg.min_tokens, 0, width).astype(np.int64)
        keys, item, ipos, pres = [], [], [], []
        sizes = sorted(set(width[width > 0].tolist()))
        for w in sizes:
            # A long prompt: every window of the prompt alone (its tokens are the item's first
            # ones). A short one: the first window of the whole item (it may run into the answer).
            long_ = (width == w) & (lq >= w)
            groups = ((long_ & ~shared, items.prompts, True), (long_ & shared, items.texts, True),
                      ((width == w) & ~long_, items.texts, False))
            for mask, src, every in groups:
                idx = np.flatnonzero(mask)
                for a in range(0, len(idx), _BUILD_CHUNK):  # bounded memory for a million items
                    part = idx[a:a + _BUILD_CHUNK]
                    d, p, _, k, x, _ = ngram_scan(src.take(pa.array(part)), [w], emit_all=True,
                                                  k0=sizes[0])
                    ok = slice(None) if every else (p == 0)
                    keys.append(k[ok]); item.append(part[d[ok]].astype(np.int32)); ipos.append(p[ok].astype(np.int32))
                    pres.append(x[ok])
                    del d, p, k, x
        keys_a = np.concatenate(keys) if keys else np.zeros(0, np.uint64)
        item_a = np.concatenate(item).astype(np.int32) if item else np.zeros(0, np.int32)
        ipos_a = np.concatenate(ipos).astype(np.int32) if ipos else np.zeros(0, np.int32)
        pre_a = np.concatenate(pres) if pres else np.zeros(0, np.uint64)
        order = np.argsort(keys_a)  # the order within one key does not matter (matches are re-sorted)
        keys_a, item_a, ipos_a = keys_a[order], item_a[order], ipos_a[order]
        pre_bm, pre_lg = _bitmap(pre_a)
        full_bm, full_lg = _bitmap(keys_a, presorted=True)
        meta = {"sizes": sizes, "pre_log2": pre_lg, "full_log2": full_lg, "items": n,
                "indexed": int((width > 0).sum()), "too_short": int((width == 0).sum()),
                "shared_prompts": int(shared.sum()),
                "windows": int(len(keys_a)), "config": asdict(cfg)}
        return cls(keys_a, item_a, ipos_a, width.astype(np.int16), lq.astype(np.int32), pre_bm, full_bm, meta)

    def save(self, folder: str | os.PathLike) -> None:
        """Write the arrays as .npy files and meta.json (last, as the completion mark)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in _INDEX_FILES:
            np.save(folder / f"{name}.npy", getattr(self, name))
        atomic_write(folder / "meta.json", json.dumps(self.meta), sync=False)

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "EvalIndex":
        """Memory-map an index written by :meth:`save` (workers share the pages)."""
        folder = Path(folder)
        meta = json.loads((folder / "meta.json").read_text())
        arrs = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in _INDEX_FILES}
        return cls(meta=meta, **arrs)

    # --- matching ---

    def scan(self, texts):
        """Candidate windows of ``texts`` that are exactly indexed windows: arrays doc, pos (token),
        width, item, ipos."""
        if not self.meta["sizes"] or len(texts) == 0:
            z = np.zeros(0, np.int64)
            return z, z, z, z, z
        d, p, s, k, _, _ = ngram_scan(texts, self.sizes, self.pre, self.meta["pre_log2"], self.full,
                                      self.meta["full_log2"], emit_all=False)
        lo = np.searchsorted(self.keys, k, "left")
        hi = np.searchsorted(self.keys, k, "right")
        cnt = hi - lo
        rep = np.repeat(np.arange(len(k)), cnt)
        entry = np.repeat(lo, cnt) + (np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt))
        item = np.asarray(self.item[entry], np.int64)
        ok = np.asarray(self.width, np.int64)[item] == s[rep]
        rep, entry, item = rep[ok], entry[ok], item[ok]
        return d[rep], p[rep], s[rep], item, np.asarray(self.ipos[entry], np.int64)

    def coverage(self, doc, item, ipos, width):
        """Per (doc, item) pair with a window in common: arrays doc, item, covered prompt tokens,
        overlap (covered / prompt tokens), sorted by doc then item."""
        if len(doc) == 0:
            z = np.zeros(0, np.int64)
            return z, z, z, np.zeros(0, np.float32)
        lq = np.asarray(self.lq, np.int64)
        start = ipos
        end = np.minimum(ipos + width, lq[item])
        order = np.lexsort((start, item, doc))
        d, it, s, e = doc[order], item[order], start[order], end[order]
        new = np.r_[True, (d[1:] != d[:-1]) | (it[1:] != it[:-1])]
        g = np.cumsum(new) - 1
        big = int(lq.max()) + 1
        s2, e2 = s + g * big, e + g * big
        prev = np.r_[np.int64(-1), np.maximum.accumulate(e2)[:-1]]
        contrib = np.maximum(0, e2 - np.maximum(s2, prev))
        covered = np.bincount(g, weights=contrib).astype(np.int64)
        gd, gi = d[new], it[new]
        return gd, gi, covered, (covered / np.maximum(lq[gi], 1)).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _load_index(folder: str, fingerprint: str) -> EvalIndex:
    """The index in ``folder``, loaded once per process; the fingerprint is part of the cache key,
    so a long-lived (Ray) worker never serves an older index written to the same folder."""
    ix = EvalIndex.load(folder)
    if ix.meta.get("fingerprint") != fingerprint:
        raise ConfigError(f"{folder} holds another index than this run built; rerun the command")
    return ix


def best_per_doc(n: int, gd: np.ndarray, gi: np.ndarray, overlap: np.ndarray, min_overlap: float):
    """The best hit of every document: item (-1 none), overlap, and the number of items hit."""
    hit = overlap >= np.float32(min_overlap) - np.float32(1e-6)
    gd, gi, ov = gd[hit], gi[hit], overlap[hit]
    best = np.full(n, -1, np.int64)
    best_ov = np.zeros(n, np.float32)
    nhit = np.bincount(gd, minlength=n).astype(np.int32) if len(gd) else np.zeros(n, np.int32)
    if len(gd):
        order = np.lexsort((gi, -ov, gd))  # best overlap first, ties to the lowest item
        first = order[np.r_[True, gd[order][1:] != gd[order][:-1]]]
        best[gd[first]] = gi[first]
        best_ov[gd[first]] = ov[first]
    return best, best_ov, nhit


class DecontaminateMapper(Mapper):
    """Per batch: the best eval item found in each document (loads the index once per process)."""

    def __init__(self, index_dir: str, fingerprint: str, min_overlap: float):
        self.index_dir = index_dir
        self.fingerprint = fingerprint
        self.min_overlap = min_overlap

    def map_batch(self, batch: Batch) -> dict[str, np.ndarray]:
        ix = _load_index(self.index_dir, self.fingerprint)
        n = len(batch)
        d, _, w, it, ip = ix.scan(batch.text)
        gd, gi, _, ov = ix.coverage(d, it, ip, w)
        return {"decon_item": best_per_doc(n, gd, gi, ov, self.min_overlap)[0]}

    def empty(self) -> dict[str, np.ndarray]:
        return {"decon_item": np.zeros(0, np.int64)}


# --- details of the hit documents -------------------------------------------------------------

@dataclass
class Match:
    """One eval item found in a document.

    Attributes:
        item: item index; overlap: share of its prompt covered; start, end: UTF-8 byte range of
        the document from the first to the last matched token (None when the offsets could not be
        mapped back); spans: the matched byte ranges (merged).
    """

    item: int
    overlap: float
    start: int | None
    end: int | None
    spans: list[tuple[int, int]]


def _token_spans(text: str) -> tuple[list[tuple[int, int]], bool]:
    """Character ranges of the tokens of ``text`` as the kernel sees them, and whether they index
    the original text (False when normalisation changed its length)."""
    prepared = prepare(pa.array([text], pa.large_string()))[0].as_py()
    spans = [(m.start(), m.end()) for m in _PY_TOKEN.finditer(prepared)]
    if len(prepared) == len(text):
        return spans, True
    # Normalisation changed the length (NFKC: "½" -> "1⁄2", "ﬁ" -> "fi"): prepare each character
    # alone and map the tokens back through where each prepared character came from. Valid when
    # the pieces make the same text (no composition across characters).
    pieces = pc.utf8_lower(prepare(pa.array(list(text), pa.large_string()))).to_pylist()
    if "".join(pieces) != pc.utf8_lower(pa.array([prepared], pa.large_string()))[0].as_py():
        return spans, False
    origin = np.repeat(np.arange(len(text)), [len(x) for x in pieces])
    return [(int(origin[a]), int(origin[b - 1]) + 1) for a, b in spans], True


def _byte_offsets(text: str) -> np.ndarray:
    """UTF-8 byte offset of every character index 0..len(text)."""
    cp = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    size = 1 + (cp >= 0x80) + (cp >= 0x800) + (cp >= 0x10000)
    out = np.zeros(len(cp) + 1, np.int64)
    np.cumsum(size, out=out[1:])
    return out


def find_matches(text: str, index: EvalIndex, min_overlap: float) -> list[Match]:
    """Every item that ``text`` contains, best overlap first (ties: lowest item)."""
    d, p, w, it, ip = index.scan(pa.array([text], pa.large_string()))
    gd, gi, _, ov = index.coverage(d, it, ip, w)
    hit = ov >= np.float32(min_overlap) - np.float32(1e-6)
    if not hit.any():
        return []
    tok, aligned = _token_spans(text)
    boff = _byte_offsets(text) if aligned else None
    out = []
    for item, o in sorted(zip(gi[hit].tolist(), ov[hit].tolist()), key=lambda x: (-x[1], x[0])):
        sel = it == item
        ranges = sorted(set(zip(p[sel].tolist(), (p[sel] + w[sel]).tolist())))
        spans: list[tuple[int, int]] = []
        if boff is not None and tok and all(b <= len(tok) for _, b in ranges):
            for a, b in ranges:
                s, e = int(boff[tok[a][0]]), int(boff[tok[b - 1][1]])
                if spans and s <= spans[-1][1]:
                    spans[-1] = (spans[-1][0], max(spans[-1][1], e))
                else:
                    spans.append((s, e))
        out.append(Match(item=int(item), overlap=float(o), start=spans[0][0] if spans else None,
                         end=spans[-1][1] if spans else None, spans=spans))
    return out


def _snippet(text: str, m: Match) -> str:
    if m.start is None:
        return ""
    raw = text.encode("utf-8")[m.start:m.end].decode("utf-8", "replace")
    return raw if len(raw) <= _MAX_MATCHED_CHARS else raw[:_MAX_MATCHED_CHARS - 3] + "..."


def _snap(text: str, spans: list[tuple[int, int]], margin: int) -> list[tuple[int, int]]:
    """Widen matched byte spans by ``margin`` characters and return byte ranges on character
    boundaries (merged, sorted)."""
    boff = _byte_offsets(text)
    out: list[tuple[int, int]] = []
    for s, e in spans:
        cs = int(np.searchsorted(boff, s, "right")) - 1
        ce = int(np.searchsorted(boff, e, "left"))
        a, b = int(boff[max(0, cs - margin)]), int(boff[min(len(text), ce + margin)])
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


@dataclass(frozen=True)
class DetailTask:
    """Recompute the matches of the hit documents of one scan task, in a worker."""

    scan_task: Any
    rows: tuple[int, ...]  # shard row numbers of the hit documents (sorted)
    globals_: tuple[int, ...]  # their global indices
    index_dir: str
    fingerprint: str
    cfg: DecontaminateConfig


def _readers(task: DetailTask):
    """Readers of just the row groups that hold the wanted rows (Parquet), or of the task's rows
    (JSONL, read up to the last wanted line)."""
    st = task.scan_task
    if st.shard.format != "parquet":
        return [st.reader()]
    import pyarrow.parquet as pq

    md = pq.ParquetFile(st.shard.path).metadata
    ends = np.cumsum([md.row_group(g).num_rows for g in range(md.num_row_groups)])
    groups = sorted(set(int(g) for g in np.searchsorted(ends, np.asarray(task.rows), side="right")))
    ranges: list[list[int]] = []
    for g in groups:  # consecutive groups make one reader
        if ranges and ranges[-1][1] == g:
            ranges[-1][1] = g + 1
        else:
            ranges.append([g, g + 1])
    return [st.reader(row_groups=(a, b)) for a, b in ranges]


def detail_task(task: DetailTask) -> list[dict]:
    """Matches, matched text and (cut mode) spans of the wanted documents of one scan task."""
    ix = _load_index(task.index_dir, task.fingerprint)
    rows = np.asarray(task.rows, np.int64)
    glob = dict(zip(task.rows, task.globals_))
    out = []
    last = int(rows[-1]) if len(rows) else -1
    for reader in _readers(task):
        for batch in reader:
            hit = np.flatnonzero(np.isin(batch.rows, rows))
            for k in hit.tolist():
                text = batch.text[k].as_py() or ""
                ms = find_matches(text, ix, task.cfg.min_overlap)
                rec: dict[str, Any] = {"g": glob[int(batch.rows[k])], "matches": [
                    {"item": m.item, "overlap": m.overlap, "start": m.start, "end": m.end, "text": _snippet(text, m)}
                    for m in ms]}
                if task.cfg.mode == "cut" and ms:
                    if any(m.start is None for m in ms):
                        rec["cut"] = None  # offsets unknown: drop the whole document
                    else:
                        rec["cut"] = _snap(text, [sp for m in ms for sp in m.spans], task.cfg.margin)
                        rec["bytes"] = len(text.encode("utf-8"))
                out.append(rec)
            if len(batch.rows) and batch.rows[-1] >= last:
                break  # past the last wanted row
    return out


class DecontaminateStage(Stage):
    """Drop (or cut) documents that contain items of the eval sets.

    Every hit names its eval set, item id, overlap and matched text in extra manifest columns
    (``eval_set``, ``eval_item``, ``overlap``, ``matched_text``, ``eval_hits``, ``eval_matches``);
    ``cluster_id`` groups the documents whose best match is the same item; ``duplicate_of`` of a dropped row is
    ``EVAL_SET/ITEM_ID`` (the match is outside the corpus). In cut mode, kept documents with spans are listed in
    :attr:`spans` (one row per cut span) for ``OUT/spans``.

    Example:
        >>> from dedupkit.decontaminate import DecontaminateConfig, DecontaminateStage, load_eval_sets
        >>> from dedupkit.io.read import ReadSpec
        >>> from dedupkit.runner import run_stage
        >>> _ = (tmp / "quiz.txt").write_text("the weather in the mountains today")
        >>> items = load_eval_sets([str(tmp / "quiz.txt")])
        >>> stage = DecontaminateStage(items, DecontaminateConfig(ngram=5, min_tokens=5), str(tmp / "decon-index"))
        >>> run_stage(stage, [str(data)], tmp / "decon", ReadSpec()).summary["counts"]["dropped"]
        1
    """

    name = "decontaminate"

    def __init__(self, items: EvalItems, config: DecontaminateConfig, index_dir: str):
        self.items = items
        self.config = config
        self.index_dir = str(index_dir)
        self.index_meta: dict = {}
        self.spans: list[dict] = []  # cut mode: {g, start, end, source}
        if config.mode == "cut" and "spans" not in getattr(Decisions, "__dataclass_fields__", {}):
            raise ConfigError("--mode cut needs the span manifest (dedupkit.spans), which this build lacks; "
                              "use --mode drop")

    def fingerprint(self) -> str:
        """A digest of the items and settings (what the index and every decision depend on)."""
        return hashlib.sha1(json.dumps([self.items.fingerprint(), asdict(self.config)]).encode()).hexdigest()

    def _ensure_index(self) -> None:
        """Build the index into ``index_dir`` unless a finished one of the same fingerprint is there.
        Called from :meth:`mapper`, inside the run's output folder (never before it is claimed)."""
        fp = self.fingerprint()
        meta_path = Path(self.index_dir) / "meta.json"
        if meta_path.exists():
            try:
                meta = json.loads(meta_path.read_text())
                if meta.get("fingerprint") == fp:
                    self.index_meta = meta
                    return
            except ValueError:
                pass
            meta_path.unlink()
        import time

        t0 = time.perf_counter()
        ix = EvalIndex.build(self.items, self.config)
        ix.meta["fingerprint"] = fp
        ix.meta["build_s"] = round(time.perf_counter() - t0, 3)
        ix.save(self.index_dir)
        self.index_meta = ix.meta
        _load_index.cache_clear()

    def mapper(self) -> Mapper:
        self._ensure_index()
        return DecontaminateMapper(self.index_dir, self.index_meta["fingerprint"], self.config.min_overlap)

    def key(self) -> str:
        return f"decontaminate:{self.fingerprint()}"

    def config_dict(self) -> dict:
        # settings only (the rerun rule digests them before the run); the index's size and build
        # time are in the summary's stats
        return {**asdict(self.config), "eval_sets": self.items.sources}

    def identify(self, corpus, workdir: str) -> Decisions:
        n = len(corpus)
        best = corpus.feature("decon_item").astype(np.int64) if n else np.zeros(0, np.int64)
        hit_idx = np.flatnonzero(best >= 0)
        tasks = []
        for t, (a, b) in enumerate(zip(corpus.task_offsets[:-1], corpus.task_offsets[1:])):
            lo, hi = np.searchsorted(hit_idx, [a, b])
            if hi > lo:
                g = hit_idx[lo:hi]
                tasks.append(DetailTask(corpus.tasks[t], tuple(corpus.rows[g].tolist()), tuple(g.tolist()),
                                        self.index_dir, self.index_meta["fingerprint"], self.config))
        details: list[dict] = []
        if tasks:
            for part in self.engine.map(detail_task, tasks, desc="decontaminate: details"):
                details.extend(part)
        decisions = self.decide(n, details)
        if self.config.mode == "cut":
            from dedupkit.spans import SpanWriter, corpus_span_table

            sp = sorted(self.spans, key=lambda s: (s["g"], s["start"]))
            table = corpus_span_table(corpus, [s["g"] for s in sp], [s["start"] for s in sp], [s["end"] for s in sp],
                                      self.name, source=[s["source"] for s in sp])
            folder = Path(workdir) / "spans"
            SpanWriter(folder).write(table, part=0)
            decisions.spans = str(folder)
        return decisions

    def decide(self, n: int, details: list[dict]) -> Decisions:
        """Decisions and extra columns from the per-document details of the hit documents."""
        items, cfg = self.items, self.config
        keep = np.ones(n, bool)
        labels = np.full(n, -1, np.int64)
        score = np.full(n, np.nan, np.float32)
        cols: dict[str, list] = {c: [None] * n for c in ("eval_set", "eval_item", "matched_text", "eval_matches")}
        hits = np.zeros(n, np.int32)
        action: list[Any] = [None] * n
        self.spans = []
        n_cut_docs = n_spans = bytes_cut = 0
        for rec in details:
            g, ms = rec["g"], rec["matches"]
            if not ms:
                continue  # the mapper's candidate did not survive the exact recount (normalisation edge)
            b = ms[0]
            labels[g] = b["item"]
            score[g] = b["overlap"]
            cols["eval_set"][g] = items.set_name(b["item"])
            cols["eval_item"][g] = items.item_id(b["item"])
            cols["matched_text"][g] = b["text"]
            cols["eval_matches"][g] = json.dumps([
                {"eval_set": items.set_name(m["item"]), "item": items.item_id(m["item"]),
                 "overlap": round(m["overlap"], 4), "start": m["start"], "end": m["end"]} for m in ms])
            hits[g] = len(ms)
            drop = True
            if cfg.mode == "cut" and rec.get("cut"):
                spans = rec["cut"]
                cut = sum(e - s for s, e in spans)
                pieces = len(spans) + 1 - (spans[0][0] == 0) - (spans[-1][1] == rec["bytes"])
                if pieces <= cfg.max_pieces and cut <= cfg.max_cut_fraction * rec["bytes"] and cut < rec["bytes"]:
                    drop = False
                    n_cut_docs += 1
                    n_spans += len(spans)
                    bytes_cut += cut
                    src = f"{cols['eval_set'][g]}/{cols['eval_item'][g]}"
                    self.spans.extend({"g": g, "start": s, "end": e, "source": src} for s, e in spans)
            keep[g] = not drop
            action[g] = "cut" if not drop else "drop"
        extra = {
            "eval_set": pa.array(cols["eval_set"], pa.string()),
            "eval_item": pa.array(cols["eval_item"], pa.string()),
            "overlap": pa.array(np.where(labels >= 0, score, np.nan), pa.float32(), mask=labels < 0),
            "matched_text": pa.array(cols["matched_text"], pa.string()),
            "eval_hits": pa.array(hits, pa.int32()),
            "eval_matches": pa.array(cols["eval_matches"], pa.string()),
            "decon_action": pa.array(action, pa.string()),
            # the match lies outside the corpus: dropped rows name the item (as spans' `source`)
            "duplicate_of": pa.array([f"{a}/{b}" if a is not None else None
                                      for a, b in zip(cols["eval_set"], cols["eval_item"])], pa.string()),
        }
        per_set = {s: 0 for s in items.sets}
        per_item: dict[int, int] = {}
        for g in np.flatnonzero(labels >= 0).tolist():
            per_set[cols["eval_set"][g]] += 1
            per_item[int(labels[g])] = per_item.get(int(labels[g]), 0) + 1
        top = sorted(per_item.items(), key=lambda x: (-x[1], x[0]))[:20]
        stats = {"contaminated_docs": int((labels >= 0).sum()), "dropped_docs": int((~keep).sum()),
                 "cut_docs": n_cut_docs, "spans": n_spans, "bytes_cut": int(bytes_cut), "per_eval_set": per_set,
                 "items_found": len(per_item),
                 "top_items": [{"eval_set": items.set_name(i), "item": items.item_id(i), "docs": c}
                               for i, c in top],
                 "index": {k: v for k, v in self.index_meta.items() if k not in ("config",)}}
        return Decisions(representative=np.arange(n, dtype=np.int64), labels=labels, score=score, extra=extra,
                         keep=keep, stats=stats)


# --- `dedupkit check --against EVAL` ----------------------------------------------------------

_EVAL_SUFFIXES = _TABLE_SUFFIXES + (".txt",)


def split_against(values: Sequence[str]) -> tuple[list[str], list[str]]:
    """Tell ``check --against`` values apart: (index locations, eval sets).

    An index is a ``redis://`` URL or a folder holding ``index.json``; a JSONL/Parquet/text file, a
    folder of them, or ``NAME=PATH`` is an eval set. A missing path is an index unless its suffix
    is an eval file's (so a mistyped index still says "no such index").
    """
    from dedupkit.index.redis_store import is_redis_url

    indexes, evals = [], []
    for v in values:
        if is_redis_url(v) or (os.path.isdir(v) and os.path.exists(os.path.join(v, "index.json"))):
            indexes.append(v)
        elif os.path.exists(v) or v.endswith(_EVAL_SUFFIXES):
            evals.append(v)
        elif "=" in v and os.path.exists(v.split("=", 1)[1]):
            evals.append(v)
        else:
            indexes.append(v)
    return indexes, evals


def contamination_failure(summary: dict, out: str, limit: int = 20) -> str | None:
    """The ``check`` failure message naming each contaminated document, or None when clean."""
    st = summary.get("stats", {})
    n = st.get("contaminated_docs", 0)
    if not n:
        return None
    from dedupkit.manifest import read_manifest

    t = read_manifest(out, columns=["doc_id", "eval_set", "eval_item", "overlap"])
    t = t.filter(pc.is_valid(t.column("eval_item")))
    rows = t.slice(0, limit).to_pylist()
    named = "; ".join(f"{r['doc_id']}: {r['eval_set']}/{r['eval_item']} (overlap {r['overlap']:.2f})" for r in rows)
    more = f"; and {n - len(rows)} more" if n > len(rows) else ""
    return (f"the drop holds eval items in {n} documents: {named}{more}; the manifest in {out} names each "
            "(eval_set, eval_item, matched_text)")


# --- `dedupkit inspect` of a decontamination run ----------------------------------------------

_INSPECT_COLUMNS = ["doc_id", "shard", "row", "keep", "cluster_id", "eval_set", "eval_item", "overlap",
                    "matched_text", "eval_matches", "decon_action"]


def is_decontamination_run(out: str | os.PathLike) -> bool:
    """True when ``out`` is the output of a finished ``dedupkit decontaminate`` (or ``check`` eval) run."""
    from dedupkit.manifest import load_summary

    try:  # load_summary refuses a summary.json that is a FIFO or device instead of blocking on it
        return load_summary(out).get("stage") == DecontaminateStage.name
    except DedupkitError:
        return False


def inspect_decontamination(out: str | os.PathLike, *, doc: str | None = None, cluster: int | None = None,
                            largest: int | None = None,
                            max_members: int = _S.InspectConfig.max_members) -> list[dict]:
    """Findings of a decontamination run: per item (``largest`` items found in most documents, or
    ``cluster``, whose id groups the documents holding one item) its documents with the overlap and
    the matched text; or (``doc``) one document's decision and every item it holds.

    Raises:
        ConfigError: not exactly one of doc, cluster, largest.
        InputError: the document or cluster is not in the run.
    """
    from dedupkit.manifest import read_manifest

    if sum(x is not None for x in (doc, cluster, largest)) != 1:
        raise ConfigError("pass exactly one of --cluster ID, --doc DOC_ID, --largest N")
    t = read_manifest(out, columns=_INSPECT_COLUMNS)  # the contract checked, as for every reader
    if doc is not None:
        rows = t.filter(pc.equal(t.column("doc_id"), doc)).to_pylist()
        if not rows:
            raise InputError(f"doc_id {doc!r} is not in {out}; doc_ids are the --id-column values "
                             "(or 'shard:row' when the run had no --id-column)")
        r = rows[0]
        r["matches"] = json.loads(r.pop("eval_matches")) if r["eval_matches"] else []
        return [{"doc": r}]
    hit = t.filter(pc.is_valid(t.column("cluster_id")))
    cids = hit.column("cluster_id").to_numpy()
    if cluster is not None:
        wanted = [int(cluster)]
        if cluster not in set(cids.tolist()):
            raise InputError(f"no cluster {cluster} in {out}; list them with --largest 10")
    else:
        vals, counts = np.unique(cids, return_counts=True)
        order = np.lexsort((vals, -counts))[:largest]
        wanted = vals[order].tolist()
    found = []
    for c in wanted:
        members = hit.filter(pc.equal(hit.column("cluster_id"), c)).to_pylist()
        members.sort(key=lambda m: (m["shard"], m["row"]))
        first = members[0]
        found.append({"cluster_id": int(c), "eval_set": first["eval_set"], "eval_item": first["eval_item"],
                      "documents": len(members),
                      "members": [{k: m[k] for k in ("doc_id", "shard", "row", "keep", "overlap", "matched_text",
                                                     "decon_action")} for m in members[:max_members]]})
    return found
