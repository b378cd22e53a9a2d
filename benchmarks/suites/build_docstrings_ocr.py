#!/usr/bin/env python
"""Build the `docstrings-ocr` cluster suite: noisy re-typed / OCR-like copies of real texts.

Source: the docstrings (>= 40 words) of the Python modules in the Django 5.1.4, Sphinx 7.4.7 and
pytest 8.3.3 sdists from PyPI (read with `ast`, never imported). Half of a seeded sample gets one or
two copies passed through a seeded noise model of scanning and re-typing at one of three strengths;
a copy is in its original's truth cluster. Docstrings identical after collapsing whitespace and case
(one docstring repeated in several places) are one cluster; every other docstring is its own,
including the many near-templated ones (the same docstring with another backend's name), which a
reader calls different documents.

    python benchmarks/suites/build_docstrings_ocr.py /work/suites/docstrings-ocr [--raw /work/suites/raw]
"""

from __future__ import annotations

import ast
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import suite_args, variant_table, UnionFind, fetch_sdist, norm_ws, words, write_suite  # noqa: E402

SEED = 1304
SOURCES = (("django==5.1.4", "django"), ("sphinx==7.4.7", "sphinx"), ("pytest==8.3.3", "src"))
MIN_WORDS = 40
SAMPLE = 2000
NOISY_SHARE = 0.5
LEVELS = {"light": 0.005, "medium": 0.02, "heavy": 0.05}  # per-character error rate

# scanner confusions (both directions) and a QWERTY neighbour map for re-typing slips
OCR = [("rn", "m"), ("m", "rn"), ("l", "1"), ("1", "l"), ("I", "l"), ("l", "I"), ("O", "0"), ("0", "O"),
       ("e", "c"), ("c", "e"), ("cl", "d"), ("d", "cl"), ("h", "b"), ("u", "v"), ("w", "vv"), ("vv", "w"),
       ("i", "í"), (".", ","), (",", "."), ("n", "ri"), ("t", "f"), ("a", "o"), ("S", "5"), ("B", "8")]
ROWS = ["qwertyuiop", "asdfghjkl", "zxcvbnm"]
NEAR = {}
for r, row in enumerate(ROWS):
    for c, ch in enumerate(row):
        NEAR[ch] = "".join(ROWS[rr][cc] for rr in (r - 1, r, r + 1) for cc in (c - 1, c, c + 1)
                           if 0 <= rr < 3 and 0 <= cc < len(ROWS[rr]) and (rr, cc) != (r, c))


def docstrings(top: Path, sub: str) -> list[str]:
    out = []
    for f in sorted((top / sub).rglob("*.py")):
        try:
            tree = ast.parse(f.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                d = ast.get_docstring(node)
                if d and len(words(d)) >= MIN_WORDS:
                    out.append(d)
    return out


def rewrap(text: str, rng: random.Random) -> str:
    """Re-flow into lines of 45-80 columns, hyphenating some long words at the line end (a scan)."""
    width = rng.randint(45, 80)
    lines, cur = [], ""
    for w in text.split():
        if len(cur) + 1 + len(w) > width and cur:
            if len(w) > 7 and rng.random() < 0.3:
                k = rng.randint(3, len(w) - 3)
                lines.append(cur + " " + w[:k] + "-")
                cur = w[k:]
                continue
            lines.append(cur)
            cur = w
        else:
            cur = (cur + " " + w) if cur else w
    return "\n".join(lines + [cur])


def noisy(text: str, rate: float, rng: random.Random) -> str:
    t = rewrap(text, rng) if rng.random() < 0.7 else text
    out = []
    i = 0
    while i < len(t):
        ch = t[i]
        x = rng.random()
        if x < rate * 0.45:  # scanner confusion
            opts = [(a, b) for a, b in OCR if t.startswith(a, i)]
            if opts:
                a, b = rng.choice(opts)
                out.append(b)
                i += len(a)
                continue
        elif x < rate * 0.7 and ch.lower() in NEAR:  # re-typing slip: neighbour key
            n = rng.choice(NEAR[ch.lower()])
            out.append(n.upper() if ch.isupper() else n)
            i += 1
            continue
        elif x < rate * 0.8:  # dropped character
            i += 1
            continue
        elif x < rate * 0.9 and i + 1 < len(t) and not t[i + 1].isspace():  # transposition
            out.append(t[i + 1] + ch)
            i += 2
            continue
        elif x < rate:  # lost or spurious space
            if ch == " ":
                i += 1
                continue
            out.append(ch + " ")
            i += 1
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def build(raw: Path) -> list[dict]:
    base = []
    for spec, sub in SOURCES:
        base += docstrings(fetch_sdist(raw, spec), sub)
    rng = random.Random(SEED)
    base = rng.sample(base, min(SAMPLE, len(base)))
    uf = UnionFind()
    first = {}
    for i, d in enumerate(base):
        uf.union(i, first.setdefault(norm_ws(d), i))
    rows = [{"text": d, "cluster": uf.find(i), "level": "original"} for i, d in enumerate(base)]
    for i, d in enumerate(base):
        if rng.random() >= NOISY_SHARE:
            continue
        for _ in range(rng.choice([1, 1, 2])):
            lv = rng.choice(list(LEVELS))
            t = noisy(d, LEVELS[lv], rng)
            while norm_ws(t) == norm_ws(d):
                t = noisy(d, LEVELS[lv], rng)
            rows.append({"text": t, "cluster": uf.find(i), "level": lv, "source": f"b{i}"})
    return rows


def main() -> None:
    a = suite_args(__doc__)
    rows = build(a.raw)
    stats = variant_table(rows, {k: f"{k} ({v:.1%} char errors)" for k, v in LEVELS.items()})
    md = f"""# docstrings-ocr: noisy scanned / re-typed copies

Cluster suite of kind (d): docstrings (>= {MIN_WORDS} words) of the Python modules in the Django 5.1.4,
Sphinx 7.4.7 and pytest 8.3.3 sdists (PyPI; BSD-3-Clause, BSD-2-Clause, MIT; parsed with `ast`),
and noisy copies of half of them.

## How it was built
`python benchmarks/suites/build_docstrings_ocr.py OUT` (dedupkit repository), seed {SEED}.
1. {SAMPLE} docstrings sampled (`random.Random({SEED})`). Docstrings identical after collapsing
   whitespace and case are one cluster; every other docstring is its own cluster, near-templated ones
   included (the same text naming another backend or class: different documents to a reader).
2. {NOISY_SHARE:.0%} of them get 1 (p 2/3) or 2 copies, each at one strength (uniform): per-character
   error rate light {LEVELS['light']:.1%}, medium {LEVELS['medium']:.1%}, heavy {LEVELS['heavy']:.1%}. A copy is re-flowed into
   45-80-column lines with some end-of-line hyphenation (p 0.7), then per character: scanner confusions
   (rn/m, l/1/I, O/0, e/c, cl/d, h/b, vv/w, ...; 45% of errors), QWERTY neighbour keys (25%), dropped
   characters (10%), transpositions (10%), lost or spurious spaces (10%). A copy is in its original's
   cluster (a careful reader would call it the same text, badly scanned or typed).
3. Shuffled, ids `d000000`... `truth.parquet`: `id`, `cluster`, `level` (original / light / medium /
   heavy), `source`.

## Counts
{{COUNTS}}
{stats}

## Caveats
- The noise is synthetic (seeded), on real text; real OCR errors cluster on bad pages, here they are
  spread evenly.
- Docstrings carry code samples and reST markup as written.
"""
    counts = write_suite(a.out, rows, md, random.Random(SEED))
    print(counts, stats, sep="\n")


if __name__ == "__main__":
    main()
