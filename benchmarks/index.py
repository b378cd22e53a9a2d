#!/usr/bin/env python3
"""Benchmark `dedupkit index` and `dedupkit check`: a big index, then a small drop checked against it.

Two steps:

  # split a generated corpus (shared/bench/make_corpus.py) into the held corpus and the new drop
  python benchmarks/index.py prepare --corpus C/docs.jsonl --truth C/truth.csv --drop 10000 --out DATA

  # build the index (local folder and Redis), check the drop against it several times
  python benchmarks/index.py run --held DATA/held --drop DATA/drop.parquet --truth DATA/drop_truth.parquet \\
      --work W --stages exact,fuzzy --repeats 3 --workers 2 --results W/index.json

For each store it measures the build (docs/s, peak RSS of the `dedupkit index create` process), the
index size (bytes on disk per document; for Redis the server's used_memory per document) and the
check of the drop (median wall time of --repeats runs of `dedupkit check`, docs/s, peak RSS).
Baseline, in the same run: the same `dedupkit check` against an EMPTY index with the same
settings, so the ratio is the cost of looking the drop up in a big index (reading the drop and
hashing it is in both). Every command is a real subprocess of the command line; peak RSS is the
child's ru_maxrss from wait4 (the largest process of the run). With --truth it also scores the
check: recall and precision of "is a copy of an earlier document" against the generator's truth.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def dedupkit(*args: str, env_extra: dict | None = None) -> tuple[float, int, str, str, int]:
    """Run the command line; returns (seconds, peak RSS bytes, stdout, stderr, exit code)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.update(env_extra or {})
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "dedupkit", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env, text=True)
    out, err = "", ""
    # wait4 gives this child's own rusage; communicate() first would reap it without one.
    import threading

    bufs: dict[str, str] = {}
    t_out = threading.Thread(target=lambda: bufs.__setitem__("out", p.stdout.read()))
    t_err = threading.Thread(target=lambda: bufs.__setitem__("err", p.stderr.read()))
    t_out.start(), t_err.start()
    _, status, ru = os.wait4(p.pid, 0)
    t_out.join(), t_err.join()
    p.returncode = os.waitstatus_to_exitcode(status)
    dt = time.perf_counter() - t0
    out, err = bufs.get("out", ""), bufs.get("err", "")
    return dt, ru.ru_maxrss * 1024, out, err, p.returncode


def must(res, what: str, ok=(0,)):
    dt, rss, out, err, rc = res
    if rc not in ok:
        sys.exit(f"{what} failed with exit code {rc}:\n{err[-3000:]}")
    return res


def prepare(a) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t = pj.read_json(a.corpus, read_options=pj.ReadOptions(block_size=64 << 20))
    t = t.set_column(t.schema.get_field_index("id"), "id", pc.cast(t.column("id"), pa.string()))
    n = len(t)
    held_n = n - a.drop
    (out / "held").mkdir(exist_ok=True)
    per = -(-held_n // a.shards)
    for s in range(a.shards):
        lo, hi = s * per, min(held_n, (s + 1) * per)
        pq.write_table(t.slice(lo, hi - lo), out / "held" / f"part-{s:03d}.parquet", row_group_size=50_000)
    pq.write_table(t.slice(held_n), out / "drop.parquet")
    if a.truth:
        truth = pcsv.read_csv(a.truth)
        drop_truth = truth.slice(held_n)
        pq.write_table(drop_truth, out / "drop_truth.parquet")
    print(json.dumps({"held": held_n, "drop": n - held_n, "shards": a.shards, "out": str(out)}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(exe: str, workdir: Path, appendonly: bool = False):
    """redis-server on a free port in ``workdir`` (with ``appendonly``: fsync every second)."""
    import redis

    port = free_port()
    persist = ["--appendonly", "yes", "--appendfsync", "everysec"] if appendonly else ["--appendonly", "no"]
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", *persist,
                             "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            return proc, port, client
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("redis-server did not start")


def score(manifest_dir: Path, truth_path: str | None) -> dict | None:
    if not truth_path:
        return None
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    m = ds.dataset(str(manifest_dir / "manifest")).to_table(columns=["doc_id", "keep", "match"]).to_pylist()
    truth = {str(r["id"]): r for r in pq.read_table(truth_path).to_pylist()}
    dropped = {r["doc_id"] for r in m if not r["keep"]}
    dup = {i for i, r in truth.items() if r["dup_first"] in (True, "True", "true")}
    tp = len(dropped & dup)
    return {"true_dups": len(dup), "dropped": len(dropped), "recall": tp / len(dup) if dup else None,
            "precision": tp / len(dropped) if dropped else None}


def measured_jaccard(manifest_dir: Path, held: str, drop: str, sample: int, threshold: float) -> dict | None:
    """Word-5-gram Jaccard (lower-cased \\w+ tokens, as make_corpus.py's truth) of sampled near matches."""
    if sample <= 0:
        return None
    import random
    import re

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    m = ds.dataset(str(manifest_dir / "manifest")).to_table(columns=["doc_id", "match", "matched_doc_id"])
    pairs = [(r["doc_id"], r["matched_doc_id"]) for r in m.to_pylist() if r["match"] == "index-fuzzy"]
    if not pairs:
        return None
    pairs = random.Random(0).sample(pairs, min(sample, len(pairs)))
    need = pa.array(sorted({x for p in pairs for x in p}))
    texts = {}
    for path in sorted(Path(held).glob("*.parquet")) + [Path(drop)]:
        t = pq.read_table(path, columns=["id", "text"])
        for r in t.filter(pc.is_in(t.column("id"), value_set=need)).to_pylist():
            texts[r["id"]] = r["text"]

    def grams(s: str) -> set:
        w = re.findall(r"\w+", s.lower())
        return {" ".join(w[i:i + 5]) for i in range(max(1, len(w) - 4))}

    js = sorted(len(grams(texts[a]) & grams(texts[b])) / len(grams(texts[a]) | grams(texts[b])) for a, b in pairs)
    q = lambda f: round(js[min(len(js) - 1, int(f * len(js)))], 3)  # noqa: E731
    return {"sampled": len(js), "min": round(js[0], 3), "q25": q(0.25), "median": q(0.5),
            f"share_ge_{threshold}": round(sum(j >= threshold for j in js) / len(js), 3),
            "share_ge_0.5": round(sum(j >= 0.5 for j in js) / len(js), 3)}


def run(a) -> None:
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    import pyarrow.parquet as pq

    n_held = sum(pq.ParquetFile(p).metadata.num_rows for p in sorted(Path(a.held).glob("*.parquet")))
    n_drop = pq.ParquetFile(a.drop).metadata.num_rows
    stores = [s.strip() for s in a.stores.split(",")]
    results: dict = {"held_docs": n_held, "drop_docs": n_drop, "stages": a.stages, "workers": a.workers,
                     "repeats": a.repeats, "cpus": os.cpu_count(), "stores": {}}
    redis_proc = None
    common = ["--stages", a.stages, "--id-column", "id", "-q"]
    try:
        for store in stores:
            r: dict = {}
            if store == "redis":
                exe = a.redis_server or shutil.which("redis-server")
                if not exe:
                    sys.exit("redis-server not found: apt-get install redis-server, or pass --stores local")
                redis_proc, port, client = start_redis(exe, work)
                loc = f"redis://127.0.0.1:{port}/0?prefix=bench"
                empty = f"redis://127.0.0.1:{port}/0?prefix=empty"
                mem0 = client.info("memory")["used_memory"]
            else:
                loc, empty = str(work / "held.idx"), str(work / "empty.idx")
            print(f"[{store}] building the index of {n_held} documents ...", file=sys.stderr)
            dt, rss, out, err, _ = must(dedupkit("index", "create", loc, "--from", a.held, *common, "--overwrite",
                                                 "--workers", str(a.workers), "--json"), "index create")
            r["build_s"] = round(dt, 2)
            r["build_docs_per_s"] = round(n_held / dt)
            r["build_peak_rss_mb"] = round(rss / 2**20)
            if store == "redis":
                info = client.info("memory")
                r["index_bytes"] = info["used_memory"] - mem0
                r["redis_rss_mb"] = round(info["used_memory_rss"] / 2**20)
                r["size_note"] = "Redis used_memory growth"
            else:
                r["index_bytes"] = sum(p.stat().st_size for p in Path(loc).rglob("*") if p.is_file())
                r["size_note"] = "bytes on disk"
            r["bytes_per_doc"] = round(r["index_bytes"] / n_held, 1)
            must(dedupkit("index", "create", empty, *common, "--overwrite"), "index create (empty)")
            checks, bases, rsss, brss = [], [], [], []
            manifests = []
            for i in range(a.repeats):
                for target, times, rs, tag in ((loc, checks, rsss, "full"), (empty, bases, brss, "empty")):
                    o = work / f"check-{store}-{tag}-{i}"
                    res = must(dedupkit("check", a.drop, "--against", target, "-o", str(o), "--overwrite",
                                        "--id-column", "id", "-q", "--json"), "check", ok=(0, 3))
                    times.append(res[0])
                    rs.append(res[1])
                    if tag == "full":
                        manifests.append(o)
                        r["check_summary"] = json.loads(res[2])["stats"]
                print(f"[{store}] check {i + 1}/{a.repeats}: {checks[-1]:.2f} s (empty index {bases[-1]:.2f} s)",
                      file=sys.stderr)
            r["check_s_median"] = round(statistics.median(checks), 2)
            r["check_s_all"] = [round(x, 2) for x in checks]
            r["check_docs_per_s"] = round(n_drop / statistics.median(checks))
            r["check_peak_rss_mb"] = round(max(rsss) / 2**20)
            r["baseline_empty_index_s_median"] = round(statistics.median(bases), 2)
            r["baseline_peak_rss_mb"] = round(max(brss) / 2**20)
            r["check_vs_empty_index"] = round(statistics.median(checks) / statistics.median(bases), 2)
            r["quality"] = score(manifests[-1], a.truth)
            if "fuzzy" in a.stages:
                summ = json.loads((manifests[-1] / "summary.json").read_text())
                thr = summ["config"]["stage"]["index_settings"]["minhash"]["threshold"]
                r["near_match_jaccard"] = measured_jaccard(manifests[-1], a.held, a.drop, a.jaccard_sample, thr)
            results["stores"][store] = r
            if redis_proc is not None:
                redis_proc.terminate()
                redis_proc.wait(timeout=30)
                redis_proc = None
    finally:
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(timeout=30)
    # Both stores must agree on every decision.
    if len(stores) == 2:
        import pyarrow.dataset as ds

        def load(store):
            p = work / f"check-{store}-full-{a.repeats - 1}" / "manifest"
            return ds.dataset(str(p)).to_table(columns=["doc_id", "keep", "matched_doc_id"]).sort_by("doc_id")

        results["local_and_redis_agree"] = load("local").equals(load("redis"))
    hdr = ("store", "docs/doc size", "build docs/s", "build RSS MB", "check s (median)", "check docs/s",
           "check RSS MB", "empty-index check s", "ratio")
    rows = []
    for store, r in results["stores"].items():
        rows.append((store, f"{r['bytes_per_doc']} B ({r['size_note']})", r["build_docs_per_s"],
                     r["build_peak_rss_mb"], r["check_s_median"], r["check_docs_per_s"], r["check_peak_rss_mb"],
                     r["baseline_empty_index_s_median"], r["check_vs_empty_index"]))
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for row in rows:
        print("| " + " | ".join(map(str, row)) + " |")
    for store, r in results["stores"].items():
        s = r["check_summary"]
        print(f"{store}: check found {s['index_exact']} exact + {s['index_fuzzy']} near copies of indexed docs, "
              f"{s['drop_exact']} + {s['drop_fuzzy']} within the drop; against the generator's truth "
              f"{r['quality']}; measured Jaccard of sampled near matches {r.get('near_match_jaccard')}")
    if "local_and_redis_agree" in results:
        print(f"local and redis manifests agree: {results['local_and_redis_agree']}")
    if a.results:
        Path(a.results).parent.mkdir(parents=True, exist_ok=True)
        Path(a.results).write_text(json.dumps(results, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="split a make_corpus.py output into held shards and a drop")
    p.add_argument("--corpus", required=True, help="docs.jsonl from make_corpus.py")
    p.add_argument("--truth", help="truth.csv from make_corpus.py")
    p.add_argument("--drop", type=int, default=10_000, help="the last N documents form the drop")
    p.add_argument("--shards", type=int, default=10)
    p.add_argument("--out", required=True)
    r = sub.add_parser("run", help="build the index and time the check")
    r.add_argument("--held", required=True, help="folder of held Parquet shards")
    r.add_argument("--drop", required=True, help="the drop (Parquet)")
    r.add_argument("--truth", help="drop_truth.parquet from prepare, to score the check")
    r.add_argument("--work", required=True, help="scratch folder for indexes and outputs")
    r.add_argument("--stages", default="exact,fuzzy")
    r.add_argument("--stores", default="local,redis")
    r.add_argument("--repeats", type=int, default=3)
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--redis-server", default=None, help="path of redis-server (default: from PATH)")
    r.add_argument("--jaccard-sample", type=int, default=300,
                   help="measure the real word-5-gram Jaccard of this many near matches (0: skip)")
    r.add_argument("--results", help="write the results as JSON here")
    a = ap.parse_args()
    prepare(a) if a.cmd == "prepare" else run(a)


if __name__ == "__main__":
    main()
