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

import argparse
import random
import sys
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import UnionFind, fetch_sdist, jaccard5, norm_ws, rst_sections, word_ratio, words, write_suite  # noqa: E402

SEED = 1302
OLD, NEW = "3.2.25", "5.1.4"
KEYS = 1700  # heading keys sampled (both editions' sections under a sampled key are kept)
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


def build(raw: Path) -> list[dict]:
    old, new = sections(fetch_sdist(raw, f"django=={OLD}")), sections(fetch_sdist(raw, f"django=={NEW}"))
    rng = random.Random(SEED)
    keys = sorted(set(old) | set(new))
    pick = set(rng.sample(keys, min(KEYS, len(keys))))
    rows = [{"text": old[k], "edition": OLD, "key": k} for k in sorted(old) if k in pick]
    rows += [{"text": new[k], "edition": NEW, "key": k} for k in sorted(new) if k in pick]
    uf = UnionFind()
    ratio = {}
    idx = {(r["edition"], r["key"]): i for i, r in enumerate(rows)}
    for k in sorted(pick):
        if k in old and k in new:
            r = word_ratio(old[k], new[k])
            ratio[k] = r
            if r >= SAME:
                uf.union(idx[(OLD, k)], idx[(NEW, k)])
    # moved sections: an unmatched 5.1 section and an unmatched 3.2 section with the same title
    matched = {k for k, r in ratio.items() if r >= SAME}
    by_title = defaultdict(list)
    for i, r in enumerate(rows):
        if r["edition"] == OLD and r["key"] not in matched and r["key"][1]:
            by_title[r["key"][1][-1]].append(i)
    moved = 0
    for i, r in enumerate(rows):
        if r["edition"] == NEW and r["key"] not in matched and r["key"][1]:
            for j in by_title.get(r["key"][1][-1], []):
                if word_ratio(rows[j]["text"], r["text"]) >= SAME:
                    uf.union(i, j)
                    moved += 1
                    break
    text_first = {}
    for i, r in enumerate(rows):
        uf.union(i, text_first.setdefault(norm_ws(r["text"]), i))
    for i, r in enumerate(rows):
        r["cluster"] = uf.find(i)
    size = Counter(r["cluster"] for r in rows)
    for r in rows:
        k = r.pop("key")
        r["section"] = f"{k[0]} :: {' / '.join(k[1])}" + (f" #{k[2]}" if k[2] > 1 else "")
        if size[r["cluster"]] == 1:
            r["level"] = "single"
        elif k in ratio and ratio[k] >= SAME:
            q = ratio[k]
            r["level"] = "identical" if norm_ws(old[k]) == norm_ws(new[k]) else "revised" if q >= 0.9 else "edited"
        else:
            r["level"] = "moved-or-repeated"
    print(f"moved matches: {moved}", file=sys.stderr)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--raw", type=Path, default=Path("/work/suites/raw"))
    a = ap.parse_args()
    a.raw.mkdir(parents=True, exist_ok=True)
    rows = build(a.raw)
    by = defaultdict(list)
    for r in rows:
        by[r["cluster"]].append(r)
    lines = []
    for lv in ("identical", "revised", "edited", "moved-or-repeated"):
        js = sorted(jaccard5(g[0]["text"], g[1]["text"]) for g in by.values() if len(g) > 1 and g[0]["level"] == lv)
        if js:
            lines.append(f"| {lv} | {len(js):,} | {js[len(js) // 2]:.3f} | {sum(j >= .8 for j in js):,} | "
                         f"{sum(j < .5 for j in js):,} |")
    stats = ("| level | clusters | median Jaccard (word 5-grams) | >= 0.8 | < 0.5 |\n|---|---|---|---|---|\n"
             + "\n".join(lines))
    md = f"""# django-editions: two editions of one documentation set

Cluster suite of kind (b): the documentation of Django {OLD} and {NEW} (PyPI sdists,
`docs/**/*.txt` without the release notes; BSD-3-Clause), one document per reST section.

## How it was built
`python benchmarks/suites/build_django_editions.py OUT` (dedupkit repository), seed {SEED}.
1. Every section (any heading level, from its title to the next heading) with >= {MIN_WORDS} words
   of both editions, keyed by (file, heading path, occurrence).
2. {KEYS} keys sampled (`random.Random({SEED})`); both editions' sections under a sampled key are kept.
3. Truth: the two editions of one key are one cluster when {NEW}'s text is a revision of {OLD}'s:
   difflib's matching-block ratio over the word sequences >= {SAME} (at least half of the words align
   in order). Else (rewritten, added, removed) each is its own cluster. An unmatched {NEW} section
   is matched to an unmatched {OLD} section with the same title elsewhere (moved) under the same
   rule. Texts identical after collapsing whitespace and case always share a cluster.
4. Shuffled, ids `d000000`... `truth.parquet`: `id`, `cluster`, `level` (identical / revised
   (ratio >= 0.9) / edited (0.5-0.9) / moved-or-repeated / single), `edition`, `section`.

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
