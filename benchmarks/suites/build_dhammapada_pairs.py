"""Build the dhammapada-pairs suite: an old and a modern English translation of the same verse.

Kind: paraphrase pairs across an archaic and a modern translation (a stand-in for the held-out
archaic-vs-modern verse suite). Source: the Debian package ``display-dhammapada`` (fetched with
``apt-get download``), which ships F. Max Muller's 1881 translation (public domain, from Project
Gutenberg) and John Richards' 1993 translation of the same 423 verses, each verse numbered.

Docs: every verse of both translations (one doc per numbered paragraph; a paragraph numbered
``5-6`` is one doc for both verses). Pairs (``pairs.parquet``): for each verse number, the
positive (Muller, Richards) pair, and one negative (Muller v, Richards w) with w another verse of
the same chapter drawn with a fixed seed; so negatives are on the same subject, and the twin
verses of chapter 1 (1/2, 3/4: the same words with one phrase flipped) are among them.

Usage:
    python benchmarks/suites/build_dhammapada_pairs.py /work/suites/dhammapada-pairs --raw /tmp/raw
"""

from __future__ import annotations

import argparse
import random
import re
import subprocess
import sys
from pathlib import Path

PKG = "display-dhammapada"
FILES = {"muller": "dhammapada-alternate.txt", "richards": "dhammapada-english-transl.txt"}
SEED = 14


def fetch(raw: Path) -> Path:
    raw.mkdir(parents=True, exist_ok=True)
    debs = sorted(raw.glob(f"{PKG}_*.deb"))
    if not debs:
        subprocess.run(["apt-get", "download", PKG], cwd=raw, check=True)
        debs = sorted(raw.glob(f"{PKG}_*.deb"))
    x = raw / "x"
    if not (x / "usr/share/display-dhammapada").exists():
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(x)], check=True)
    return x / "usr/share/display-dhammapada"


_CHAPTER = re.compile(r"^(\d{1,2})\.\s+\S")
_NUM = re.compile(r"(?:^|\s)(\d{1,3})(?:\s*-\s*(\d{1,3}))?\s*$")


def verses(path: Path) -> dict[int, tuple[int, str, tuple[int, ...]]]:
    """verse number -> (chapter, text, all verse numbers of that paragraph)."""
    text = path.read_text(encoding="latin-1")
    start = text.find("1. The")
    body = text[start:]
    out: dict[int, tuple[int, str, tuple[int, ...]]] = {}
    chapter = 0
    for para in re.split(r"\n\s*\n", body):
        p = " ".join(para.split())
        if not p:
            continue
        m = _CHAPTER.match(p)
        if m and len(p) < 60:
            chapter = int(m.group(1))
            continue
        n = _NUM.search(p)
        if not n or chapter == 0:
            continue
        a = int(n.group(1))
        b = int(n.group(2) or a)
        if not (1 <= a <= b <= 423) or b - a > 5:
            continue
        words = p[: n.start()].strip()
        if len(words) < 15:
            continue
        nums = tuple(range(a, b + 1))
        for v in nums:
            if v not in out:
                out[v] = (chapter, words, nums)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--raw", type=Path, default=Path("/work/suites/raw"))
    a = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import write_pair_suite

    src = fetch(a.raw)
    tr = {k: verses(src / f) for k, f in FILES.items()}
    docs: dict[str, str] = {}

    def doc_id(kind: str, v: int) -> str:
        nums = tr[kind][v][2]
        did = f"{kind}-{nums[0]}" + (f"-{nums[-1]}" if len(nums) > 1 else "")
        docs[did] = tr[kind][v][1]
        return did

    common = sorted(set(tr["muller"]) & set(tr["richards"]))
    rng = random.Random(SEED)
    pairs = []
    seen = set()
    for v in common:
        m, r = doc_id("muller", v), doc_id("richards", v)
        if (m, r) not in seen:
            seen.add((m, r))
            pairs.append((m, r, True))
        ch = tr["muller"][v][0]
        others = [w for w in common if tr["richards"][w][0] == ch
                  and not set(tr["richards"][w][2]) & set(tr["muller"][v][2])]
        if others:
            w = rng.choice(others)
            neg = (m, doc_id("richards", w))
            if neg not in seen:
                seen.add(neg)
                pairs.append((*neg, False))
    for k in tr:  # every verse is a doc, paired or not
        for v in tr[k]:
            doc_id(k, v)
    a.out.mkdir(parents=True, exist_ok=True)
    ids = sorted(docs, key=lambda d: (d.split("-")[0], int(d.split("-")[1])))
    order = list(range(len(ids)))
    random.Random(SEED).shuffle(order)  # a tool sees the docs in a shuffled order
    ids = [ids[i] for i in order]
    write_pair_suite(a.out, ids, docs, pairs, f"# dhammapada-pairs\n\n{__doc__}\nVerses found: Muller "
                     f"{len(tr['muller'])}, Richards {len(tr['richards'])}, both {len(common)}.")


if __name__ == "__main__":
    main()
