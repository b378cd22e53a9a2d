#!/usr/bin/env python
"""Build the `django-paragraphs` cluster suite: two editions of one document set, one short
paragraph per document (the unit of a verse-per-document corpus: few shingles per document, many
near-identical but distinct paragraphs).

Source: the documentation in the Django 3.2.25 and 5.1.4 sdists from PyPI (docs/**/*.txt, release
notes excluded; BSD-3-Clause). A document is one prose paragraph (a blank-line separated block, not
indented, not a directive) of >= 8 words. Truth: inside each section present in both editions
(file + heading path), the paragraphs of 3.2 and 5.1 are paired greedily by difflib's word
matching-block ratio, highest first, when it reaches 0.5 (the same paragraph, revised). A paragraph
left unpaired is paired with an unpaired paragraph of the other edition anywhere in the docs when
their ratio reaches 0.8 (moved). Texts identical after collapsing whitespace and case are one
cluster, and so are texts with the same word sequence. Paragraphs of one edition are never paired
by similarity: templated siblings ("Defaults to ``True``." in two options) are different documents.

    python benchmarks/suites/build_django_paragraphs.py /work/suites/django-paragraphs [--raw /work/suites/raw]
"""

from __future__ import annotations

import random
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import pair_level_table, sampled_clusters, suite_args, UnionFind, fetch_sdist, jaccard5, norm_ws, rst_sections, word_ratio, words, write_suite  # noqa: E402
from build_django_editions import NEW, OLD, _grams  # noqa: E402

SEED = 1305
DOCS = 4000
MIN_WORDS = 8
SAME, MOVED = 0.5, 0.8


def paragraphs(top: Path) -> dict:
    """(file, heading path, occurrence) -> the section's prose paragraphs."""
    out = {}
    for f in sorted((top / "docs").rglob("*.txt")):
        rel = f.relative_to(top / "docs").as_posix()
        if rel.startswith("releases/"):
            continue
        seen: dict = defaultdict(int)
        for path, text in rst_sections(f.read_text(encoding="utf-8")):
            seen[path] += 1
            body = text.split("\n", 1)[1] if "\n" in text else ""
            paras = []
            for block in body.split("\n\n"):
                block = block.strip("\n")
                lines = block.splitlines()
                if not lines or lines[0].startswith((" ", "\t", "..", ":")) or len(words(block)) < MIN_WORDS:
                    continue
                paras.append(block)
            if paras:
                out[(rel, path, seen[path])] = paras
    return out


def build(raw: Path) -> list[dict]:
    old, new = paragraphs(fetch_sdist(raw, f"django=={OLD}")), paragraphs(fetch_sdist(raw, f"django=={NEW}"))
    rows = []
    for ed, secs in ((OLD, old), (NEW, new)):
        for k in sorted(secs):
            rows += [{"text": p, "edition": ed, "key": k} for p in secs[k]]
    where = defaultdict(list)
    for i, r in enumerate(rows):
        where[(r["edition"], r["key"])].append(i)
    uf = UnionFind()
    level = {}
    for k in sorted(set(old) & set(new)):
        pairs = sorted(((word_ratio(rows[i]["text"], rows[j]["text"]), i, j) for i in where[(OLD, k)]
                        for j in where[(NEW, k)]), key=lambda x: (-x[0], x[1], x[2]))
        for q, i, j in pairs:
            if q < SAME:
                break
            if i in level or j in level:
                continue
            uf.union(i, j)
            level[i] = level[j] = "identical" if norm_ws(rows[i]["text"]) == norm_ws(rows[j]["text"]) else \
                "revised" if q >= 0.9 else "edited"
    inv = defaultdict(set)
    for i, r in enumerate(rows):
        if r["edition"] == OLD and i not in level:
            for g in _grams(r["text"], 5):
                inv[g].add(i)
    for j, r in enumerate(rows):
        if r["edition"] != NEW or j in level:
            continue
        cands = sorted({i for g in _grams(r["text"], 5) for i in inv.get(g, ()) if i not in level})
        best = max(((word_ratio(rows[i]["text"], r["text"]), -i) for i in cands), default=(0, 0))
        if best[0] >= MOVED:
            uf.union(j, -best[1])
            level[j] = level[-best[1]] = "moved"
    first = {}
    for i, r in enumerate(rows):
        uf.union(i, first.setdefault(" ".join(words(r["text"])), i))
    out = []
    for c, members in sampled_clusters(uf, len(rows), SEED, DOCS):
        for i in members:
            r = rows[i]
            lv = "single" if len(members) == 1 else level.get(i, "repeated")
            out.append({"text": r["text"], "cluster": c, "level": lv, "edition": r["edition"],
                        "section": f"{r['key'][0]} :: {' / '.join(r['key'][1])}"})
    print(f"paragraphs {sum(map(len, old.values())):,} + {sum(map(len, new.values())):,}", file=sys.stderr)
    return out


def main() -> None:
    a = suite_args(__doc__)
    rows = build(a.raw)
    nw = sorted(len(words(r["text"])) for r in rows)
    stats = (f"- words per document: median {nw[len(nw) // 2]}, p10 {nw[len(nw) // 10]}, p90 {nw[9 * len(nw) // 10]}\n\n"
             + pair_level_table(rows))
    md = f"""# django-paragraphs: two editions of one document set, a short paragraph per document

Cluster suite of kind (b) at the scale of a verse-per-document corpus: prose paragraphs of the
Django {OLD} and {NEW} documentation (PyPI sdists, `docs/**/*.txt` without the release notes;
BSD-3-Clause).

## How it was built
`python benchmarks/suites/build_django_paragraphs.py OUT` (dedupkit repository), seed {SEED}.
1. A document is one prose paragraph (blank-line separated, not indented, not a directive or field
   list) with >= {MIN_WORDS} words, of either edition.
2. Truth: inside each section present in both editions (file + heading path), paragraphs of the two
   editions are paired greedily by difflib's word matching-block ratio (highest first) when it is
   >= {SAME} (the same paragraph, revised). An unpaired {NEW} paragraph is paired with an unpaired
   {OLD} paragraph anywhere when their ratio is >= {MOVED} (moved; candidates share a run of 5 words).
   Texts with the same word sequence (case, whitespace and punctuation ignored: "filters:" and
   "filters.") share a cluster. Paragraphs of one edition
   are never paired by similarity: templated siblings are different documents.
3. Whole truth clusters sampled (`random.Random({SEED})`) until {DOCS:,} documents; shuffled, ids
   `d000000`... `truth.parquet`: `id`, `cluster`, `level` (identical / revised (>= 0.9) / edited /
   moved / repeated / single), `edition`, `section`.

## Counts
{{COUNTS}}
{stats}

## Caveats
- Short documents: a 10-word paragraph has 6 word 5-grams, so one changed word moves Jaccard a lot.
- A paragraph moved to another section and edited below {MOVED} is labelled a different document.
- Identical boilerplate sentences ("See :ref:`...` for details.") repeated across the docs are one
  cluster, as in every suite here.
"""
    counts = write_suite(a.out, rows, md, random.Random(SEED))
    print(counts, stats, sep="\n")


if __name__ == "__main__":
    main()
