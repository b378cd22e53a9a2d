#!/usr/bin/env python
"""Speed of ``dedupkit fuzzy`` beside rensa, gaoya and datasketch's documented usage (issue 13).

Whole processes on the corpus as ``make_corpus.py`` writes it: ONE ``docs.parquet`` with one row
group (dedupkit splits it into scan tasks itself; ``--shards N`` rewrites it as N files instead).

- dedupkit: ``dedupkit fuzzy docs.parquet -o OUT --workers W --ngram 5 --num-perm 128`` at its
  defaults otherwise (threshold 0.65 verified on the true word-shingle sets, char n-grams for what
  Jaccard misses, candidates from LSH at 0.5), as a subprocess: the CLI a user runs.
- rensa: ``RMinHash(num_perm=128, seed=42).update(shingles)`` per document, ``RMinHashLSH(threshold=0.8,
  num_perm=128, num_bands=16)`` (its README's choice), insert all, query all.
- gaoya: ``MinHashStringIndex`` with its Rust word tokenizer (lower case, word 5-grams), 16 bands of
  8 x 32-bit hashes, threshold 0.8, ``par_bulk_insert_docs`` + ``par_bulk_query`` on all cores.
- datasketch, documented usage: ``MinHash(num_perm=128)`` per document, ``m.update(s.encode("utf8"))``
  per shingle, ``MinHashLSH(threshold=0.8, num_perm=128)``, insert all, query all (first
  ``--datasketch-docs`` documents: it is slow).

The Python baselines get word 5-grams from ``py_shingles`` (NFKC, lower case, ``re`` ``\\w+``; on
this English corpus they are dedupkit's shingles) and run in the peers' virtualenv
(``--peer-python``). Every tool runs in its own subprocess; wall time covers reading the text,
shingling, hashing, LSH and collecting duplicate pairs; peak RSS is the largest sum of RSS over the
tool's process tree, sampled every 50 ms from /proc. Throughput (docs/s) is compared, every number
is the median of ``--repeat`` runs, round-robin over the tools so that load from other processes hits
all alike. The CPU may be shared: the table prints the load average.

Usage:
  python benchmarks/fuzzy.py --corpus /tmp/c100k --workers 2 --repeat 3 --json-out benchmarks/results/fuzzy-onefile.json
  python benchmarks/fuzzy.py --corpus /tmp/c1m --tools dedupkit --repeat 1
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import time
import unicodedata
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
sys.path.insert(0, str(HERE))
from _util import run_measured  # noqa: E402


def make_shards(corpus: Path, out: Path, shards: int) -> list[Path]:
    """Write the corpus as ``shards`` Parquet files (streaming from docs.jsonl, bounded memory)."""
    import orjson
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    done = out / "_shards.json"
    n_total = json.loads((corpus / "meta.json").read_text())["n"]
    if done.exists() and json.loads(done.read_text()) == {"n": n_total, "shards": shards}:
        return sorted(out.glob("part-*.parquet"))
    per = -(-n_total // shards)
    writer, k, buf, count = None, -1, [], 0

    def flush():
        nonlocal buf
        if buf:
            writer.write_table(pa.Table.from_pylist(buf, schema=pa.schema([("id", pa.int64()), ("text", pa.string())])))
            buf = []

    with open(corpus / "docs.jsonl", "rb") as fh:
        for line in fh:
            if count % per == 0:
                flush()
                if writer:
                    writer.close()
                k += 1
                writer = pq.ParquetWriter(out / f"part-{k:03d}.parquet", pa.schema([("id", pa.int64()), ("text", pa.string())]))
            d = orjson.loads(line)
            buf.append({"id": d["id"], "text": d["text"]})
            count += 1
            if len(buf) >= 5000:
                flush()
    flush()
    if writer:
        writer.close()
    done.write_text(json.dumps({"n": n_total, "shards": shards}))
    return sorted(out.glob("part-*.parquet"))


def measure(cmd: list[str], env: dict | None = None) -> dict:
    """Run ``cmd``; wall and CPU seconds, peak tree RSS (bytes) and its stdout parsed as JSON."""
    m = run_measured(cmd, env=env)
    stdout = m["stdout"]
    try:
        info = json.loads(stdout)  # dedupkit --json: the whole stdout
    except ValueError:
        last = stdout.strip().splitlines()[-1] if stdout.strip() else "{}"
        info = json.loads(last)
    return {"wall_s": m["wall_s"], "cpu_s": m["cpu_s"], "peak_rss": int(m["peak_rss_mib"] * 1024 * 1024),
            "info": info}


# --- baseline workers (run as subprocesses of this file) -------------------------------------

def _texts(shards: list[str], limit: int):
    import pyarrow.parquet as pq

    n = 0
    for s in shards:
        for batch in pq.ParquetFile(s).iter_batches(batch_size=4096, columns=["text"]):
            for t in batch.column(0).to_pylist():
                if n >= limit:
                    return
                n += 1
                yield t


_TOKEN = re.compile(r"\w+")


def py_shingles(text: str, n: int = 5) -> list[str]:
    """Word n-grams as a Python user writes them: NFKC, lower case, re's \\w+ tokens, joined by a space
    (the same shingles as dedupkit's on this English corpus)."""
    toks = _TOKEN.findall(unicodedata.normalize("NFKC", text).lower())
    if len(toks) < n:
        return [" ".join(toks)] if toks else []
    return [" ".join(g) for g in zip(*[toks[i:] for i in range(n)])]


def run_rensa(shards: list[str], limit: int) -> dict:
    from rensa import RMinHash, RMinHashLSH

    lsh = RMinHashLSH(threshold=0.8, num_perm=128, num_bands=16)
    mhs = []
    for i, t in enumerate(_texts(shards, limit)):
        m = RMinHash(num_perm=128, seed=42)
        m.update(py_shingles(t))
        lsh.insert(i, m)
        mhs.append(m)
    pairs = sum(len([k for k in lsh.query(m) if k > i]) for i, m in enumerate(mhs))
    return {"docs": len(mhs), "pairs": pairs}


def run_datasketch(shards: list[str], limit: int) -> dict:
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    mhs = []
    for i, t in enumerate(_texts(shards, limit)):
        m = MinHash(num_perm=128)
        for s in py_shingles(t):
            m.update(s.encode("utf8"))
        lsh.insert(i, m)
        mhs.append(m)
    pairs = sum(len([k for k in lsh.query(m) if k > i]) for i, m in enumerate(mhs))
    return {"docs": len(mhs), "pairs": pairs}


def run_gaoya(shards: list[str], limit: int) -> dict:
    """gaoya as the issue runs it: its Rust word tokenizer (lower case, word 5-grams) and MinHash
    LSH with 16 bands of 8 rows (128 x 32-bit hashes), jaccard_threshold 0.8, bulk insert and bulk
    query on all cores (rayon)."""
    from gaoya.minhash import MinHashStringIndex

    texts = list(_texts(shards, limit))
    index = MinHashStringIndex(hash_size=32, jaccard_threshold=0.8, num_bands=16, band_size=8, analyzer="word",
                               lowercase=True, ngram_range=(5, 5), id_container="smallvec")
    ids = list(range(len(texts)))
    index.par_bulk_insert_docs(ids, texts)
    found = index.par_bulk_query(texts)
    pairs = sum(len([k for k in r if k > i]) for i, r in enumerate(found))
    return {"docs": len(texts), "pairs": pairs}


BASELINES = {"rensa": run_rensa, "datasketch": run_datasketch, "gaoya": run_gaoya}


def fmt_bytes(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, help="make_corpus.py output folder (docs.jsonl, meta.json)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/fuzzy-bench"))
    ap.add_argument("--shards", type=int, default=0,
                    help="0 (default): the corpus's one docs.parquet as make_corpus.py writes it; N: rewrite it as N "
                         "Parquet shards first")
    ap.add_argument("--peer-python", default="/work/peers/fuzzy/bin/python",
                    help="python of the peers' virtualenv (rensa, datasketch, gaoya)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tools", nargs="+", default=["dedupkit", "rensa", "gaoya", "datasketch"])
    ap.add_argument("--rensa-docs", type=int, default=0, help="documents for rensa (0 = all)")
    ap.add_argument("--datasketch-docs", type=int, default=5000)
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--dedupkit-args", default="",
                    help="more options for dedupkit fuzzy, e.g. \"--verify sets --candidate-threshold 0.5\" "
                         "(after the fixed ones, so they may override --threshold)")
    ap.add_argument("--baseline", choices=list(BASELINES), help=argparse.SUPPRESS)
    ap.add_argument("--limit", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--shard-files", nargs="*", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.baseline:  # inside a measured subprocess
        print(json.dumps(BASELINES[a.baseline](a.shard_files, a.limit or 10**12)))
        return

    n_total = json.loads((a.corpus / "meta.json").read_text())["n"]
    t0 = time.perf_counter()
    if a.shards:
        shards = [str(p) for p in make_shards(a.corpus, a.work / "shards", a.shards)]
    else:
        shards = [str(a.corpus / "docs.parquet")]
    print(f"shards ready in {time.perf_counter() - t0:.1f} s: {len(shards)} files, {n_total:,} docs", file=sys.stderr)
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    runs: dict[str, list[dict]] = {t: [] for t in a.tools}
    load = os.getloadavg()
    # Round-robin over tools so that load from other processes on a shared machine hits all alike.
    for r in range(a.repeat):
        for tool in a.tools:
            if tool == "dedupkit":
                docs = n_total
                shutil.rmtree(a.work / "out", ignore_errors=True)  # no scan task reused from an earlier run
                cmd = [sys.executable, "-m", "dedupkit", "fuzzy", *shards, "-o", str(a.work / "out"), "--overwrite",
                       "--workers", str(a.workers), "--ngram", "5", "--num-perm", "128",
                       "--id-column", "id", "-q", "--json", *a.dedupkit_args.split()]
            else:
                docs = {"rensa": a.rensa_docs, "datasketch": a.datasketch_docs}.get(tool) or n_total
                docs = min(docs, n_total)
                cmd = [a.peer_python, __file__, "--baseline", tool, "--limit", str(docs), "--shard-files", *shards]
            m = measure(cmd, env)
            info = m["info"]
            if tool == "dedupkit":
                info = {"docs": info["counts"]["rows"], "dropped": info["counts"]["dropped"],
                        "pairs": info["stats"]["verified_pairs"], "timings": info["timings"],
                        "fuzzy": info["stats"]["timings"]}
            runs[tool].append({"wall_s": m["wall_s"], "cpu_s": m["cpu_s"], "peak_rss": m["peak_rss"], "docs": docs,
                               **info})
            print(f"{tool} run {r + 1}: {docs:,} docs in {m['wall_s']:.1f} s ({docs / m['wall_s']:,.0f} docs/s), "
                  f"{m['cpu_s']:.1f} CPU s, "
                  f"peak RSS {fmt_bytes(m['peak_rss'])}, {json.dumps(info)}", file=sys.stderr, flush=True)
    results = []
    for tool, rs in runs.items():
        wall = statistics.median(x["wall_s"] for x in rs)
        cpu = statistics.median(x["cpu_s"] for x in rs)
        results.append({"tool": tool, "docs": rs[0]["docs"], "median_wall_s": wall, "median_cpu_s": cpu,
                        "docs_per_s": rs[0]["docs"] / wall, "docs_per_cpu_s": rs[0]["docs"] / cpu,
                        "peak_rss": max(x["peak_rss"] for x in rs), "runs": rs})
    base = {r["tool"]: r["docs_per_s"] for r in results}
    ours = base.get("dedupkit")
    print(f"\n{len(shards)} input file(s), {n_total:,} docs, workers={a.workers}, repeat={a.repeat} (median), "
          f"load average at start {load[0]:.1f}; dedupkit fuzzy at its defaults{' + ' + a.dedupkit_args if a.dedupkit_args else ''} "
          "(word 5-grams, 128 permutations), peers at Jaccard 0.8")
    ours_cpu = next((r["docs_per_cpu_s"] for r in results if r["tool"] == "dedupkit"), None)
    print("| tool | docs | median wall s | docs/s | dedupkit speed-up (wall) | CPU s | docs per CPU s | "
          "dedupkit per-CPU ratio | peak RSS |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        mine = r["tool"] == "dedupkit"
        ratio = f"{ours / r['docs_per_s']:.2f}x" if ours and not mine else "-"
        cratio = f"{ours_cpu / r['docs_per_cpu_s']:.2f}x" if ours_cpu and not mine else "-"
        print(f"| {r['tool']} | {r['docs']:,} | {r['median_wall_s']:.1f} | {r['docs_per_s']:,.0f} | {ratio} | "
              f"{r['median_cpu_s']:.1f} | {r['docs_per_cpu_s']:,.0f} | {cratio} | {fmt_bytes(r['peak_rss'])} |")
    if a.json_out:
        a.json_out.parent.mkdir(parents=True, exist_ok=True)
        a.json_out.write_text(json.dumps({"files": shards, "docs": n_total, "workers": a.workers, "load_at_start": load,
                                          "dedupkit_args": a.dedupkit_args, "results": results}, indent=1))


if __name__ == "__main__":
    main()
