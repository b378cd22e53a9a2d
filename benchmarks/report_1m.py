"""Size and open time of the HTML report of a 1,000,000-row run.

Generates a Parquet corpus of short texts with planted exact duplicates (cluster sizes drawn from
a heavy-tailed distribution, so there are a few large clusters and many pairs), runs the exact
stage over it, writes the report, and opens the page in headless Chromium several times. The
baseline is a trivial page opened the same way in the same script (Chromium's own start-up).

Usage:
    python benchmarks/report_1m.py --work /tmp/report-bench [--rows 1000000] [--repeats 5]

Prints a table and writes WORK/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def make_corpus(path: Path, rows: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(20000)])
    dup_share = 0.3
    n_dups = int(rows * dup_share)
    n_base = rows - n_dups
    words = vocab[rng.integers(0, len(vocab), size=(n_base, 10))]
    base = [" ".join(w) for w in words.tolist()]
    # Most copies pick their original uniformly (many pairs and triples); a tenth pick it with a
    # Zipf law, so that a few originals get hundreds or thousands of copies.
    parent = rng.integers(0, n_base, size=n_dups)
    heavy = rng.random(n_dups) < 0.1
    parent[heavy] = rng.permutation(n_base)[(rng.zipf(1.8, size=int(heavy.sum())) - 1) % n_base]
    texts = base + [base[p] for p in parent.tolist()]
    order = rng.permutation(rows)
    texts = [texts[i] for i in order.tolist()]
    ids = [f"d{i:07d}" for i in range(rows)]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": ids, "text": texts}), path, row_group_size=100_000)
    return {"rows": rows, "planted_copies": n_dups}


def open_page(page: Path, runs: int) -> tuple[list[float], list[float], str]:
    """Wall seconds of `chromium --dump-dom` and the page's own render time (ms) per run."""
    wall, render, errors = [], [], ""
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as prof:
            t0 = time.perf_counter()
            p = subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={prof}",
                                "--virtual-time-budget=30000", "--dump-dom", page.resolve().as_uri()],
                               capture_output=True, text=True, timeout=300)
            wall.append(time.perf_counter() - t0)
        body = re.search(r"<body[^>]*>", p.stdout)
        tag = body.group(0) if body else ""
        m = re.search(r'data-render-ms="(\d+)"', tag)
        render.append(float(m.group(1)) if m else float("nan"))
        e = re.search(r'id="js-errors"[^>]*data-count="(\d+)"', p.stdout) or \
            re.search(r'data-count="(\d+)"[^>]*id="js-errors"', p.stdout)
        if 'data-ready="1"' not in tag or (e and e.group(1) != "0"):
            errors = f"page not ready or JS errors: {tag} {e.group(0) if e else ''}"
    return wall, render, errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, type=Path, help="scratch folder (corpus, run, pages)")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=5, help="Chromium opens per page (median reported)")
    ap.add_argument("--report-repeats", type=int, default=3, help="report builds (median reported)")
    args = ap.parse_args()
    if not shutil.which("chromium"):
        print("chromium not found: apt-get install -y chromium", file=sys.stderr)
        return 1
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from dedupkit import api

    work = args.work
    corpus = work / "corpus" / "docs.parquet"
    if not corpus.exists():
        t = time.perf_counter()
        info = make_corpus(corpus, args.rows)
        print(f"corpus: {info} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    out = work / "exact"
    t = time.perf_counter()
    res = api.exact([str(corpus)], str(out), id_column="id", overwrite=True)
    t_exact = time.perf_counter() - t
    counts = res.summary["counts"]
    page = work / "report.html"
    builds = []
    for _ in range(args.report_repeats):
        t = time.perf_counter()
        rr = api.report(str(out), str(page))
        builds.append(time.perf_counter() - t)
    base = work / "baseline.html"
    base.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"></head><body><script>'
                    'document.body.setAttribute("data-render-ms", String(Math.round(performance.now())));'
                    'document.body.setAttribute("data-ready", "1");</script></body></html>')
    b_wall, b_render, b_err = open_page(base, args.repeats)
    r_wall, r_render, r_err = open_page(page, args.repeats)
    med = statistics.median
    results = {
        "rows": counts["rows"], "dropped": counts["dropped"], "clusters": counts["clusters"],
        "largest_cluster": counts["largest_cluster"], "exact_stage_s": round(t_exact, 2),
        "report_build_s_median": round(med(builds), 2), "report_bytes": rr.bytes,
        "report_mb": round(rr.bytes / 1e6, 3), "clusters_listed": rr.clusters_listed,
        "open_wall_s_median": round(med(r_wall), 3), "open_wall_s_all": [round(x, 3) for x in r_wall],
        "page_render_ms_median": med(r_render), "page_render_ms_all": r_render,
        "baseline_open_wall_s_median": round(med(b_wall), 3), "baseline_render_ms_median": med(b_render),
        "open_wall_ratio_vs_baseline": round(med(r_wall) / med(b_wall), 2),
        "js_errors": r_err or None, "baseline_errors": b_err or None,
        "python": sys.version.split()[0], "cpus": os.cpu_count(),
    }
    (work / "results.json").write_text(json.dumps(results, indent=2))
    rows = [
        ("rows in the run", f"{results['rows']:,}"),
        ("dropped / clusters / largest", f"{results['dropped']:,} / {results['clusters']:,} / {results['largest_cluster']:,}"),
        ("exact stage", f"{t_exact:.1f} s"),
        ("report build (median of %d)" % len(builds), f"{med(builds):.2f} s"),
        ("report size", f"{rr.bytes / 1e6:.2f} MB ({rr.clusters_listed} clusters listed)"),
        ("Chromium open, wall (median of %d)" % args.repeats, f"{med(r_wall):.2f} s"),
        ("  baseline trivial page, wall", f"{med(b_wall):.2f} s  (ratio {results['open_wall_ratio_vs_baseline']:.2f}x)"),
        ("page render, navigation to ready", f"{med(r_render):.0f} ms (baseline {med(b_render):.0f} ms)"),
        ("JS errors", r_err or "none"),
    ]
    w = max(len(a) for a, _ in rows)
    print(f"| {'measure'.ljust(w)} | value |")
    print(f"|{'-' * (w + 2)}|-------|")
    for a, b in rows:
        print(f"| {a.ljust(w)} | {b} |")
    print(f"results: {work / 'results.json'}", file=sys.stderr)
    return 0 if not r_err else 1


if __name__ == "__main__":
    raise SystemExit(main())
