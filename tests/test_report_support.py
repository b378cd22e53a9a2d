"""Helpers for the report/inspect tests (no tests here).

``MinHashTestStage`` is a small but real MinHash-LSH stage written against the public Stage
interface (datasketch signatures, banded buckets, estimated-Jaccard verification). The report
tests run it through the real runner so that pages of a stage with scores below 1, a threshold
and LSH bands/rows are tested without depending on the fuzzy stage's code.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np

from dedupkit.io.read import ReadSpec
from dedupkit.policy import KeepPolicy, choose_representatives
from dedupkit.runner import RunOptions, run_stage
from dedupkit.stages.base import Decisions, Mapper, Stage

from conftest import make_rows, write_jsonl, write_parquet


class MinHashTestMapper(Mapper):
    def __init__(self, num_perm: int, ngram: int):
        self.num_perm = num_perm
        self.ngram = ngram

    def map_batch(self, batch):
        from datasketch import MinHash

        out = np.zeros((len(batch), self.num_perm), np.uint64)
        for i, t in enumerate(batch.text.to_pylist()):
            words = re.findall(r"\w+", t.lower())
            n = self.ngram
            shingles = {" ".join(words[j:j + n]) for j in range(max(1, len(words) - n + 1))}
            m = MinHash(num_perm=self.num_perm, seed=7)
            m.update_batch([s.encode() for s in shingles])
            out[i] = m.hashvalues
        return {"sig": out}

    def empty(self):
        return {"sig": np.zeros((0, self.num_perm), np.uint64)}


class MinHashTestStage(Stage):
    name = "minhash"

    def __init__(self, threshold: float = 0.5, bands: int = 16, rows: int = 4, ngram: int = 2):
        self.threshold, self.bands, self.rows, self.ngram = threshold, bands, rows, ngram

    def mapper(self):
        return MinHashTestMapper(self.bands * self.rows, self.ngram)

    def key(self):
        return f"minhash-test:{self.bands}x{self.rows}:{self.ngram}"

    def config_dict(self):
        return {"threshold": self.threshold, "bands": self.bands, "rows": self.rows, "ngram": self.ngram,
                "num_perm": self.bands * self.rows}

    def identify(self, corpus, workdir):
        n = len(corpus)
        sig = corpus.feature("sig").reshape(n, self.bands * self.rows)
        parent = list(range(n))

        def find(x):
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        pairs = 0
        for b in range(self.bands):
            buckets: dict[bytes, list[int]] = {}
            for i in range(n):
                buckets.setdefault(sig[i, b * self.rows:(b + 1) * self.rows].tobytes(), []).append(i)
            for members in buckets.values():
                for j in members[1:]:
                    pairs += 1
                    if np.mean(sig[members[0]] == sig[j]) >= self.threshold:
                        parent[find(j)] = find(members[0])
        roots = np.array([find(i) for i in range(n)], np.int64)
        sizes = np.bincount(roots, minlength=n)
        labels = np.where(sizes[roots] > 1, roots, -1).astype(np.int64)
        rep = choose_representatives(labels, KeepPolicy().priority(n, corpus.lengths))
        score = np.array([np.mean(sig[i] == sig[rep[i]]) if labels[i] >= 0 else np.nan for i in range(n)])
        return Decisions(representative=rep, labels=labels, score=score,
                         stats={"bands": self.bands, "rows": self.rows, "candidate_pairs": pairs})


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


def run_minhash(data: Path, out: Path, skip: tuple[str, ...] = ()) -> dict:
    return run_stage(MinHashTestStage(), [str(data)], out, ReadSpec(id_column="id"),
                     RunOptions(skip=skip)).summary


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
