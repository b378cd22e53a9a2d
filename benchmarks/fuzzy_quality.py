#!/usr/bin/env python
"""Quality of ``dedupkit fuzzy`` beside datasketch, text-dedup and datatrove MinHash, each at its
own defaults, scored with the shared scorer (pairwise P/R/F1, ARI, unique_lost).

The peers run in a separate virtualenv (``--peers-python``, e.g. /work/peers/bin/python with
``pip install datatrove text-dedup``) so they cannot break dedupkit's; this same file is the
runner there (``--run-peer NAME``). Every peer writes a manifest (doc_id, keep, cluster_id) that
the scorer reads like dedupkit's.

Usage:
  python benchmarks/fuzzy_quality.py --suites ../shared/data/reuters-nd ../shared/data/clough-stevenson \\
      --score ../shared/eval/score.py --peers-python /work/peers/bin/python --out /tmp/fq [--sweep]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


# --------------------------------------------------------------------------------------------
# Peer runners (executed inside the peers' virtualenv)

def _write_manifest(out: Path, ids: list[str], keep: list[bool], cluster: list, duplicate_of: list | None = None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    cols = {"doc_id": pa.array(ids, pa.string()), "keep": pa.array(keep, pa.bool_()),
            "cluster_id": pa.array(cluster, pa.int64())}
    if duplicate_of is not None:
        cols["duplicate_of"] = pa.array(duplicate_of, pa.string())
    pq.write_table(pa.table(cols), out / "part-0.parquet")


def _components(n: int, pairs) -> list[int]:
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [find(i) for i in range(n)]


def _manifest_from_roots(out: Path, ids: list[str], roots: list[int]) -> None:
    from collections import Counter

    size = Counter(roots)
    keep = [roots[i] == i for i in range(len(ids))]  # the lowest index of a cluster survives
    cluster = [roots[i] if size[roots[i]] > 1 else None for i in range(len(ids))]
    _write_manifest(out, ids, keep, cluster)


def _load(suite: Path):
    import pyarrow.parquet as pq

    t = pq.read_table(suite / "docs.parquet", columns=["id", "text"])
    return t.column("id").to_pylist(), t.column("text").to_pylist()


def _py_shingles():
    sys.path.insert(0, str(HERE))
    from fuzzy import py_shingles  # the shingles of the speed benchmark: NFKC, lower case, \\w+ word 5-grams

    return py_shingles


def peer_datasketch(suite: Path, out: Path) -> dict:
    """datasketch's MinHashLSH at the settings its docs give for document dedup: a MinHash(num_perm=128)
    per document updated with the UTF-8 bytes of each word 5-gram, MinHashLSH(threshold=0.8,
    num_perm=128) (its optimal bands x rows), insert every document, query every document; candidates
    are duplicates; connected components, the first document of each survives."""
    from datasketch import MinHash, MinHashLSH

    shingles = _py_shingles()
    ids, texts = _load(suite)
    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    mhs = []
    for i, t in enumerate(texts):
        m = MinHash(num_perm=128)
        for w in shingles(t):
            m.update(w.encode("utf8"))
        lsh.insert(str(i), m)
        mhs.append(m)
    pairs = [(i, int(k)) for i, m in enumerate(mhs) for k in lsh.query(m) if int(k) != i]
    _manifest_from_roots(out, ids, _components(len(ids), pairs))
    return {"settings": "word 5-grams, num_perm=128, threshold=0.8 (b,r=%d,%d), components" % (lsh.b, lsh.r)}


def peer_rensa(suite: Path, out: Path) -> dict:
    """rensa's deduplicator as its README shows it, with 16 bands: RMinHashDeduplicator(threshold=0.8,
    num_perm=128, use_lsh=True, num_bands=16, seed=42), documents in order, word 5-grams; a document
    whose sketch matches an indexed one (get_duplicates: LSH candidates checked against the threshold)
    is dropped as a duplicate of the first such document, else added (rensa's streaming keep rule)."""
    from rensa import RMinHash, RMinHashDeduplicator

    shingles = _py_shingles()
    ids, texts = _load(suite)
    dd = RMinHashDeduplicator(threshold=0.8, num_perm=128, use_lsh=True, num_bands=16, seed=42)
    keep, dup = [], []
    for i, t in enumerate(texts):
        m = RMinHash(num_perm=128, seed=42)
        m.update(shingles(t))
        hits = dd.get_duplicates(m)
        if hits:
            keep.append(False)
            dup.append(ids[min(int(k) for k in hits)])
        else:
            dd.add(str(i), m)
            keep.append(True)
            dup.append(None)
    _write_manifest(out, ids, keep, [None] * len(ids), dup)
    return {"settings": "RMinHashDeduplicator(threshold=0.8, num_perm=128, use_lsh=True, num_bands=16), word 5-grams"}


def peer_textdedup(suite: Path, out: Path) -> dict:
    """text-dedup 0.4 ``python -m text_dedup.minhash`` at its defaults (ngram 5, min_length 5,
    num_perm 250, threshold 0.7, sha1 hash, 64-bit mode, seed 42): its own embed_func, optimal_param
    and union of every bucket with its smallest member; documents with fewer than min_length tokens
    are filtered out of its output (dropped here, as in its output)."""
    import numpy as np
    from text_dedup import minhash as tdm
    from text_dedup.utils import UnionFind, optimal_param, sha1_hash

    ids, texts = _load(suite)
    args = dict(ngram=5, min_length=5, num_perm=250, threshold=0.7)
    dtype, max_hash, prime = np.uint64, np.uint32((1 << 32) - 1), np.uint64((1 << 61) - 1)
    b, r = optimal_param(args["threshold"], args["num_perm"], false_positive_weight=0.5, false_negative_weight=0.5)
    ranges = [(i * r, (i + 1) * r) for i in range(b)]
    rng = np.random.RandomState(42)
    perms = (rng.randint(1, prime, size=(args["num_perm"],), dtype=dtype),
             rng.randint(0, prime, size=(args["num_perm"],), dtype=dtype))
    tables = [dict() for _ in range(b)]
    kept_in = [len(tdm.NON_ALPHA.split(t.lower())) >= args["min_length"] for t in texts]
    for i, t in enumerate(texts):
        if not kept_in[i]:
            continue
        res = tdm.embed_func(t, i, num_perm=args["num_perm"], ngram_size=args["ngram"], min_length=args["min_length"],
                             hashranges=ranges, permutations=perms, hash_func=lambda x: sha1_hash(x, d=32),
                             dtype=dtype, max_hash=max_hash, modulo_prime=prime)
        for k, h in enumerate(res[tdm.SIGNATURE_COLUMN]):
            tables[k].setdefault(h, set()).add(i)
    uf = UnionFind()
    for table in tables:
        for cluster in table.values():
            if len(cluster) > 1:
                m = min(cluster)
                for x in cluster:
                    uf.union(x, m)
    roots = [uf.find(i) for i in range(len(ids))]
    from collections import Counter

    size = Counter(roots[i] for i in range(len(ids)) if kept_in[i])
    keep = [kept_in[i] and roots[i] == i for i in range(len(ids))]
    cluster = [roots[i] if kept_in[i] and size[roots[i]] > 1 else None for i in range(len(ids))]
    _write_manifest(out, ids, keep, cluster)
    return {"settings": f"ngram 5, num_perm 250, threshold 0.7 (b,r={b},{r}), sha1, seed 42",
            "filtered_short": int(sum(not k for k in kept_in))}


def peer_datatrove(suite: Path, out: Path) -> dict:
    """datatrove's 4-step MinHash pipeline (signature, buckets, cluster, filter) at MinhashConfig()
    defaults (5-grams, 14 buckets x 8 hashes, 64-bit xxhash, default text normalisation), run with
    its LocalPipelineExecutor on the suite's docs.jsonl; cluster ids from save_cluster_id."""
    import tempfile

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    ids, _ = _load(suite)
    cfg = MinhashConfig()
    work = Path(tempfile.mkdtemp(prefix="dt-"))
    src = work / "in"
    src.mkdir()
    os.symlink(suite / "docs.jsonl", src / "docs.jsonl")

    def reader():
        return JsonlReader(str(src), text_key="text", id_key="id")

    for step, pipe in enumerate((
        [reader(), MinhashDedupSignature(output_folder=str(work / "sigs"), config=cfg)],
        [MinhashDedupBuckets(input_folder=str(work / "sigs"), output_folder=str(work / "buckets"), config=cfg)],
        [MinhashDedupCluster(input_folder=str(work / "buckets"), output_folder=str(work / "remove"), config=cfg,
                             save_cluster_id=True)],
        [reader(), MinhashDedupFilter(input_folder=str(work / "remove"), load_cluster_ids=True,
                                      exclusion_writer=JsonlWriter(str(work / "removed"))),
         JsonlWriter(str(work / "kept"))],
    )):
        # one logging folder per step: the executor skips tasks already completed in its folder
        # (the bucket step must run one task per bucket)
        LocalPipelineExecutor(pipeline=pipe, tasks=cfg.num_buckets if step == 1 else 1, workers=1,
                              logging_dir=str(work / f"logs{step}")).run()
    import gzip

    state = {}
    for kind in ("kept", "removed"):
        for f in sorted((work / kind).glob("*")):
            with gzip.open(f, "rt") if f.suffix == ".gz" else open(f) as fh:
                for line in fh:
                    d = json.loads(line)
                    state[d["id"]] = (kind == "kept", d.get("metadata", {}).get("minhash_cluster_id"))
    keep = [state.get(i, (True, None))[0] for i in ids]
    cluster = [state.get(i, (True, None))[1] for i in ids]
    from collections import Counter

    size = Counter(c for c in cluster if c is not None)
    cluster = [c if c is not None and c != -1 and size[c] > 1 else None for c in cluster]  # -1 = no cluster
    _write_manifest(out, ids, keep, cluster)
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return {"settings": "MinhashConfig(): 5-grams, 14 buckets x 8 hashes, xxhash 64-bit, seed 1"}


PEERS = {"datasketch": peer_datasketch, "rensa": peer_rensa, "text-dedup": peer_textdedup, "datatrove": peer_datatrove}


# --------------------------------------------------------------------------------------------
# Driver (dedupkit's venv)

_SCORERS: dict = {}


def score(score_py: str, suite: Path, manifest: Path) -> dict:
    """Score a manifest with the shared scorer (imported once from its path, run in-process)."""
    if score_py not in _SCORERS:
        import importlib.util

        spec = importlib.util.spec_from_file_location("dedup_score", score_py)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _SCORERS[score_py] = mod
    res = _SCORERS[score_py].evaluate(str(suite), str(manifest))
    pw = res["pairwise"]
    return {"P": pw["precision"], "R": pw["recall"], "F1": pw["f1"], "ARI": res["ari"],
            "dropped": res["drops"]["predicted"], "ideal": res["drops"]["ideal"],
            "unique_lost": res["drops"]["unique_lost"]}


def fingerprint(suite: Path, names: tuple[str, ...] = ("docs.parquet",)) -> str:
    """Content hash of a suite's files (a rebuilt, byte-identical suite keeps its cached results)."""
    import hashlib

    h = hashlib.sha1()
    for n in names:
        h.update((suite / n).read_bytes())
    return h.hexdigest()[:16]


def run_peer(peers_python: str, peer: str, suite: Path, out: Path, rerun: bool = False) -> dict:
    """Run one peer on one suite in the peers' virtualenv (a whole process), writing out/manifest;
    peers are slow and deterministic, so a result for the same docs.parquet is reused unless rerun.
    Returns the peer's info (settings, seconds) or {"error": ...}."""
    import shutil

    cached = out / "info.json"
    if cached.exists() and not rerun:
        info = json.loads(cached.read_text())
        if info.get("fingerprint") == fingerprint(suite):
            return info
    shutil.rmtree(out, ignore_errors=True)
    r = subprocess.run([peers_python, __file__, "--run-peer", peer, "--suite", str(suite),
                        "--manifest-out", str(out / "manifest")], capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": " ".join(r.stderr.strip().splitlines()[-1:])}
    info = json.loads(r.stdout.strip().splitlines()[-1])
    info["fingerprint"] = fingerprint(suite)
    cached.write_text(json.dumps(info))
    return info


def run_dedupkit(suite: Path, out: Path, **params) -> tuple[dict, float]:
    sys.path.insert(0, str(SRC))
    from dedupkit import api

    t0 = time.perf_counter()
    api.fuzzy([str(suite / "docs.parquet")], str(out), id_column="id", overwrite=True, **params)
    return params, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suites", nargs="+", type=Path)
    ap.add_argument("--score", default=str(HERE.parent.parent / "shared/eval/score.py"))
    ap.add_argument("--peers-python", default=None, help="python of the peers' virtualenv")
    ap.add_argument("--peers", nargs="*", default=list(PEERS))
    ap.add_argument("--out", type=Path, default=Path("/tmp/fuzzy-quality"))
    ap.add_argument("--sweep", action="store_true", help="also sweep threshold/ngram/verify for dedupkit")
    ap.add_argument("--peer-settings", action="store_true", help="also run dedupkit at each peer's settings")
    ap.add_argument("--rerun-peers", action="store_true",
                    help="run the peers again even if OUT/SUITE/PEER/info.json exists from an earlier run")
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--run-peer", choices=list(PEERS), help=argparse.SUPPRESS)
    ap.add_argument("--suite", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--manifest-out", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.run_peer:  # inside the peers' venv
        t0 = time.perf_counter()
        info = PEERS[a.run_peer](a.suite, a.manifest_out)
        info["seconds"] = round(time.perf_counter() - t0, 2)
        print(json.dumps(info))
        return

    rows = []
    for suite in a.suites:
        suite = suite.resolve()
        configs = [("dedupkit (defaults)", {})]
        if a.peer_settings:
            # dedupkit at each peer's own settings: the same shingle size, permutations and
            # threshold (or banding), so the difference is the implementation, not the knobs.
            configs += [
                ("dedupkit at datasketch's settings (1-grams, t=0.5)", dict(ngram=1, threshold=0.5)),
                ("dedupkit at text-dedup's settings (5-grams, 250 perm, t=0.7)", dict(num_perm=250, threshold=0.7)),
                ("dedupkit at datatrove's settings (5-grams, 14x8, verify none)",
                 dict(num_perm=112, bands=14, rows=8, verify="none")),
            ]
        if a.sweep:
            # what the defaults were chosen from (docs/fuzzy.md): n-gram size, threshold, verify, seed
            grid = [(5, t, "signature", 1) for t in (0.5, 0.6, 0.65, 0.7, 0.8)]
            grid += [(5, t, "signature", seed) for t in (0.6, 0.65) for seed in (2, 3)]
            grid += [(5, 0.65, "jaccard", 1), (4, 0.65, "signature", 1), (3, 0.7, "signature", 1),
                     (2, 0.7, "signature", 1), (1, 0.5, "signature", 1), (1, 0.4, "signature", 1)]
            configs += [(f"dedupkit {n}-grams t={t} verify={v} seed={seed}",
                         dict(ngram=n, threshold=t, verify=v, seed=seed)) for n, t, v, seed in grid]
        for k, (name, params) in enumerate(configs):
            out = a.out / suite.name / f"dedupkit-{k:02d}"
            _, secs = run_dedupkit(suite, out, **params)
            rows.append({"suite": suite.name, "tool": name, "seconds": round(secs, 2),
                         **score(a.score, suite, out / "manifest")})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        for peer in (a.peers if a.peers_python else []):
            out = a.out / suite.name / peer
            info = run_peer(a.peers_python, peer, suite, out, a.rerun_peers)
            if "error" in info:
                rows.append({"suite": suite.name, "tool": peer, "error": [info["error"]]})
            else:
                rows.append({"suite": suite.name, "tool": peer, "settings": info.get("settings"),
                             "seconds": info.get("seconds"), **score(a.score, suite, out / "manifest")})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)

    print("| suite | tool | pairwise P | R | F1 | ARI | dropped | unique_lost | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['suite']} | {r['tool']} | error: {' '.join(r['error'])} |||||||")
            continue
        print(f"| {r['suite']} | {r['tool']} | {r['P']:.4f} | {r['R']:.4f} | {r['F1']:.4f} | {r['ARI']:.4f} | "
              f"{r['dropped']:,} | {r['unique_lost']:,} | {r['seconds']} |")
    if a.json_out:
        a.json_out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
