"""What a span stage cut: documents with their cut passages marked (``inspect``, the HTML report)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dedupkit import settings as _S
from dedupkit.errors import InputError
from dedupkit.manifest import read_manifest
from dedupkit.report.model import clip_diff, load_run, load_texts, require_stage
from dedupkit.spans import has_spans, read_spans


@dataclass
class CutDoc:
    """One document and what was cut from it.

    Attributes:
        diff: ``[(tag, text)]`` segments, ``"="`` kept and ``"-"`` cut (the diff format of
            :mod:`dedupkit.report.diff`), or None when the text could not be read.
        spans: the document's spans as dicts (start, end, duplicate_of, duplicate_start, source).
    """

    stage: str
    doc_id: str
    shard: str
    row: int
    keep: bool
    bytes_cut: int
    spans: list[dict[str, Any]]
    diff: list[tuple[str, str]] | None = None
    truncated: bool = False


@dataclass
class CutView:
    docs: list[CutDoc] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    span_stages: list[str] = field(default_factory=list)
    other_stages: list[str] = field(default_factory=list)


def cut_diff(text: str, spans: list[tuple[int, int]]) -> list[tuple[str, str]]:
    """Kept and cut segments of ``text`` for byte spans.

    Example:
        >>> cut_diff("keep THIS keep", [(5, 10)])
        [('=', 'keep '), ('-', 'THIS '), ('=', 'keep')]
    """
    raw = text.encode("utf-8")
    out: list[tuple[str, str]] = []
    pos = 0
    for a, b in spans:
        if a > pos:
            out.append(("=", raw[pos:a].decode("utf-8", "replace")))
        out.append(("-", raw[a:b].decode("utf-8", "replace")))
        pos = b
    if pos < len(raw):
        out.append(("=", raw[pos:].decode("utf-8", "replace")))
    return out


def cut_documents(out: str | os.PathLike, *, doc: str | None = None, largest: int | None = None,
                  stage: str | None = None, max_chars: int = _S.InspectConfig.max_chars) -> CutView:
    """The documents a span stage cut: one by doc_id, or the ``largest`` N by bytes cut.

    Args:
        out: a stage output folder or a ``dedupkit run`` folder.
        doc: a doc_id.
        largest: the N documents with the most bytes cut, per span stage.
        stage: only this stage.
        max_chars: characters of each diff shown.

    Returns:
        A :class:`CutView`; its ``span_stages`` is empty when no stage of ``out`` cut spans.

    Raises:
        ManifestError: ``out`` is not a finished run.
    """
    run = load_run(out)
    view = CutView()
    for sr in require_stage(run, stage):
        if not has_spans(sr.path):
            view.other_stages.append(sr.label)
            continue
        view.span_stages.append(sr.label)
        t = read_spans(sr.path)
        if doc is not None:
            t = t.filter(pc.equal(t.column("doc_id"), doc))
            if not len(t):
                m = read_manifest(sr.path, columns=["doc_id", "keep"])
                hit = m.filter(pc.equal(m.column("doc_id"), doc))
                if len(hit):
                    view.notes.append(f"{doc}: nothing cut by {sr.label}"
                                      f"{'' if hit.column('keep')[0].as_py() else ' (dropped)'}")
                continue
        elif largest is not None and len(t):
            # one integer key per document (shard number, row), so millions of spans stay vectorised
            shard_no = np.asarray(pc.dictionary_encode(t.column("shard")).combine_chunks().indices, np.int64)
            key = shard_no * (1 << 40) + t.column("row").to_numpy()
            nbytes = (t.column("end").to_numpy() - t.column("start").to_numpy()).astype(np.int64)
            uniq, inv = np.unique(key, return_inverse=True)
            size = np.bincount(inv, weights=nbytes)
            top = uniq[np.lexsort((uniq, -size))[:largest]]  # most bytes first, ties by corpus order
            t = t.filter(pa.array(np.isin(key, top)))
        if not len(t):
            continue
        man = read_manifest(sr.path, columns=["shard", "row", "keep"])
        keep = {(s, r): k for s, r, k in zip(man.column("shard").to_pylist(), man.column("row").to_pylist(),
                                             man.column("keep").to_pylist())}
        by_doc: dict[tuple[str, int], list[dict]] = {}
        ids: dict[tuple[str, int], str] = {}
        for rec in t.to_pylist():
            key = (rec["shard"], rec["row"])
            by_doc.setdefault(key, []).append(rec)
            ids[key] = rec["doc_id"]
        texts, notes = load_texts(sr.summary, list(by_doc), max_chars=1 << 40)
        view.notes.extend(notes)
        docs = []
        for key, recs in by_doc.items():
            spans = [{k: r[k] for k in ("start", "end", "duplicate_of", "duplicate_start", "source")} for r in recs]
            cd = CutDoc(sr.label, ids[key], key[0], key[1], bool(keep.get(key, True)),
                        sum(r["end"] - r["start"] for r in recs), spans)
            if key in texts:
                cd.diff, cd.truncated = clip_diff(cut_diff(texts[key][0], [(r["start"], r["end"]) for r in recs]),
                                                  max_chars)
            docs.append(cd)
        docs.sort(key=lambda d: (-d.bytes_cut, d.shard, d.row))
        view.docs.extend(docs)
    if doc is not None and view.span_stages and not view.docs and not view.notes:
        raise InputError(f"doc_id {doc!r} is not in {out}; doc_ids are the --id-column values "
                         "(or 'shard:row' when the run had no --id-column)")
    return view


def cut_doc_dict(d: CutDoc) -> dict[str, Any]:
    """A JSON-ready view of a :class:`CutDoc`."""
    return {"stage": d.stage, "doc_id": d.doc_id, "shard": d.shard, "row": d.row, "keep": d.keep,
            "bytes_cut": d.bytes_cut, "spans": d.spans, "diff": d.diff, "truncated": d.truncated}


__all__ = ["CutDoc", "CutView", "cut_diff", "cut_documents", "cut_doc_dict"]
