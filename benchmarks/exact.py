"""Throughput and memory of `dedupkit exact` against a bare pyarrow + xxh3_128 + set baseline.

    python benchmarks/exact.py --pool ../shared/bench/pool.jsonl.gz --docs 2000000 --shards 8 \
        --work /tmp/exact-bench --repeats 3

Generates (once, cached in --work) a deterministic Parquet corpus of --docs documents of about
1 KB each, cut from the text pool, with 10% exact copies and 5% whitespace variants, then runs, each
--repeats times in fresh processes, the baseline and `dedupkit exact` with --workers 1 and 2, and
prints docs/s, MB/s, peak RSS (summed over the process tree) and throughput ratios to the baseline.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import PY, median_runs, table  # noqa: E402


def generate(pool: Path, out: Path, n_docs: int, shards: int, seed: int = 42) -> int:
    """Deterministic corpus: ~1 KB windows of the pool's words; 10% exact copies, 5% ws variants."""
    done = out / "_done.json"
    if done.exists() and json.loads(done.read_text()).get("docs") == n_docs:
        return json.loads(done.read_text())["bytes"]
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    words: list[str] = []
    with gzip.open(pool, "rt") as fh:
        for line in fh:
            obj = json.loads(line)
            words.extend((obj["text"] if isinstance(obj, dict) else obj).split())
    words_arr = np.array(words, dtype=object)
    rng = np.random.default_rng(seed)
    per = n_docs // shards
    total_bytes = 0
    made = 0
    for s in range(shards):
        n = per if s < shards - 1 else n_docs - per * (shards - 1)
        starts = rng.integers(0, len(words_arr) - 300, n)
        lens = rng.integers(120, 220, n)
        texts = [" ".join(words_arr[a:a + b]) for a, b in zip(starts.tolist(), lens.tolist())]
        kind = rng.random(n)
        src = rng.integers(0, max(1, n), n)
        for i in range(n):
            if kind[i] < 0.10 and src[i] < i:
                texts[i] = texts[src[i]]
            elif kind[i] < 0.15 and src[i] < i:
                texts[i] = texts[src[i]].replace(" ", "  ", 3) + "\n"
        ids = [f"s{s}-{i}" for i in range(n)]
        t = pa.table({"id": ids, "text": texts})
        total_bytes += int(pc.sum(pc.binary_length(t.column("text"))).as_py())
        pq.write_table(t, out / f"part-{s:03d}.parquet", row_group_size=50_000)
        made += n
        print(f"  shard {s}: {n} docs", file=sys.stderr)
    done.write_text(json.dumps({"docs": made, "bytes": total_bytes}))
    return total_bytes


BASELINE = r"""
import sys, glob, pyarrow.parquet as pq, xxhash
seen = set(); dups = 0; n = 0
h = xxhash.xxh3_128_intdigest
for path in sorted(glob.glob(sys.argv[1] + "/*.parquet")):
    pf = pq.ParquetFile(path)
    for rb in pf.iter_batches(batch_size=8192, columns=["text"]):
        for b in rb.column(0).cast("binary").to_pylist():   # bytes: no decode/encode round trip
            d = h(b); n += 1
            if d in seen: dups += 1
            else: seen.add(d)
print(n, dups)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", required=True, type=Path, help="../shared/bench/pool.jsonl.gz")
    ap.add_argument("--docs", type=int, default=2_000_000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--work", type=Path, default=Path("/tmp/dedupkit-exact-bench"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "exact.json")
    args = ap.parse_args()

    corpus = args.work / "corpus"
    t0 = time.perf_counter()
    nbytes = generate(args.pool, corpus, args.docs, args.shards)
    print(f"corpus: {args.docs:,} docs, {nbytes / 1e6:,.0f} MB of text in {args.shards} shards "
          f"({time.perf_counter() - t0:.0f}s to prepare)", file=sys.stderr)
    base_script = args.work / "baseline.py"
    base_script.write_text(BASELINE)
    out = args.work / "out"

    def clean():
        shutil.rmtree(out, ignore_errors=True)

    rows = []
    base = median_runs([PY, str(base_script), str(corpus)], args.repeats)
    n_docs, dups = map(int, base["last"]["stdout"].split())
    results = {"docs": n_docs, "text_mb": nbytes / 1e6, "baseline_duplicates": dups, "runs": {}}
    rows.append(["baseline (pyarrow + xxh3_128 + set)", n_docs / base["wall_s"], nbytes / 1e6 / base["wall_s"],
                 base["peak_rss_mib"], 1.0, str(base["walls"])])
    results["runs"]["baseline"] = base | {"last": None}
    for norm in ("lower,whitespace", "none"):
        for w in (1, 2):
            r = median_runs([PY, "-m", "dedupkit", "exact", str(corpus), "-o", str(out), "-q", "--workers", str(w),
                             "--normalize", norm], args.repeats, before=clean)
            summary = json.loads((out / "summary.json").read_text())
            assert summary["counts"]["rows"] == n_docs
            ratio = base["wall_s"] / r["wall_s"]
            label = f"dedupkit exact --workers {w} --normalize {norm}" + (" (default)" if norm != "none" else "")
            rows.append([label, n_docs / r["wall_s"], nbytes / 1e6 / r["wall_s"], r["peak_rss_mib"], ratio,
                         str(r["walls"])])
            results["runs"][f"workers_{w}_{norm}"] = r | {"last": None, "ratio_to_baseline": ratio,
                                                          "dropped": summary["counts"]["dropped"],
                                                          "timings": summary["timings"]}
    print(table(["run", "docs/s", "MB/s", "peak RSS MiB", "throughput vs baseline", "wall s (runs)"], rows))
    print(f"\nbaseline found {dups:,} byte-identical duplicates; dedupkit dropped "
          f"{results['runs']['workers_1_none']['dropped']:,} with --normalize none and "
          f"{results['runs']['workers_1_lower,whitespace']['dropped']:,} with the default lower,whitespace")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2, default=str))
    clean()


if __name__ == "__main__":
    main()
