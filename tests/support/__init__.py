"""Helpers the tests import: tiny corpora written as Parquet and JSONL, manifest readers, and the
real command line in a subprocess."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
SRC = str(ROOT / "src")

BASE_DOCS = [
    "The quick brown fox jumps over the lazy dog near the river bank today.",
    "A completely different sentence about databases, indexes and query planners.",
    "The quick brown fox jumps over the lazy dog near the river bank today.",
    "Rain is expected tomorrow across the northern region with strong winds.",
    "the  quick brown fox jumps over the lazy dog near the river bank today.\n",
    "A completely different sentence about databases, indexes and query planners.",
    "Entirely unique text number seven with nothing in common with the others.",
    "Rain is expected tomorrow across the northern region with strong winds.",
]


# The four-row JSONL corpus the docstring examples run on (the `data` of every `>>>` example; see
# the root conftest.py): d1 and d2 differ only in their first letter's case, d3 and d4 are unique.
DOC_ROWS = [
    {"id": "d1", "text": "The quick brown fox jumps over the lazy dog near the river bank at dawn."},
    {"id": "d2", "text": "the quick brown fox jumps over the lazy dog near the river bank at dawn."},
    {"id": "d3", "text": "A completely different sentence about the weather in the mountains today."},
    {"id": "d4", "text": "Yet another unrelated line, this one about cooking pasta with garlic."},
]


def write_doc_corpus(folder: Path) -> Path:
    """Write :data:`DOC_ROWS` as ``folder/a.jsonl``; returns the folder."""
    write_jsonl(Path(folder) / "a.jsonl", DOC_ROWS)
    return Path(folder)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def write_parquet(path: Path, rows: list[dict], row_group_size: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)
    return path


def write_rows(path: Path, rows: list[dict], fmt: str) -> Path:
    """``rows`` as ``path.parquet`` (fmt "parquet") or ``path.jsonl`` (any other fmt)."""
    if fmt == "parquet":
        return write_parquet(path.with_suffix(".parquet"), rows)
    return write_jsonl(path.with_suffix(".jsonl"), rows)


def make_rows(texts: list[str], prefix: str = "d") -> list[dict]:
    return [{"id": f"{prefix}{i}", "text": t, "n": i} for i, t in enumerate(texts)]


def read_manifest(out: Path) -> list[dict]:
    t = ds.dataset(str(Path(out) / "manifest"), format="parquet").to_table()
    return t.sort_by([("shard", "ascending"), ("row", "ascending")]).to_pylist()


def run_subprocess(*args: str, cwd: str | os.PathLike | None = None, input: str | None = None,
                   env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real ``dedupkit`` command line in a subprocess (this checkout's src first)."""
    e = dict(os.environ)
    e["PYTHONPATH"] = SRC + os.pathsep + e.get("PYTHONPATH", "")
    if env:
        e.update(env)
    return subprocess.run([sys.executable, "-m", "dedupkit", *args], cwd=cwd, input=input,
                          capture_output=True, text=True, env=e, timeout=600)


VOCAB = [f"w{i}x{(i * 7919) % 1000}" for i in range(3000)]


def make_texts(n: int, seed: int, words: int = 200) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(VOCAB, size=words)) for _ in range(n)]


def near_copy(text: str, seed: int) -> str:
    """One word replaced in the middle: word-5-gram Jaccard about 0.95 for 200 words."""
    w = text.split(" ")
    w[len(w) // 2] = f"edited{seed}"
    return " ".join(w)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a redis-server or Ray of one test)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
