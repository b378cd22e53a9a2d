"""Byte-identity check of dedupkit's outputs between two builds (a refactor must not change them).

    # 1. outputs of a reference build (e.g. a pristine checkout of the commit before a refactor)
    python benchmarks/compare_outputs.py run --dedupkit /work/wt-base/.venv/bin/dedupkit \
        --data ../shared/data --make-corpus ../shared/bench/make_corpus.py --out /work/runs/baseline
    # 2. outputs of this build, then the comparison (exit 0: identical, 1: differences)
    python benchmarks/compare_outputs.py run --dedupkit .venv/bin/dedupkit \
        --data ../shared/data --make-corpus ../shared/bench/make_corpus.py --out /tmp/mine
    python benchmarks/compare_outputs.py compare /work/runs/baseline /tmp/mine

`run` prepares the inputs under OUT/in/ (a `make_corpus.py --n 20000 --seed 42` corpus, the suites of
--data through a symbolic link, a copy of examples/corpus, an eval set and an index/drop split cut
from the corpus), then runs a fixed list of commands (every stage with its defaults and a few other
options, `run`, `apply`, `index`, `check`, `stats`, `audit`) with OUT as the working folder, so that
every path the tool records is relative and the same in any OUT. Each command's output goes to
OUT/out/NAME, its stdout/stderr to OUT/log/NAME.*, its exit code and time to OUT/commands.json.
`--dedupkit` is a `dedupkit` executable or a Python interpreter (run as `python -m dedupkit`).
DEDUPKIT_* variables of the environment pass through (e.g. DEDUPKIT_KERNELS=python).

`compare A B` checks, command by command: the exit codes; every Parquet file (manifests, spans,
clean shards) and every other data file byte for byte, printing the first differing rows of a
Parquet file that differs; every JSON file (summaries) and JSON stdout with timings, creation times
and the run folder's absolute path left out and SHA-1 digests masked (they hash summaries, which
hold timings). Hidden files (ownership markers, locks) and caches are
not compared. `--ignore-key KEY` leaves out one more JSON key (e.g. one a change adds on purpose).

About 36 commands; 4-6 minutes on two shared cores. Distilling the static model takes 1-3 of them:
`--static-cache DIR` copies an already distilled one from DIR/static (e.g. the baseline run's
cache/) into the run's cache instead, so only the embedding with it is checked.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CORPUS = "in/corpus/docs.parquet"
CORPUS_JSONL = "in/corpus/docs.jsonl"
REUTERS = "in/suites/reuters-nd/docs.parquet"
REUTERS_JSONL = "in/suites/reuters-nd/docs.jsonl"
MRPC = "in/suites/mrpc-groups/docs.parquet"
QQP = "in/suites/qqp-sample/docs.parquet"
CLOUGH = "in/suites/clough-stevenson/docs.parquet"
CLOUGH_JSONL = "in/suites/clough-stevenson/docs.jsonl"
EXAMPLES = "in/examples"
EVAL = ["--against", "quiz=in/evals/quiz.jsonl", "--eval-fields", "question,answer", "--eval-id", "id"]
ID = ["--id-column", "id"]
CACHE = ["--cache-dir", "cache"]

# (name, argv after `dedupkit`, whether `-o out/NAME -q` is appended, whether stdout is compared).
# Order matters: apply, stats and check read what earlier commands wrote.
COMMANDS: list[tuple[str, list[str], bool, bool]] = [
    ("exact-corpus", ["exact", CORPUS, *ID], True, False),
    ("exact-corpus-jsonl-w2-longest", ["exact", CORPUS_JSONL, *ID, "--workers", "2", "--keep", "longest",
                                       "--normalize", "nfkc,lower,punctuation,whitespace"], True, False),
    ("exact-examples", ["exact", EXAMPLES], True, False),
    ("exact-examples-keepby", ["exact", EXAMPLES, *ID, "--keep-by", "quality", "--keep-order", "asc"], True, False),
    ("exact-reuters", ["exact", REUTERS, *ID], True, False),
    ("fuzzy-corpus", ["fuzzy", CORPUS, *ID], True, False),
    ("fuzzy-corpus-w2-signature", ["fuzzy", CORPUS, *ID, "--workers", "2", "--verify", "signature",
                                   "--bands", "16", "--rows", "8"], True, False),
    ("fuzzy-reuters", ["fuzzy", REUTERS, *ID], True, False),
    ("fuzzy-reuters-containment", ["fuzzy", REUTERS_JSONL, *ID, "--measure", "containment,jaccard",
                                   "--containment-threshold", "0.8", "--cluster", "split", "--keep", "longest"],
     True, False),
    ("fuzzy-clough-char", ["fuzzy", CLOUGH_JSONL, *ID, "--shingle", "char", "--ngram", "5", "--threshold", "0.5",
                           "--keep", "shortest", "--verify", "jaccard"], True, False),
    ("fuzzy-examples-keepby", ["fuzzy", EXAMPLES, "--keep-by", "quality", "--scheme", "legacy"], True, False),
    ("semantic-mrpc-static", ["semantic", MRPC, *ID, "--model", "static", *CACHE], True, False),
    ("semantic-qqp-static-easy", ["semantic", QQP, *ID, "--model", "static", *CACHE, "--keep", "easy",
                                  "--eps", "0.1"], True, False),
    ("semantic-clough-static-analyze", ["semantic", CLOUGH, *ID, "--model", "static", *CACHE, "--analyze",
                                        "--eps", "0.05,0.1,0.2"], True, False),
    ("semantic-mrpc-minilm", ["semantic", MRPC, *ID, *CACHE], True, False),
    ("semantic-examples-minilm-keepby", ["semantic", EXAMPLES, *CACHE, "--keep-by", "quality", "--keep", "random",
                                         "--seed", "7", "--eps", "0.15"], True, False),
    ("substring-corpus", ["substring", CORPUS, *ID], True, False),
    ("substring-reuters-line-none", ["substring", REUTERS_JSONL, *ID, "--unit", "line", "--min-docs", "3",
                                     "--keep", "none", "--min-length", "200"], True, False),
    ("audit-reuters", ["audit", REUTERS, "-q"], False, True),
    ("audit-examples-20", ["audit", EXAMPLES, "--min-tokens", "20", "-q"], False, True),
    ("decontaminate-corpus", ["decontaminate", CORPUS, *ID, *EVAL], True, False),
    ("decontaminate-corpus-cut", ["decontaminate", CORPUS_JSONL, *ID, *EVAL, "--mode", "cut", "--margin", "20"],
     True, False),
    ("run-examples", ["run", EXAMPLES], True, False),
    ("run-corpus-clean", ["run", CORPUS, *ID, "--clean", "out/run-corpus-clean.clean"], True, False),
    ("run-reuters-set-w2", ["run", REUTERS, *ID, "--stages", "exact,fuzzy,substring", "--set",
                            "fuzzy.threshold=0.8", "--workers", "2"], True, False),
    ("stats-run-corpus", ["stats", "out/run-corpus-clean", "--json"], False, True),
    ("apply-corpus-fuzzy", ["apply", CORPUS, "-m", "out/fuzzy-corpus", "-o", "out/apply-corpus-fuzzy"], False, False),
    ("apply-corpus-jsonl", ["apply", CORPUS_JSONL, "-m", "out/exact-corpus-jsonl-w2-longest",
                            "-o", "out/apply-corpus-jsonl"], False, False),
    ("apply-corpus-substring", ["apply", CORPUS, "-m", "out/substring-corpus", "-o", "out/apply-corpus-substring"],
     False, False),
    ("apply-reuters-cut", ["apply", REUTERS_JSONL, "-m", "out/substring-reuters-line-none",
                           "-o", "out/apply-reuters-cut"], False, False),
    ("apply-examples-chain", ["apply", EXAMPLES, "-m", "out/exact-examples", "-m", "out/fuzzy-examples-keepby",
                              "-o", "out/apply-examples-chain"], False, False),
    ("index-create", ["index", "create", "out/idx", "--from", "in/base/docs.parquet", "--stages", "exact,fuzzy",
                      *ID, "-q"], False, False),
    ("index-info", ["index", "info", "out/idx", "--json"], False, True),
    ("check-drop", ["check", "in/drop/docs.parquet", "--against", "out/idx", *ID], True, False),
    ("check-drop-evals", ["check", "in/drop/docs.parquet", "--against", "out/idx", "--against",
                          "in/evals/quiz.jsonl", "--eval-fields", "question,answer", "--eval-id", "id", *ID,
                          "--eval-output", "out/check-drop-evals.evals", "--max-dup-rate", "0.05"], True, False),
    ("index-add", ["index", "add", "out/idx", "in/drop/docs.parquet", *ID, "-q"], False, False),
    ("index-info-after-add", ["index", "info", "out/idx", "--json"], False, True),
]

# JSON keys whose values change from run to run and say nothing of results: times, and any key
# ending in _s (seconds). SHA-1 digests (40 hex digits: settings keys, pipeline.json's summary_sha)
# hash files that hold timings or absolute paths, so they are masked too; the xxh3 fingerprints and
# checksums of inputs and manifest parts are compared.
VOLATILE = {"created", "updated", "timings", "seconds", "elapsed", "rate", "eta"}
SHA1 = re.compile(r"\b[0-9a-f]{40}\b")
# Keys of one command's JSON stdout that change from run to run: `index info` counts the writer's
# lock file, whose holder record (pid, start time) changes length between runs; the index's own
# files under out/idx are compared byte for byte.
STDOUT_VOLATILE = {"index-info": {"bytes", "bytes_per_doc"}, "index-info-after-add": {"bytes", "bytes_per_doc"}}


def _prepare(out: Path, data: Path, make_corpus: Path, static_cache: Path | None) -> None:
    import pyarrow.parquet as pq

    inp = out / "in"
    inp.mkdir(parents=True)
    (inp / "suites").symlink_to(data.resolve(), target_is_directory=True)
    shutil.copytree(REPO / "examples" / "corpus", inp / "examples")
    subprocess.run([sys.executable, str(make_corpus), "--n", "20000", "--seed", "42", "--out", str(inp / "corpus")],
                   check=True, stdout=subprocess.DEVNULL)
    for extra in ("truth.parquet", "truth.csv", "meta.json"):
        (inp / "corpus" / extra).unlink(missing_ok=True)
    table = pq.read_table(inp / "corpus" / "docs.parquet")
    for name, part in (("base", table.slice(0, 15000)), ("drop", table.slice(15000))):
        (inp / name).mkdir()
        pq.write_table(part, inp / name / "docs.parquet")
    # Eval items: passages of every 487th corpus document (so decontaminate and check find some).
    texts = table.column("text").to_pylist()
    (inp / "evals").mkdir()
    with open(inp / "evals" / "quiz.jsonl", "w") as fh:
        for i in range(40):
            words = texts[i * 487].split()
            fh.write(json.dumps({"id": f"q{i}", "question": " ".join(words[40:100]),
                                 "answer": " ".join(words[100:104])}) + "\n")
    if static_cache is not None:
        shutil.copytree(static_cache / "static", out / "cache" / "static")


def _env(out: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "HF_"))}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               HOME=str(out / "home"), XDG_CACHE_HOME=str(out / "home" / ".cache"), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", PYTHONHASHSEED="0")
    return env


def cmd_run(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    if out.exists():
        if not args.overwrite:
            sys.exit(f"{out} exists; pass --overwrite to replace it")
        shutil.rmtree(out)
    # abspath, not resolve(): a venv's python is a symbolic link that must stay one.
    exe = Path(os.path.abspath(args.dedupkit) if os.sep in args.dedupkit else shutil.which(args.dedupkit) or "")
    base = [str(exe), "-m", "dedupkit"] if exe.name.startswith("python") else [str(exe)]
    t0 = time.perf_counter()
    _prepare(out, Path(args.data), Path(args.make_corpus), Path(args.static_cache) if args.static_cache else None)
    (out / "out").mkdir()
    (out / "log").mkdir()
    (out / "home").mkdir()
    env = _env(out)
    records = []
    only = re.compile(args.only) if args.only else None
    for name, argv, with_output, _ in COMMANDS:
        if only and not only.search(name):
            continue
        full = [*base, *argv, *(["-o", f"out/{name}", "-q"] if with_output else [])]
        t = time.perf_counter()
        with open(out / "log" / f"{name}.stdout", "wb") as so, open(out / "log" / f"{name}.stderr", "wb") as se:
            rc = subprocess.run(full, cwd=out, env=env, stdout=so, stderr=se).returncode
        secs = time.perf_counter() - t
        records.append({"name": name, "argv": argv, "rc": rc, "seconds": round(secs, 2)})
        print(f"{name:40s} rc={rc}  {secs:6.1f} s", flush=True)
    total = time.perf_counter() - t0
    load = os.getloadavg()
    (out / "commands.json").write_text(json.dumps({
        "dedupkit": base, "env": {k: v for k, v in os.environ.items() if k.startswith("DEDUPKIT_")},
        "commands": records, "seconds": round(total, 1), "load": [round(x, 2) for x in load]}, indent=1))
    print(f"{len(records)} commands in {total:.0f} s (load {load[0]:.2f}); outputs in {out}")
    return 0


# ---------------------------------------------------------------------------------------------------- compare


def _scrub(obj, root: str, ignore: set[str]):
    """The JSON value without volatile keys, the run folder's absolute path replaced by <RUN> and
    SHA-1 digests by <sha1>."""
    if isinstance(obj, dict):
        return {k: _scrub(v, root, ignore) for k, v in obj.items() if k not in ignore and not k.endswith("_s")}
    if isinstance(obj, list):
        return [_scrub(v, root, ignore) for v in obj]
    if isinstance(obj, str):
        return SHA1.sub("<sha1>", obj.replace(root, "<RUN>"))
    return obj


def _json_diffs(a, b, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if k not in a:
                out.append(f"{path}/{k}: only in B ({json.dumps(b[k])[:120]})")
            elif k not in b:
                out.append(f"{path}/{k}: only in A ({json.dumps(a[k])[:120]})")
            else:
                out.extend(_json_diffs(a[k], b[k], f"{path}/{k}"))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _json_diffs(x, y, f"{path}[{i}]")]
    if a != b:
        return [f"{path}: A={json.dumps(a)[:160]} B={json.dumps(b)[:160]}"]
    return []


def _parquet_diff(a: Path, b: Path, max_rows: int) -> list[str]:
    import pyarrow.parquet as pq

    ta, tb = pq.read_table(a), pq.read_table(b)
    out = []
    if ta.schema != tb.schema:
        out.append(f"schema differs:\n      A: {ta.schema.to_string(show_schema_metadata=False)!r}\n"
                   f"      B: {tb.schema.to_string(show_schema_metadata=False)!r}")
    if ta.num_rows != tb.num_rows:
        out.append(f"rows: A={ta.num_rows} B={tb.num_rows}")
    cols = [c for c in ta.column_names if c in tb.column_names]
    if not out and ta.schema.metadata != tb.schema.metadata:
        out.append("schema metadata differs")
    shown = 0
    for i in range(min(ta.num_rows, tb.num_rows)):
        ra = {c: ta.column(c)[i].as_py() for c in cols}
        rb = {c: tb.column(c)[i].as_py() for c in cols}
        if ra != rb:
            diff = {c: (ra[c], rb[c]) for c in cols if ra[c] != rb[c]}
            ident = {c: ra[c] for c in ("shard", "row", "doc_id") if c in ra}
            out.append(f"row {i} {ident}: " + "; ".join(f"{c}: A={x!r:.80} B={y!r:.80}" for c, (x, y) in diff.items()))
            shown += 1
            if shown >= max_rows:
                break
    if not out:
        out.append("same rows and schema, different bytes (Parquet encoding or file metadata)")
    return out


def _text_diff(a: Path, b: Path) -> list[str]:
    la, lb = a.read_bytes().split(b"\n"), b.read_bytes().split(b"\n")
    for i, (x, y) in enumerate(zip(la, lb)):
        if x != y:
            j = next((k for k, (c, d) in enumerate(zip(x, y)) if c != d), min(len(x), len(y)))
            lo = max(0, j - 40)
            return [f"line {i + 1}, byte {j}: A=...{x[lo:j + 80]!r} B=...{y[lo:j + 80]!r}"]
    return [f"lines: A={len(la)} B={len(lb)}"]


def _files(root: Path) -> dict[str, Path]:
    """Files to compare under root, by relative path: no hidden files, no caches."""
    found = {}
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if p.is_dir() or any(part.startswith(".") for part in rel.parts) or rel.parts[0] == "cache":
            continue
        found[str(rel)] = p
    return found


def cmd_compare(args: argparse.Namespace) -> int:
    ra, rb = Path(args.a).resolve(), Path(args.b).resolve()
    ignore = VOLATILE | set(args.ignore_key)
    ca = json.loads((ra / "commands.json").read_text())
    cb = json.loads((rb / "commands.json").read_text())
    problems: list[tuple[str, str, list[str]]] = []
    rc_a = {r["name"]: r["rc"] for r in ca["commands"]}
    rc_b = {r["name"]: r["rc"] for r in cb["commands"]}
    for name in sorted(set(rc_a) | set(rc_b)):
        if rc_a.get(name) != rc_b.get(name):
            problems.append((name, "exit code", [f"A={rc_a.get(name)} B={rc_b.get(name)}"]))
    stdout_names = {n for n, _, _, s in COMMANDS if s}
    for name in sorted(stdout_names & set(rc_a) & set(rc_b)):
        sa = (ra / "log" / f"{name}.stdout").read_text()
        sb = (rb / "log" / f"{name}.stdout").read_text()
        try:
            skip = ignore | STDOUT_VOLATILE.get(name, set())
            d = _json_diffs(_scrub(json.loads(sa), str(ra), skip), _scrub(json.loads(sb), str(rb), skip))
        except json.JSONDecodeError:
            d = [] if sa.replace(str(ra), "<RUN>") == sb.replace(str(rb), "<RUN>") else ["stdout differs"]
        if d:
            problems.append((name, "stdout", d))
    fa, fb = _files(ra / "out"), _files(rb / "out")
    checked = 0
    for rel in sorted(set(fa) | set(fb)):
        if rel not in fb or rel not in fa:
            problems.append((rel, "file", ["only in " + ("A" if rel in fa else "B")]))
            continue
        checked += 1
        a, b = fa[rel], fb[rel]
        if rel.endswith(".json"):
            ja = _scrub(json.loads(a.read_text()), str(ra), ignore)
            jb = _scrub(json.loads(b.read_text()), str(rb), ignore)
            d = _json_diffs(ja, jb)
            if d:
                problems.append((rel, "json", d))
        elif a.read_bytes() != b.read_bytes():
            if rel.endswith(".parquet"):
                problems.append((rel, "parquet", _parquet_diff(a, b, args.max_rows)))
            elif rel.endswith((".jsonl", ".txt", ".csv", ".tsv", ".html")):
                problems.append((rel, "bytes", _text_diff(a, b)))
            else:
                problems.append((rel, "bytes", [f"sizes A={a.stat().st_size} B={b.stat().st_size}"]))
    for what, kind, lines in problems:
        print(f"DIFF {kind:9s} {what}")
        for line in lines[: args.max_rows * 2]:
            print(f"    {line}")
    print(f"{len(rc_a)} commands, {checked} files compared (A={ra}, B={rb}): "
          + ("identical" if not problems else f"{len(problems)} differences"))
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the fixed command list with one build")
    r.add_argument("--dedupkit", required=True, help="dedupkit executable, or a python that has dedupkit")
    r.add_argument("--data", required=True, help="the suites folder (../shared/data)")
    r.add_argument("--make-corpus", required=True, help="path of make_corpus.py (../shared/bench/make_corpus.py)")
    r.add_argument("--out", required=True, help="run folder to create")
    r.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    r.add_argument("--only", help="regular expression: run only the commands whose name matches")
    r.add_argument("--static-cache", help="a --cache-dir holding static/ (a distilled static model) to copy")
    c = sub.add_parser("compare", help="compare two run folders (exit 1 when they differ)")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--max-rows", type=int, default=5, help="differing rows shown per file")
    c.add_argument("--ignore-key", action="append", default=[], help="one more JSON key to leave out")
    args = p.parse_args(argv)
    return cmd_run(args) if args.cmd == "run" else cmd_compare(args)


if __name__ == "__main__":
    sys.exit(main())
