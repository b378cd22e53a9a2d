"""Shared pieces of the suite build scripts: reST section splitting, union-find truth, and writing a
suite folder in the format of ../shared/data (docs.parquet + docs.jsonl with id/text, truth.parquet
with id/cluster/level, SUITE.md)."""

from __future__ import annotations

import json
import re
import tarfile
import unicodedata
from pathlib import Path

_ADORN = set("=-~^\"'`*+#:._")


def extract_sdist(tarball: Path, dest: Path) -> Path:
    """Unpack a source distribution once into dest; return its top folder."""
    with tarfile.open(tarball) as tf:
        top = tf.getnames()[0].split("/")[0]
        if not (dest / top).exists():
            tf.extractall(dest)
    return dest / top


def suite_args(doc: str):
    """The command line every build script takes: the output folder and --raw (sdist downloads)."""
    import argparse

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="folder the suite is written to (created)")
    ap.add_argument("--raw", type=Path, default=Path("/work/suites/raw"), help="where sdists are downloaded")
    a = ap.parse_args()
    a.raw.mkdir(parents=True, exist_ok=True)
    return a


def fetch_sdist(raw: Path, spec: str) -> Path:
    """Download (once, with pip, into raw) and unpack the source distribution `name==version`."""
    import subprocess
    import sys

    name, ver = spec.split("==")

    def hits():
        return sorted(p for p in raw.glob(f"*-{ver}.tar.gz") if p.name.lower().startswith(name.lower() + "-"))

    if not hits():
        raw.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", spec,
                        "-d", str(raw)], check=True)
    return extract_sdist(hits()[0], raw)


def _is_adornment(line: str, title: str | None = None) -> bool:
    s = line.rstrip()
    if len(s) < 3 or s[0] not in _ADORN or set(s) != {s[0]}:
        return False
    return title is None or len(s) >= len(title.strip()) - 2


def rst_sections(text: str) -> list[tuple[tuple[str, ...], str]]:
    """Split reStructuredText into sections at every heading (any level).

    Returns (heading path, section text) pairs, the text starting with the section's title line.
    Text before the first heading is returned under the empty path. Heading levels follow the order
    in which adornment styles first appear, as docutils does.
    """
    lines = text.splitlines()
    heads = []  # (line index of the title, style)
    i = 0
    while i < len(lines) - 1:
        title = lines[i]
        if title.strip() and not _is_adornment(title) and _is_adornment(lines[i + 1], title):
            over = i > 0 and _is_adornment(lines[i - 1], title) and lines[i - 1].strip()[0] == lines[i + 1].strip()[0]
            heads.append((i, ("o" if over else "u") + lines[i + 1].strip()[0]))
            i += 2
            continue
        i += 1
    styles: list[str] = []
    out = []
    path: list[str] = []
    starts = [h[0] for h in heads]
    if heads and heads[0][0] > 0:
        pre = "\n".join(lines[: max(0, heads[0][0] - 1)]).strip()
        if pre:
            out.append(((), pre))
    for k, (idx, style) in enumerate(heads):
        if style not in styles:
            styles.append(style)
        level = styles.index(style)
        path = path[:level] + [lines[idx].strip()]
        end = starts[k + 1] - 1 if k + 1 < len(heads) else len(lines)
        body = [ln for ln in lines[idx + 2: end] if not _is_adornment(ln) or not ln.strip()]
        out.append((tuple(path), (lines[idx].strip() + "\n\n" + "\n".join(body).strip()).strip()))
    return out


def norm_ws(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).split()).lower()


WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


class UnionFind:
    def __init__(self):
        self.p: dict = {}

    def find(self, x):
        self.p.setdefault(x, x)
        while self.p[x] != x:
            self.p[x] = self.p[self.p[x]]
            x = self.p[x]
        return x

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:  # deterministic root whatever the key types
            lo, hi = sorted((ra, rb), key=repr)
            self.p[hi] = lo


def word_ratio(a: str, b: str) -> float:
    """difflib's matching-block ratio over the two texts' word sequences (2*M / (len a + len b)):
    the share of words a line-by-line reader would see in common, order included."""
    import difflib

    wa, wb = words(a), words(b)
    if not wa and not wb:
        return 1.0
    return difflib.SequenceMatcher(None, wa, wb, autojunk=False).ratio()


def jaccard5(a: str, b: str) -> float:
    """Exact Jaccard of lower-cased word 5-gram sets (the convention of shared/bench), for SUITE.md
    statistics only: truth never depends on it."""
    def sh(t):
        w = words(t)
        return {tuple(w[i:i + 5]) for i in range(max(1, len(w) - 4))}

    x, y = sh(a), sh(b)
    return len(x & y) / len(x | y) if x | y else 1.0


def variant_table(rows: list[dict], names: dict | None = None) -> str:
    """SUITE.md table: per variant level, how many and their word-5-gram Jaccard to the cluster's
    `original` document (statistics only; truth never depends on it)."""
    from collections import defaultdict

    orig = {r["cluster"]: r["text"] for r in rows if r["level"] == "original"}
    per = defaultdict(list)
    for r in rows:
        if r["level"] != "original":
            per[r["level"]].append(jaccard5(orig.get(r["cluster"], r["text"]), r["text"]))
    out = ["| variant | docs | median Jaccard to the original (word 5-grams) | >= 0.8 | < 0.5 |", "|---|---|---|---|---|"]
    out += [f"| {(names or {}).get(k, k)} | {len(v):,} | {sorted(v)[len(v) // 2]:.3f} | {sum(j >= .8 for j in v):,} | "
            f"{sum(j < .5 for j in v):,} |" for k, v in sorted(per.items())]
    return "\n".join(out)


def sampled_clusters(uf, n_rows: int, seed: int, limit: int) -> list[tuple[int, list[int]]]:
    """Whole truth clusters ``(root, member indices)`` of a union-find over ``n_rows`` rows, in a
    seeded random order, until ``limit`` documents are taken (the last cluster may pass it)."""
    import random
    from collections import defaultdict

    clusters = defaultdict(list)
    for i in range(n_rows):
        clusters[uf.find(i)].append(i)
    order = sorted(clusters)
    random.Random(seed).shuffle(order)
    out, n = [], 0
    for c in order:
        if n >= limit:
            break
        out.append((c, clusters[c]))
        n += len(clusters[c])
    return out


def pair_level_table(rows: list[dict], levels=("identical", "revised", "edited", "moved", "repeated")) -> str:
    """SUITE.md table of a two-edition suite: per level, how many clusters of two or more documents
    and the word-5-gram Jaccard between their first two members (statistics only)."""
    from collections import defaultdict

    by = defaultdict(list)
    for r in rows:
        by[r["cluster"]].append(r)
    lines = ["| level | clusters | median Jaccard (word 5-grams) | >= 0.8 | < 0.5 |", "|---|---|---|---|---|"]
    for lv in levels:
        js = sorted(jaccard5(g[0]["text"], g[1]["text"]) for g in by.values() if len(g) > 1 and g[0]["level"] == lv)
        if js:
            lines.append(f"| {lv} | {len(js):,} | {js[len(js) // 2]:.3f} | {sum(j >= .8 for j in js):,} | "
                         f"{sum(j < .5 for j in js):,} |")
    return "\n".join(lines)


def write_suite(out: Path, rows: list[dict], suite_md: str, rng) -> dict:
    """Shuffle rows (each: text, cluster key, level, extra truth columns), give opaque ids, write the
    suite files and return counts. `cluster` values are any hashables; they become strings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = list(rows)
    rng.shuffle(rows)
    out.mkdir(parents=True, exist_ok=True)
    ids = [f"d{i:06d}" for i in range(len(rows))]
    docs = pa.table({"id": ids, "text": [r["text"] for r in rows]})
    pq.write_table(docs, out / "docs.parquet", compression="zstd")
    with open(out / "docs.jsonl", "w", encoding="utf-8") as fh:
        for i, r in zip(ids, rows):
            fh.write(json.dumps({"id": i, "text": r["text"]}, ensure_ascii=False) + "\n")
    # cluster names: c + the smallest id in the cluster
    first: dict = {}
    for i, r in zip(ids, rows):
        first.setdefault(r["cluster"], i)
    extra = sorted({k for r in rows for k in r if k not in ("text", "cluster")})
    cols = {"id": ids, "cluster": ["c" + first[r["cluster"]][1:] for r in rows]}
    for k in extra:
        cols[k] = [None if r.get(k) is None else str(r[k]) for r in rows]
    pq.write_table(pa.table(cols), out / "truth.parquet", compression="zstd")
    from collections import Counter

    size = Counter(r["cluster"] for r in rows)
    levels = Counter(r.get("level") for r in rows)
    in_dup = sum(v for v in size.values() if v > 1)
    counts = {"docs": len(rows), "clusters": len(size), "clusters_ge2": sum(1 for v in size.values() if v > 1),
              "docs_in_clusters": in_dup, "ideal_drops": len(rows) - len(size), "largest": max(size.values()),
              "pairs": sum(v * (v - 1) // 2 for v in size.values()), "levels": dict(sorted(levels.items()))}
    (out / "SUITE.md").write_text(suite_md.replace("{COUNTS}", counts_md(counts)))
    return counts


def counts_md(c: dict) -> str:
    lv = "\n".join(f"| {k} | {v:,} |" for k, v in c["levels"].items())
    return (f"- docs: {c['docs']:,}\n- truth clusters: {c['clusters']:,} ({c['clusters_ge2']:,} with >= 2 docs, "
            f"largest {c['largest']}; {c['docs_in_clusters']:,} docs in them)\n"
            f"- ideal drops (docs - clusters): {c['ideal_drops']:,}; same-cluster pairs: {c['pairs']:,}\n\n"
            f"| level | docs |\n|---|---|\n{lv}\n")


def write_pair_suite(out: Path, ids: list[str], docs: dict[str, str], pairs: list[tuple[str, str, bool]],
                     suite_md: str) -> tuple[int, int]:
    """Write a pair suite: docs.parquet (id, text, in the order of ``ids``), pairs.parquet (id1, id2,
    label) and SUITE.md (``suite_md`` plus the counts). Returns (docs, positive pairs)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": ids, "text": [docs[i] for i in ids]}), out / "docs.parquet", compression="zstd")
    pq.write_table(pa.table({"id1": [p[0] for p in pairs], "id2": [p[1] for p in pairs],
                             "label": [p[2] for p in pairs]}), out / "pairs.parquet", compression="zstd")
    npos = sum(p[2] for p in pairs)
    (out / "SUITE.md").write_text(f"{suite_md}\nCounts: {len(ids)} docs, {len(pairs)} pairs ({npos} positive / "
                                  f"{len(pairs) - npos} negative).\n")
    print(f"{out}: {len(ids)} docs, {len(pairs)} pairs ({npos} pos)")
    return len(ids), npos
