#!/usr/bin/env python
"""dedupkit's fuzzy decisions beside the MinHash peers, on every cluster suite, in one table.

Tools (each a whole process per suite, scored with ../shared/eval/score.py):
- `dedupkit run -c configs/default.toml` (exact, then fuzzy) and `dedupkit fuzzy` at its defaults,
  both with `--id-column id`, from the dedupkit checkout given by --dedupkit-root (its src/ on
  PYTHONPATH, its configs/default.toml);
- the peers at the settings their docs give for document dedup (runners in fuzzy_quality.py, run in
  the peers' virtualenv given by --peer-python): datasketch MinHashLSH (word 5-grams, 128 perms,
  threshold 0.8), rensa's RMinHashDeduplicator (same, 16 bands), text-dedup 0.4's README MinHash
  command (its defaults: 5-grams, 250 perms, threshold 0.7), datatrove's default MinhashConfig.

The claim checked per suite (issue 13): each dedupkit row has F1 >= the best peer's F1 and
unique_lost <= that peer's (best = highest F1, ties to fewer unique_lost); suites named in
--exempt (clough-stevenson: rewrites are the semantic stage's target) are shown but not judged.
Writes the table to stdout and all rows to --json-out.

Usage:
  python benchmarks/fuzzy_peers.py --peer-python /work/peers/fuzzy/bin/python \\
      --suites ../shared/data/{reuters-nd,mrpc-groups,clough-stevenson} /work/suites/{django-releases,django-editions,django-paragraphs,docs-quotes,docstrings-ocr}
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from fuzzy_quality import PEERS, run_peer, score  # noqa: E402

SHARED = HERE.parent.parent / "shared"
DEFAULT_SUITES = [SHARED / "data" / s for s in ("reuters-nd", "mrpc-groups", "clough-stevenson")] + \
    [Path("/work/suites") / s for s in ("django-releases", "django-editions", "django-paragraphs", "docs-quotes",
                                            "docstrings-ocr")]


def dedupkit_cmd(root: Path, kind: str, suite: Path, out: Path, options: list[str] = ()) -> list[str]:
    """The command line; options are fuzzy settings KEY=VALUE (`--set fuzzy.KEY=VALUE` for run,
    `--KEY VALUE` for fuzzy), to try a setting before it becomes the default."""
    base = [sys.executable, "-m", "dedupkit"]
    if kind == "run":
        return base + ["run", str(suite / "docs.parquet"), "-o", str(out), "-c", str(root / "configs" / "default.toml"),
                       "--id-column", "id", "--overwrite"] + [x for o in options for x in ("--set", f"fuzzy.{o}")]
    flags = [x for o in options for x in ("--" + o.split("=", 1)[0].replace("_", "-"), o.split("=", 1)[1])]
    return base + ["fuzzy", str(suite / "docs.parquet"), "-o", str(out), "--id-column", "id", "--overwrite", "-q"] + flags


def run_dedupkit(root: Path, kind: str, suite: Path, out: Path, options: list[str] = ()) -> dict:
    """One dedupkit command as a whole process; returns seconds or an error line."""
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=str(root / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    r = subprocess.run(dedupkit_cmd(root, kind, suite, out, options), capture_output=True, text=True, env=env)
    secs = round(time.perf_counter() - t0, 2)
    if r.returncode != 0:
        return {"error": f"exit {r.returncode}: " + " ".join(r.stderr.strip().splitlines()[-2:])}
    return {"seconds": secs}


def judge(rows: list[dict], exempt: set[str]) -> None:
    """Mark each dedupkit row with whether it meets the best peer of its suite."""
    for suite in dict.fromkeys(r["suite"] for r in rows):
        peers = [r for r in rows if r["suite"] == suite and r["kind"] == "peer" and "error" not in r]
        if not peers:
            continue
        best = max(peers, key=lambda r: (round(r["F1"], 4), -r["unique_lost"]))
        for r in rows:
            if r["suite"] == suite and r["kind"] == "dedupkit" and "error" not in r:
                r["best_peer"] = best["tool"]
                if suite in exempt:
                    r["meets"] = "exempt"
                else:
                    ok = round(r["F1"], 4) >= round(best["F1"], 4) and r["unique_lost"] <= best["unique_lost"]
                    r["meets"] = "yes" if ok else "no"


def render(rows: list[dict]) -> str:
    out = ["| suite | tool | F1 | P | R | unique_lost | drops (ideal) | s | meets best peer |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['suite']} | {r['tool']} | error: {r['error']} | | | | | | |")
            continue
        meets = f"{r['meets']} (vs {r['best_peer']})" if "meets" in r else ""
        out.append(f"| {r['suite']} | {r['tool']} | {r['F1']:.4f} | {r['P']:.4f} | {r['R']:.4f} | {r['unique_lost']:,} | "
                   f"{r['dropped']:,} ({r['ideal']:,}) | {r['seconds']} | {meets} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suites", nargs="+", type=Path, default=DEFAULT_SUITES)
    ap.add_argument("--peer-python", default="/work/peers/fuzzy/bin/python", help="python of the peers' virtualenv")
    ap.add_argument("--peers", nargs="*", default=list(PEERS), choices=list(PEERS))
    ap.add_argument("--dedupkit-root", type=Path, default=HERE.parent,
                    help="dedupkit checkout whose src/ and configs/default.toml are run (default: this one)")
    ap.add_argument("--fuzzy-option", action="append", default=[], metavar="KEY=VALUE",
                    help="a fuzzy setting for both dedupkit commands (repeatable), e.g. threshold=0.8")
    ap.add_argument("--score", default=str(SHARED / "eval" / "score.py"))
    ap.add_argument("--exempt", nargs="*", default=["clough-stevenson"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/fuzzy-peers"))
    ap.add_argument("--rerun-peers", action="store_true", help="ignore cached peer results for unchanged suites")
    ap.add_argument("--json-out", type=Path, default=HERE / "results" / "fuzzy_peers.json")
    a = ap.parse_args()

    rows = []
    for suite in a.suites:
        suite = suite.resolve()
        if not (suite / "truth.parquet").exists():
            print(f"skipping {suite}: not a cluster suite (no truth.parquet)", file=sys.stderr)
            continue
        extra = f" + {' '.join(a.fuzzy_option)}" if a.fuzzy_option else ""
        for kind, tool in (("run", "dedupkit run -c configs/default.toml"), ("fuzzy", "dedupkit fuzzy (defaults)")):
            out = a.work / suite.name / f"dedupkit-{kind}"
            info = run_dedupkit(a.dedupkit_root.resolve(), kind, suite, out, a.fuzzy_option)
            tool += extra
            row = {"suite": suite.name, "tool": tool, "kind": "dedupkit", **info}
            if "error" not in info:
                row.update(score(a.score, suite, out / "manifest"))
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
        for peer in a.peers:
            out = a.work / suite.name / peer
            info = run_peer(a.peer_python, peer, suite, out, a.rerun_peers)
            row = {"suite": suite.name, "tool": peer, "kind": "peer"}
            if "error" in info:
                row["error"] = info["error"]
            else:
                row.update(settings=info.get("settings"), seconds=info.get("seconds"),
                           **score(a.score, suite, out / "manifest"))
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    judge(rows, set(a.exempt))
    print(render(rows))
    verdict = [r for r in rows if r.get("meets") in ("yes", "no")]
    print(f"\ndedupkit rows meeting the best peer (F1 >= and unique_lost <=): "
          f"{sum(r['meets'] == 'yes' for r in verdict)} of {len(verdict)} (exempt: {', '.join(a.exempt) or 'none'})")
    a.json_out.parent.mkdir(parents=True, exist_ok=True)
    a.json_out.write_text(json.dumps({"dedupkit_root": str(a.dedupkit_root.resolve()), "fuzzy_options": a.fuzzy_option,
                                      "dedupkit_commit": _commit(a.dedupkit_root), "rows": rows}, indent=1))


def _commit(root: Path) -> str | None:
    r = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() or None


if __name__ == "__main__":
    main()
