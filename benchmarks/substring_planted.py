"""Planted-span benchmark: byte-level precision and recall of `dedupkit substring`.

    python benchmarks/substring_planted.py --pool ../shared/bench/pool.jsonl.gz --work /tmp/substring-planted

Builds (deterministically, --seed) a corpus of --docs real documents (text chunks of the pool) and
plants, at known byte offsets:
  * repeated paragraphs: pool paragraphs not otherwise in the corpus, each inserted between two
    paragraphs of 2 to 20 documents;
  * licence-like headers: 6 synthetic headers (written here, not taken from any licence file), each
    prepended to 40 to 150 documents;
  * quoted passages: runs of 60 to 120 words of another pool chunk, quoted inside a paragraph of
    2 to 6 documents ("As the manual puts it, “...”, and ...": the planted text runs from "As" to "and").
Every planted passage has at least 60 tokens. The truth for ``--keep first`` is every planted copy
but the first in corpus order (``--keep none``: every copy). The stage's spans are compared byte by
byte with the truth: precision = cut bytes that are planted / cut bytes, recall = planted bytes cut /
planted bytes (overall and per kind). Cut bytes outside planted passages are checked against the
corpus: ``unplanted_verified`` is the share of them that lie in passages that really occur twice
(natural repeats of the pool, not errors). Prints a table; writes benchmarks/results/substring_planted.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import table  # noqa: E402

HOLDERS = ["Northwind Labs", "the Quillon Project", "Aster & Vale LLP", "the Brightwater Foundation",
           "Kestrel Systems", "Marlow University Press"]


def headers(rng: random.Random) -> list[str]:
    out = []
    for i, who in enumerate(HOLDERS):
        year = 1998 + 3 * i
        out.append(
            f"Copyright (C) {year}-{year + 7} {who}. All rights reserved. This document is distributed under the "
            f"terms of the {who} Public Document Licence, version {i + 1}.{rng.randint(0, 9)}. You may copy, "
            "quote and redistribute it in any medium provided that this notice, the list of conditions below "
            "and the following disclaimer are kept intact in every copy. THE DOCUMENT IS PROVIDED AS IS, WITHOUT "
            "WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO FITNESS FOR A PARTICULAR "
            f"PURPOSE. Contact {who.lower().replace(' ', '-')}@example.org for permissions beyond this licence.")
    return out


def load_pool(path: str) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def build(pool: list[str], n_docs: int, seed: int):
    """Documents, and the planted copies: (doc, start, end, kind, item) byte ranges, corpus order."""
    rng = random.Random(seed)
    idx = list(range(len(pool)))
    rng.shuffle(idx)
    base = [pool[i] for i in idx[:n_docs]]
    spare = [pool[i] for i in idx[n_docs:n_docs + 2000]]
    # what goes into each document: a list of (position kind, text, kind, item)
    plans: list[list[tuple[str, str, str, int]]] = [[] for _ in range(n_docs)]
    paras = [p for s in spare[:600] for p in s.split("\n\n") if 60 <= len(p.split()) <= 200][:80]
    for item, p in enumerate(paras):
        for d in rng.sample(range(n_docs), rng.randint(2, 20)):
            plans[d].append(("para", p, "paragraph", item))
    for item, h in enumerate(headers(rng)):
        for d in rng.sample(range(n_docs), rng.randint(40, 150)):
            plans[d].append(("head", h, "header", item))
    for item in range(40):
        words = spare[600 + item].split()
        if len(words) < 130:
            continue
        a = rng.randint(0, len(words) - 121)
        q = " ".join(words[a:a + rng.randint(60, 120)])
        for d in rng.sample(range(n_docs), rng.randint(2, 6)):
            plans[d].append(("quote", q, "quote", item))
    docs, planted = [], []
    for d, text in enumerate(base):
        out = text
        spans = []  # (start char, end char, kind, item) in ``out``
        heads = [p for p in plans[d] if p[0] == "head"]
        for _, h, kind, item in heads[:1]:
            out = h + "\n\n" + out
            spans = [(0, len(h), kind, item)]
        for pos_kind, t, kind, item in plans[d]:
            if pos_kind == "head":
                continue
            breaks = [i for i in range(len(out)) if out.startswith("\n\n", i)] if pos_kind == "para" else \
                [i for i in range(len(out)) if out[i] == " "]
            breaks = [b for b in breaks if not any(s <= b < e for s, e, _, _ in spans)] or [len(out)]
            b = rng.choice(breaks)
            ins = ("\n\n" + t) if pos_kind == "para" else (" As the manual puts it, \u201c" + t + "\u201d, and")
            at = b + (2 if pos_kind == "para" else 1)  # the planted text: the paragraph, or the whole quote
            out = out[:b] + ins + out[b:]
            spans = [(s + len(ins) if s >= b else s, e + len(ins) if s >= b else e, k, it) for s, e, k, it in spans]
            spans.append((at, b + len(ins), kind, item))
        docs.append(out)
        for s, e, kind, item in spans:
            bs = len(out[:s].encode())
            planted.append((d, bs, bs + len(out[s:e].encode()), kind, item))
    planted.sort()
    return docs, planted


def repeated_bytes(docs: list[str], k: int) -> list[np.ndarray]:
    """Bytes inside a k-token window that occurs at least twice in the corpus (brute force)."""
    from collections import Counter

    from dedupkit.stages.substring import TOKEN_RE

    wins = []
    for t in docs:
        raw = t.encode()
        pos = np.cumsum([0] + [len(ch.encode()) for ch in t])
        toks = [(int(pos[m.start()]), int(pos[m.end()])) for m in TOKEN_RE.finditer(t)]
        wins.append([(toks[i][0], toks[i + k - 1][1], hash(raw[toks[i][0]:toks[i + k - 1][1]]))
                     for i in range(len(toks) - k + 1)])
    counts = Counter(h for w in wins for _, _, h in w)
    out = []
    for t, w in zip(docs, wins):
        m = np.zeros(len(t.encode()), bool)
        for a, b, h in w:
            if counts[h] >= 2:
                m[a:b] = True
        out.append(m)
    return out


def truth_masks(docs, planted, keep: str):
    seen = set()
    masks = [np.zeros(len(t.encode()), bool) for t in docs]
    per_kind: dict[str, list[np.ndarray]] = {}
    for d, s, e, kind, item in planted:  # corpus order: the first copy of each item is kept
        key = (kind, item)
        if keep == "first" and key not in seen:
            seen.add(key)
            continue
        seen.add(key)
        masks[d][s:e] = True
        per_kind.setdefault(kind, []).append((d, s, e))
    return masks, per_kind


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", required=True)
    ap.add_argument("--work", default="/tmp/substring-planted")
    ap.add_argument("--docs", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--min-tokens", default="50,30")
    ap.add_argument("--out-json", default=str(Path(__file__).resolve().parent / "results" / "substring_planted.json"))
    args = ap.parse_args()
    from dedupkit import api
    from dedupkit.spans import read_spans

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    (work / "data").mkdir(parents=True)
    docs, planted = build(load_pool(args.pool), args.docs, args.seed)
    with open(work / "data" / "docs.jsonl", "w", encoding="utf-8") as fh:
        for i, t in enumerate(docs):
            fh.write(json.dumps({"id": f"p{i}", "text": t}, ensure_ascii=False) + "\n")
    raw = [t.encode() for t in docs]
    rows, results = [], []
    for k in [int(x) for x in args.min_tokens.split(",")]:
        for keep in ("first", "none"):
            out = work / f"out-k{k}-{keep}"
            t0 = time.perf_counter()
            api.substring([str(work / "data")], str(out), min_tokens=k, keep=keep, id_column="id")
            wall = time.perf_counter() - t0
            spans = read_spans(out)
            cut = [np.zeros(len(r), bool) for r in raw]
            for row, s, e in zip(spans.column("row").to_pylist(), spans.column("start").to_pylist(),
                                 spans.column("end").to_pylist()):
                cut[row][s:e] = True
            truth, per_kind = truth_masks(docs, planted, keep)
            tp = sum(int((c & t).sum()) for c, t in zip(cut, truth))
            ncut = sum(int(c.sum()) for c in cut)
            ntruth = sum(int(t.sum()) for t in truth)
            # cut bytes outside the planted passages: do they lie in real repeats? An independent
            # count (Python tokenizer, every k-token window of the corpus) marks the repeated bytes.
            repeated = repeated_bytes(docs, k)
            outside = [c & ~t for c, t in zip(cut, truth)]
            extra = sum(int(o.sum()) for o in outside)
            extra_ok = sum(int((o & r).sum()) for o, r in zip(outside, repeated))
            res = {"min_tokens": k, "keep": keep, "docs": len(docs), "planted_copies": len(planted),
                   "precision": tp / ncut if ncut else 1.0, "recall": tp / ntruth if ntruth else 1.0,
                   "cut_bytes": ncut, "truth_bytes": ntruth, "unplanted_cut_bytes": extra,
                   "unplanted_verified": (extra_ok / extra) if extra else 1.0, "wall_s": round(wall, 2),
                   "recall_by_kind": {}}
            for kind, ranges in per_kind.items():
                tot = sum(e - s for _, s, e in ranges)
                hit = sum(int(cut[d][s:e].sum()) for d, s, e in ranges)
                res["recall_by_kind"][kind] = hit / tot if tot else 1.0
            results.append(res)
            rk = res["recall_by_kind"]
            rows.append([k, keep, f"{res['precision']:.4f}", f"{res['recall']:.4f}",
                         f"{rk.get('paragraph', 1):.4f}", f"{rk.get('header', 1):.4f}", f"{rk.get('quote', 1):.4f}",
                         ncut, ntruth, extra, f"{res['unplanted_verified']:.4f}"])
    print(table(["min tokens", "keep", "precision", "recall", "recall para", "recall header", "recall quote",
                 "cut bytes", "planted bytes", "unplanted cut", "unplanted in real repeats"], rows))
    Path(args.out_json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out_json).write_text(json.dumps({"argv": sys.argv[1:], "results": results}, indent=2))


if __name__ == "__main__":
    main()
