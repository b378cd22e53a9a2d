"""Helpers for the report/inspect tests (no tests here).

``run_fuzzy`` runs the real fuzzy stage, so that pages of a stage with scores below 1, a
threshold and LSH bands/rows are tested.
"""

from __future__ import annotations

import random
from pathlib import Path


from dedupkit import api

from tests.support import make_rows, write_jsonl, write_parquet


def near_corpus(folder: Path, seed: int = 3) -> tuple[Path, list[dict]]:
    """A corpus with exact copies, near copies (word substitutions) and unique documents.

    Half the rows go to a Parquet shard, half to a JSONL shard. Returns (folder, rows).
    """
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(400)]

    def doc(k: int) -> list[str]:
        return [rng.choice(vocab) for _ in range(k)]

    texts: list[str] = []
    for c in range(4):
        base = doc(60)
        texts.append(" ".join(base))
        for _ in range(c + 1):
            copy = list(base)
            for _ in range(rng.randint(1, 3)):
                copy[rng.randrange(len(copy))] = rng.choice(["alpha", "beta", "gamma", "delta"])
            texts.append(" ".join(copy))
        if c == 0:
            texts.append(" ".join(base))  # an exact copy
    for _ in range(6):
        texts.append(" ".join(doc(50)))
    order = list(range(len(texts)))
    rng.shuffle(order)
    texts = [texts[i] for i in order]
    rows = make_rows(texts, prefix="n")
    half = len(rows) // 2
    write_parquet(folder / "a.parquet", rows[:half])
    write_jsonl(folder / "b.jsonl", rows[half:])
    return folder, rows


def run_fuzzy(data: Path, out: Path, skip: tuple[str, ...] = ()) -> dict:
    """The real fuzzy stage, with settings that give this corpus scores below 1 and a threshold."""
    return api.fuzzy([str(data)], str(out), id_column="id", threshold=0.5, ngram=2, bands=16, rows=4,
                     skip=skip).summary


def many_clusters_corpus(path: Path, clusters: int, copies: int = 2, unique: int = 10,
                         length: int = 400) -> Path:
    """One Parquet shard with ``clusters`` groups of ``copies`` identical long texts."""
    rng = random.Random(1)
    texts = []
    for c in range(clusters):
        t = f"cluster {c} " + " ".join(rng.choice("abcdefghij") * rng.randint(1, 8) for _ in range(length // 5))
        texts.extend([t] * copies)
    texts.extend(f"unique document {u}" for u in range(unique))
    write_parquet(path, make_rows(texts, prefix="m"))
    return path
