#!/usr/bin/env python
"""Build the `docs-quotes` cluster suite: partial copies and quotations.

Source: the documentation in the Sphinx 7.4.7 and pytest 8.3.3 sdists from PyPI (doc/**/*.rst,
BSD-2-Clause and MIT, pytest's changelog included); every
reST section with >= 40 words is a document. Seeded variants, each placed in the truth cluster of
the document a careful reader would say it copies:
  - `excerpt`: a contiguous 50-90% of a section's words (a truncated / partial copy) -> that section;
  - `quoted`: a page quoting 60-100% of a section, framed by the opening (and sometimes the closing)
    words of another real section, the frame at most half as long as the quote -> the quoted section
    (the framing host keeps its own cluster: sharing its opening does not make the page a copy of it);
  - `insert`: a real section with a short passage (10-25% of another section's words, at most a fifth
    of the result) inserted at a paragraph break -> the host section (an edited copy of it); the
    quoted section does not claim it.

    python benchmarks/suites/build_docs_quotes.py /work/suites/docs-quotes [--raw /work/suites/raw]
"""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import suite_args, variant_table, UnionFind, fetch_sdist, norm_ws, rst_sections, words, write_suite  # noqa: E402

SEED = 1303
SOURCES = (("sphinx==7.4.7", "doc"), ("pytest==8.3.3", "doc/en"))
MIN_WORDS = 40
SOURCE_SHARE = 0.45  # sections (>= 80 words) that get a variant


def spans(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in re.finditer(r"\S+", text)]


def cut(text: str, sp, a: int, b: int) -> str:
    """Words a..b-1 of text, with the original spacing and line breaks between them."""
    return text[sp[a][0]: sp[b - 1][1]]


def build(raw: Path) -> list[dict]:
    docs = []
    for spec, sub in SOURCES:
        top = fetch_sdist(raw, spec)
        for f in sorted((top / sub).rglob("*.rst")):
            if "announce" in f.parts:  # release announcements repeat the changelog's sections
                continue
            for _, text in rst_sections(f.read_text(encoding="utf-8")):
                if len(words(text)) >= MIN_WORDS:
                    docs.append(text)
    rng = random.Random(SEED)
    rows = [{"text": t, "cluster": i, "level": "original"} for i, t in enumerate(docs)]
    n = len(docs)
    for i in range(n):
        src = docs[i]
        sp = spans(src)
        if len(sp) < 80 or rng.random() >= SOURCE_SHARE:
            continue
        kind = rng.choices(["excerpt", "quoted", "insert"], [0.4, 0.4, 0.2])[0]
        if kind == "excerpt":
            k = int(len(sp) * rng.uniform(0.5, 0.9))
            a = rng.randrange(0, len(sp) - k + 1)
            rows.append({"text": cut(src, sp, a, a + k), "cluster": i, "level": "excerpt", "source": i})
        elif kind == "quoted":
            k = int(len(sp) * rng.uniform(0.6, 1.0))
            a = rng.randrange(0, len(sp) - k + 1)
            quote = cut(src, sp, a, a + k)
            h = rng.choice([j for j in range(n) if j != i])
            hs = spans(docs[h])
            budget = max(8, k // 2)
            lead = min(len(hs), max(8, int(budget * rng.uniform(0.4, 1.0))))
            page = cut(docs[h], hs, 0, lead) + "\n\n" + quote
            if rng.random() < 0.4 and len(hs) > lead + 8:
                tail = min(len(hs) - lead, max(4, budget - lead))
                if tail >= 4:
                    page += "\n\n" + cut(docs[h], hs, len(hs) - tail, len(hs))
            rows.append({"text": page, "cluster": i, "level": "quoted", "source": i, "host": h})
        else:
            h = rng.choice([j for j in range(n) if j != i])
            host = docs[h]
            hw = len(spans(host))
            k = max(5, min(int(len(sp) * rng.uniform(0.10, 0.25)), hw // 4))
            a = rng.randrange(0, len(sp) - k + 1)
            breaks = [m.end() for m in re.finditer(r"\n\s*\n", host)] or [len(host)]
            at = rng.choice(breaks)
            text = host[:at] + cut(src, sp, a, a + k) + "\n\n" + host[at:]
            rows.append({"text": text, "cluster": h, "level": "insert", "source": h, "quoted_from": i})
    uf = UnionFind()
    first = {}
    for r in rows:  # identical texts (repeated boilerplate sections) always share a cluster
        uf.union(r["cluster"], first.setdefault(norm_ws(r["text"]), r["cluster"]))
    for r in rows:
        r["cluster"] = uf.find(r["cluster"])
    for key in ("source", "host", "quoted_from"):
        for r in rows:
            if key in r:
                r[key] = f"s{r[key]}"
    return rows


def main() -> None:
    a = suite_args(__doc__)
    rows = build(a.raw)
    stats = variant_table(rows)
    md = f"""# docs-quotes: partial copies and quotations

Cluster suite of kind (c): sections of the Sphinx 7.4.7 and pytest 8.3.3 documentation (PyPI sdists,
`doc/**/*.rst` and `doc/en/**/*.rst`, BSD-2-Clause and MIT; pytest's changelog is one of its files; pytest's
`announce/` folder is left out: its release mails repeat the changelog's sections), plus partial copies and quotations of them built from the same real sections.

## How it was built
`python benchmarks/suites/build_docs_quotes.py OUT` (dedupkit repository), seed {SEED}.
1. Documents: every reST section (title to next heading, any level) with >= {MIN_WORDS} words.
2. {SOURCE_SHARE:.0%} of the sections with >= 80 words (seeded) get one variant:
   - `excerpt` (p 0.4): a contiguous 50-90% of the section's words, original spacing kept -> the
     section's cluster (a partial copy);
   - `quoted` (p 0.4): a page quoting a contiguous 60-100% of the section, after the opening words
     of another real section (and, p 0.4, before its closing words), the frame at most half the
     quote -> the quoted section's cluster; the framing section stays in its own;
   - `insert` (p 0.2): another real section with a passage of 10-25% of this section's words (at
     most a quarter of the host's length) inserted at a paragraph break -> the host's cluster (an
     edited copy of the host); the quoted section does not claim it.
3. Texts identical after collapsing whitespace and case always share a cluster. Shuffled, ids
   `d000000`... `truth.parquet`: `id`, `cluster`, `level`, `source` / `host` / `quoted_from`
   (build-time section numbers).

## Counts
{{COUNTS}}
{stats}

## Caveats
- The variants are constructed (seeded) from real text; the cut points are word boundaries, not
  sentence boundaries.
- `quoted` pages share their opening with the framing section: a tool that links them to it merges
  two clusters (a false merge, counted in precision).
- Whether a 50% excerpt "is" its source is a judgement; here it is (a partial copy).
"""
    counts = write_suite(a.out, rows, md, random.Random(SEED))
    print(counts, stats, sep="\n")


if __name__ == "__main__":
    main()
