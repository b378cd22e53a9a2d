"""Quality of `dedupkit exact` on reuters-nd, from Parquet and from JSONL, per normalization.

    python benchmarks/exact_quality.py --suite ../shared/data/reuters-nd --work /tmp/exact-quality

For each --normalize setting: pairwise precision/recall/F1, ARI, unique_lost (score.py), whether
every natural exact-duplicate group of the suite (truth clusters of >= 2 `original` docs) ends up in
one predicted cluster, and whether the Parquet and JSONL inputs give the same decisions.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import PY, SRC, table  # noqa: E402


def run(args: list[str]) -> str:
    env = {"PYTHONPATH": SRC}
    import os

    p = subprocess.run([PY, "-m", "dedupkit", *args], capture_output=True, text=True, env={**os.environ, **env})
    if p.returncode:
        raise SystemExit(p.stderr)
    return p.stdout


def decisions(out: Path) -> list[tuple]:
    t = ds.dataset(str(out / "manifest")).to_table(columns=["doc_id", "keep", "cluster_id", "duplicate_of"])
    return sorted(zip(*[t.column(c).to_pylist() for c in t.column_names]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/dedupkit-exact-quality"))
    ap.add_argument("--score", type=Path, default=None, help="score.py (default: SUITE/../../eval/score.py)")
    args = ap.parse_args()
    score_py = args.score or args.suite.parent.parent / "eval" / "score.py"
    truth = pq.read_table(args.suite / "truth.parquet").to_pylist()
    natural = defaultdict(list)
    for r in truth:
        if r["level"] == "original":
            natural[r["cluster"]].append(r["id"])
    natural = {c: ids for c, ids in natural.items() if len(ids) >= 2}
    rows = []
    for norm in ["none", "whitespace", "lower,whitespace", "nfkc,lower,whitespace"]:
        outs = {}
        for fmt in ("parquet", "jsonl"):
            out = args.work / f"{norm}-{fmt}"
            shutil.rmtree(out, ignore_errors=True)
            run(["exact", str(args.suite / f"docs.{fmt}"), "-o", str(out), "--id-column", "id", "-q",
                 "--normalize", norm])
            outs[fmt] = out
        same = decisions(outs["parquet"]) == decisions(outs["jsonl"])
        res = json.loads(subprocess.run([PY, str(score_py), "--suite", str(args.suite), "--manifest",
                                         str(outs["parquet"] / "manifest"), "--json"],
                                        capture_output=True, text=True, check=True).stdout)
        cid = {r["doc_id"]: r["cluster_id"] for r in ds.dataset(str(outs["parquet"] / "manifest")).to_table(
            columns=["doc_id", "cluster_id"]).to_pylist()}
        found = sum(1 for ids in natural.values() if cid[ids[0]] is not None and len({cid[i] for i in ids}) == 1)
        pw = res["pairwise"]
        f4 = lambda v: f"{v:.4f}"  # noqa: E731
        rows.append([norm, f4(pw["precision"]), f4(pw["recall"]), f4(pw["f1"]), f4(res["ari"]), res["drops"]["predicted"],
                     res["drops"]["unique_lost"], f"{found}/{len(natural)}", "yes" if same else "NO"])
    print(table(["--normalize", "pair P", "pair R", "pair F1", "ARI", "drops", "unique_lost",
                 "natural exact groups found", "parquet == jsonl"], rows))


if __name__ == "__main__":
    main()
