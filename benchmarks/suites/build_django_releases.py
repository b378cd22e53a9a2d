#!/usr/bin/env python
"""Build the `django-releases` cluster suite: templated release notes with the same advisories and
fixes copied into the notes of several release series.

Source: the Django 5.1.4 sdist from PyPI (docs/releases/*.txt). Django publishes a release on
several supported series on one day; each series' notes repeat the same security advisory and the
same backported bug fix, with small wording changes, while the per-release introductions are
filled-in templates ("Django 3.2.13 fixes two security issues ... in 3.2.12"). Documents:
  - `intro`: a release's title, date and opening paragraph (templated; each release its own doc);
  - `advisory`: one security section of a point release; the same advisory is one truth cluster:
    the CVE ids in its heading, else (release date, heading) when it has none;
  - `bugfix`: one bullet of a point release's "Bugfixes" section; the same fix is one truth
    cluster: (release date, the :ticket: numbers it cites); a bullet citing no ticket is its own;
  - `feature`: a section of a feature release's notes ("What's new in Django 4.0") with >= 20 words,
    each its own cluster.
Texts identical after collapsing whitespace and case are always one cluster.

    python benchmarks/suites/build_django_releases.py /work/suites/django-releases [--raw /work/suites/raw]
"""

from __future__ import annotations

import random
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import suite_args, UnionFind, fetch_sdist, jaccard5, norm_ws, rst_sections, word_ratio, words, write_suite  # noqa: E402

SEED = 1301
VERSION = "5.1.4"
DATE = re.compile(r"^\*([A-Z][a-z]+ \d+, \d{4})\*", re.M)
CVE = re.compile(r"CVE-\d{4}-\d+")
TICKET = re.compile(r":ticket:`(\d+)`")
POINT = re.compile(r"^\d+\.\d+\.\d+$")
MASK = re.compile(r"\d+(?:\.\d+)*|(?:January|February|March|April|May|June|July|August|September|October|"
                  r"November|December) \d+, \d{4}")


def bullets(body: str) -> list[str]:
    out, cur = [], []
    for line in body.splitlines():
        if line.startswith("* "):
            if cur:
                out.append("\n".join(cur).strip())
            cur = [line[2:]]
        elif cur and (line.startswith("  ") or not line.strip()):
            cur.append(line.strip())
        elif cur:
            out.append("\n".join(cur).strip())
            cur = []
    if cur:
        out.append("\n".join(cur).strip())
    return [b for b in out if b]


def build(raw: Path) -> list[dict]:
    top = fetch_sdist(raw, f"django=={VERSION}")
    rows = []
    for f in sorted((top / "docs" / "releases").glob("*.txt")):
        rel = f.stem
        if rel in ("index", "security"):
            continue
        text = f.read_text(encoding="utf-8")
        m = DATE.search(text)
        date = m.group(1) if m else None
        point = bool(POINT.match(rel))
        for k, (path, sec) in enumerate(rst_sections(text)):
            head = path[-1] if path else ""
            if len(path) <= 1:
                rows.append({"text": sec, "key": ("intro", rel), "level": "intro", "release": rel})
            elif point and head.strip().lower() in ("bugfixes", "bug fixes"):
                seen: Counter = Counter()
                for j, b in enumerate(bullets(sec.split("\n", 1)[1] if "\n" in sec else "")):
                    t = tuple(sorted(set(TICKET.findall(b))))
                    seen[t] += 1  # two bullets of one release citing one ticket are two fixes
                    key = ("fix", date, t, seen[t]) if t and date else ("fix1", rel, k, j)
                    rows.append({"text": b, "key": key, "level": "bugfix", "release": rel})
            elif point:
                cves = tuple(sorted(set(CVE.findall(head))))
                key = ("adv", cves) if cves else ("sec", date, norm_ws(head)) if date else ("sec1", rel, k)
                rows.append({"text": sec, "key": key, "level": "advisory" if cves else "section", "release": rel})
            elif len(words(sec)) >= 20:
                rows.append({"text": sec, "key": ("feat", rel, k), "level": "feature", "release": rel})
    uf = UnionFind()
    bodies = {}
    for i, r in enumerate(rows):
        uf.union(("row", i), ("k",) + r["key"])
        uf.union(("k",) + r["key"], ("t", norm_ws(r["text"])))
        if r["level"] != "intro":  # the same notice reused in another release's notes
            body = r["text"].split("\n", 1)[1] if r["level"] != "bugfix" and "\n" in r["text"] else r["text"]
            if len(words(body)) >= 10:
                bodies[i] = MASK.sub("#", body)
                uf.union(("k",) + r["key"], ("b", " ".join(words(bodies[i]))))
    # ... or reworded a little: bodies of >= 20 words aligning at >= 0.9 (difflib word ratio; pairs
    # sharing a run of 8 words are compared)
    inv = defaultdict(set)
    for i, b in bodies.items():
        w = words(b)
        if len(w) >= 20:
            for k in range(len(w) - 7):
                inv[tuple(w[k:k + 8])].add(i)
    cand = set()
    for ids in inv.values():
        if 1 < len(ids) < 50:
            cand |= {(a, b) for a in ids for b in ids if a < b and rows[a]["release"] != rows[b]["release"]}
    for a, b in sorted(cand):
        if word_ratio(bodies[a], bodies[b]) >= 0.9:
            uf.union(("row", a), ("row", b))
    for i, r in enumerate(rows):
        r["cluster"] = uf.find(("row", i))
        del r["key"]
    return rows


def main() -> None:
    a = suite_args(__doc__)
    rows = build(a.raw)
    # statistics for SUITE.md: pairwise word-5-gram Jaccard inside truth clusters (never used for truth)
    by = {}
    for r in rows:
        by.setdefault(r["cluster"], []).append(r["text"])
    js = sorted(jaccard5(g[0], x) for g in by.values() if len(g) > 1 for x in g[1:])
    q = lambda p: js[min(len(js) - 1, int(p * len(js)))] if js else float("nan")  # noqa: E731
    stats = (f"- Jaccard (word 5-grams) of each cluster member to the cluster's first doc: p10 {q(.1):.3f}, "
             f"p25 {q(.25):.3f}, median {q(.5):.3f}, p75 {q(.75):.3f}; {sum(j >= .8 for j in js):,} of {len(js):,} >= 0.8")
    md = f"""# django-releases: templated release notes, one advisory or fix copied into several series

Cluster suite of kind (a), families of templated / close-variant texts: the release notes of
Django {VERSION} (PyPI sdist, `docs/releases/*.txt`, BSD-3-Clause documentation).

## How it was built
`python benchmarks/suites/build_django_releases.py OUT` (dedupkit repository), seed {SEED}.
Documents (kind in `level`):
- `intro`: each release's title, date and opening paragraph; filled-in templates
  ("Django 3.2.13 fixes two security issues ... in 3.2.12"), every release its own cluster.
- `advisory`: a security section of a point release (CVE ids in its heading); the same advisory
  published in the notes of several series is one cluster (same CVE ids).
- `section`: another section of a point release; one cluster per (release date, heading); a
  release without a date line keeps its sections apart.
- `bugfix`: one bullet of a point release's "Bugfixes" section; the same backported fix is one
  cluster: (release date, cited :ticket: numbers, k-th such bullet of its release: two bullets of one
  release citing one ticket are two fixes). A bullet citing no ticket is its own cluster.
- `feature`: a section (>= 20 words) of a feature release's notes, its own cluster.
- Texts identical after collapsing whitespace and case always share a cluster, and so do two
  sections or bullets (not intros) whose bodies (heading left out; >= 10 words) are identical once
  numbers, version numbers and dates are masked (words only, punctuation ignored): the same notice reused in another release's notes,
  under another heading or with its versions updated ("Backwards incompatible changes in 1.x");
  and two such bodies of >= 20 words in different releases whose words align at >= 0.9 (difflib
  matching-block ratio; the notice reworded a little, "because" -> "since").
Shuffled with `random.Random({SEED})`, ids `d000000`... `truth.parquet`: `id`, `cluster`, `level`, `release`.

## Counts
{{COUNTS}}
{stats}

## Caveats
- Truth comes from structure (CVE id, date + ticket), verbatim reuse and a strict word-alignment rule
  (difflib >= 0.9 for reworded notices), never from shingles or MinHash: a fix described
  differently in two series is one cluster, and two releases' templated intros are different
  documents even when they differ only in version numbers (what a reader calls a different release).
- Two series' bullets for one ticket are matched by their order among that release's bullets citing
  the ticket; if the series list them in a different order the truth pairs the wrong ones (rare).
- Short documents (bullets of 10-60 words) dominate; word 5-gram methods see few shingles per doc.
"""
    counts = write_suite(a.out, rows, md, random.Random(SEED))
    print(counts, stats, sep="\n")


if __name__ == "__main__":
    main()
