#!/usr/bin/env python
"""Build the `django-editions` cluster suite: two editions of one document set.

Source: the documentation shipped in the Django 3.2.25 and 5.1.4 sdists from PyPI (docs/**/*.txt,
release notes excluded; BSD-3-Clause). Every reST section (any heading level, title included) with
>= 30 words is a document. A section of 3.2 and the section of 5.1 under the same heading path in
the same file are one truth cluster when 5.1's text is a revision of 3.2's: at least half of their
words align in order (difflib matching-block ratio over word sequences >= 0.5, the view of a reader
comparing the two editions side by side). A section rewritten beyond that, added or removed is
its own cluster. Sections that moved to another file are matched by identical title under the same
rule; texts identical after collapsing whitespace and case are always one cluster.

    python benchmarks/suites/build_django_editions.py /work/suites/django-editions [--raw /work/suites/raw]
"""

from __future__ import annotations

import random
import sys
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import pair_level_table, sampled_clusters, suite_args, UnionFind, fetch_sdist, jaccard5, norm_ws, rst_sections, word_ratio, words, write_suite  # noqa: E402

SEED = 1302
OLD, NEW = "3.2.25", "5.1.4"
DOCS = 3000  # whole truth clusters are sampled until this many documents
MIN_WORDS = 30
SAME = 0.5


def sections(top: Path) -> dict:
    out = {}
    for f in sorted((top / "docs").rglob("*.txt")):
        rel = f.relative_to(top / "docs").as_posix()
        if rel.startswith("releases/"):
            continue
        seen: Counter = Counter()
        for path, text in rst_sections(f.read_text(encoding="utf-8")):
            seen[path] += 1
            if len(words(text)) >= MIN_WORDS:
                out[(rel, path, seen[path])] = text
    return out


def _grams(text: str, n: int = 8) -> set:
    w = words(text)
    return {tuple(w[i:i + n]) for i in range(max(1, len(w) - n + 1))}


def build(raw: Path) -> list[dict]:
    old, new = sections(fetch_sdist(raw, f"django=={OLD}")), sections(fetch_sdist(raw, f"django=={NEW}"))
    rows = [{"text": old[k], "edition": OLD, "key": k} for k in sorted(old)]
    rows += [{"text": new[k], "edition": NEW, "key": k} for k in sorted(new)]
    idx = {(r["edition"], r["key"]): i for i, r in enumerate(rows)}
    uf = UnionFind()
    level = {}
    for k in sorted(set(old) & set(new)):
        q = word_ratio(old[k], new[k])
        if q >= SAME:
            uf.union(idx[(OLD, k)], idx[(NEW, k)])
            lv = "identical" if norm_ws(old[k]) == norm_ws(new[k]) else "revised" if q >= 0.9 else "edited"
            level[idx[(OLD, k)]] = level[idx[(NEW, k)]] = lv
    # sections moved or renamed: an unmatched 5.1 section and the unmatched 3.2 section that aligns best
    # with it (>= SAME); candidates share a run of 8 words (a lookup aid: the truth is the ratio)
    free_old = [i for i, r in enumerate(rows) if r["edition"] == OLD and i not in level]
    inv = defaultdict(set)
    for i in free_old:
        for g in _grams(rows[i]["text"]):
            inv[g].add(i)
    moved = 0
    for i, r in enumerate(rows):
        if r["edition"] != NEW or i in level:
            continue
        cands = sorted({j for g in _grams(r["text"]) for j in inv.get(g, ()) if j not in level})
        best = max(((word_ratio(rows[j]["text"], r["text"]), -j) for j in cands), default=(0, 0))
        if best[0] >= SAME:
            j = -best[1]
            uf.union(i, j)
            level[i] = level[j] = "moved"
            moved += 1
    text_first = {}
    for i, r in enumerate(rows):
        uf.union(i, text_first.setdefault(norm_ws(r["text"]), i))
    out = []
    for c, members in sampled_clusters(uf, len(rows), SEED, DOCS):  # whole truth clusters (seeded)
        for i in members:
            r = rows[i]
            k = r["key"]
            lv = level.get(i, "single") if len(members) > 1 else "single"
            out.append({"text": r["text"], "cluster": c, "level": "repeated" if lv == "single" else lv,
                        "edition": r["edition"],
                        "section": f"{k[0]} :: {' / '.join(k[1])}" + (f" #{k[2]}" if k[2] > 1 else "")})
            if len(members) == 1:
                out[-1]["level"] = "single"
    print(f"sections {len(old):,} + {len(new):,}; moved matches: {moved}", file=sys.stderr)
    return out


def main() -> None:
    a = suite_args(__doc__)
    rows = build(a.raw)
    stats = pair_level_table(rows)
    md = f"""# django-editions: two editions of one documentation set

Cluster suite of kind (b): the documentation of Django {OLD} and {NEW} (PyPI sdists,
`docs/**/*.txt` without the release notes; BSD-3-Clause), one document per reST section.

## How it was built
`python benchmarks/suites/build_django_editions.py OUT` (dedupkit repository), seed {SEED}.
1. Every section (any heading level, from its title to the next heading) with >= {MIN_WORDS} words
   of both editions, keyed by (file, heading path, occurrence).
2. Truth: the two editions of one key are one cluster when {NEW}'s text is a revision of {OLD}'s:
   difflib's matching-block ratio over the word sequences >= {SAME} (at least half of the words align
   in order). Else (rewritten, added, removed) each is its own cluster. A {NEW} section left unmatched
   is paired with the unmatched {OLD} section (any file, any title) that aligns best with it, if
   >= {SAME} (moved or renamed; candidates are looked up by a shared run of 8 words, the decision is
   the ratio). Texts identical after collapsing whitespace and case always share a cluster. Sections
   of one edition are never paired by similarity: templated siblings (the attribute lists of
   `DayArchiveView` and `MonthArchiveView`) are different documents.
3. Whole truth clusters sampled (`random.Random({SEED})`) until {DOCS:,} documents.
4. Shuffled, ids `d000000`... `truth.parquet`: `id`, `cluster`, `level` (identical / revised
   (ratio >= 0.9) / edited (0.5-0.9) / moved / repeated (identical text elsewhere) / single),
   `edition`, `section`.

## Counts
{{COUNTS}}
{stats}

## Caveats
- The 0.5 word-alignment rule is a judgement of "the same section, revised" that does not use
  shingles or MinHash; sections near the rule's edge are arguable either way.
- Many sections did not change between the editions (`identical`): the exact stage finds them.
- A section's text includes its heading and reST markup (roles, directives) as shipped.
"""
    counts = write_suite(a.out, rows, md, random.Random(SEED))
    print(counts, stats, sep="\n")


if __name__ == "__main__":
    main()
