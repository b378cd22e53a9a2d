"""``dedupkit decontaminate``: matching rules, the C kernel against its Python twin, the CLI, the
manifest contract, guardrails and bad input."""

from __future__ import annotations

import json
import random
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from tests.support import read_manifest, run_subprocess, write_jsonl, write_parquet, write_rows
from tests.support.invariants import check_output
from dedupkit import api, kernels
from dedupkit.cli.main import cli
from dedupkit.decontaminate import (
    DecontaminateConfig, EvalIndex, find_matches, load_eval_sets, ngram_scan, parse_against,
)
from dedupkit.errors import ConfigError, GuardrailError, InputError

LONG_Q = ("Which amendment to the constitution of the united states guarantees the freedom of speech, "
          "of the press and of peaceful assembly to every citizen of the country?")
ITEMS = [
    {"id": "long", "question": LONG_Q, "choices": ["First", "Second", "Fifth", "Tenth"], "answer": "First"},
    {"id": "short", "question": "What is the supreme law of the land?", "choices": [], "answer": "the Constitution"},
    {"id": "tiny", "question": "Who vetoes bills?", "choices": [], "answer": "the President"},
    {"id": "ru", "question": "Какая река самая длинная в Европе и сколько у неё притоков?", "choices": [],
     "answer": "Волга"},
    {"id": "none", "question": "Ok?", "choices": [], "answer": "no"},
]
FILLER = ("Tax forms for the coming season were mailed to every household in the county last week, and "
          "officials said the deadline for filing will not move this year. ")


def eval_file(tmp_path: Path, fmt: str = "jsonl") -> Path:
    if fmt == "parquet":
        return write_parquet(tmp_path / "evals" / "quiz.parquet", ITEMS)
    return write_jsonl(tmp_path / "evals" / "quiz.jsonl", ITEMS)


@pytest.fixture
def index(tmp_path):
    items = load_eval_sets([str(eval_file(tmp_path))], ("question", "choices", "answer"), "id")
    return items, EvalIndex.build(items, DecontaminateConfig())


def ids_found(text: str, items, ix, min_overlap: float = 0.5) -> list[str]:
    return [items.item_id(m.item) for m in find_matches(text, ix, min_overlap)]


# --- matching ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["verbatim", "rewrapped", "recased", "answer_changed", "question_only",
                                  "inside_long", "punctuation"])
def test_planted_items_are_found(index, kind):
    items, ix = index
    q = LONG_Q
    text = {
        "verbatim": f"{q} First, Second, Fifth, Tenth. Answer: First",
        "rewrapped": textwrap.fill(q + " First", 40),
        "recased": q.upper(),
        "answer_changed": f"{q} Answer: the Fourth",
        "question_only": q,
        "inside_long": FILLER * 200 + q + " " + FILLER * 200,
        "punctuation": q.replace(" ", " -- ").replace(",", ";;"),
    }[kind]
    assert ids_found(text, items, ix) == ["long"]


def test_short_prompt_is_matched_whole_and_extended_when_tiny(index):
    items, ix = index
    assert ids_found("Quiz night! WHAT is the supreme law\nof the land?", items, ix) == ["short"]
    # A look-alike statement on the same topic is not the question.
    assert ids_found("The Constitution is the supreme law of the land, the court said.", items, ix) == []
    # 'Who vetoes bills?' has 3 tokens: its window runs on into the answer (min_tokens 5).
    assert ids_found("Who vetoes bills? The President.", items, ix) == ["tiny"]
    assert ids_found("Who vetoes bills? Congress does not.", items, ix) == []
    assert ix.meta["too_short"] == 1  # 'Ok? no' has 2 tokens: not indexed


def test_unicode_items_match_across_case_and_punctuation(index):
    items, ix = index
    assert ids_found("Вопрос: КАКАЯ река самая длинная в Европе, и сколько у неё притоков?!", items, ix) == ["ru"]


def test_a_shared_idiom_is_not_a_hit(index):
    items, ix = index
    # 13 tokens of a 27-token prompt: overlap 0.48 < 0.5.
    idiom = "the constitution of the united states guarantees the freedom of speech of the"
    ms = find_matches(f"As everyone knows, {idiom} people.", ix, 0.5)
    assert ms == []
    ms = find_matches(f"As everyone knows, {idiom} people.", ix, 0.4)
    assert [items.item_id(m.item) for m in ms] == ["long"] and 0.4 < ms[0].overlap < 0.5


def test_match_offsets_point_at_the_matched_text(index):
    items, ix = index
    text = "Ünïcode “quotes”: what is the supreme law of the land — the Constitution"
    (m,) = find_matches(text, ix, 0.5)
    b = text.encode("utf-8")
    assert b[m.start:m.end].decode() == "what is the supreme law of the land"
    # NFKC changes the length before the match ("½" -> "1⁄2", "ﬁ" -> "fi"): offsets still map back
    text = "½ cup of ﬂour: WHAT is the supreme law of the ﬁnal land? no: what is the supreme law of the land"
    (m,) = find_matches(text, ix, 0.5)
    assert m.start is not None
    assert text.encode("utf-8")[m.start:m.end].decode() == "what is the supreme law of the land"


@pytest.mark.skipif(kernels.decon is None, reason="C extension not built")
def test_c_kernel_equals_python_twin():
    rng = random.Random(3)
    vocab = ["alpha", "Beta", "GAMMA", "délta", "ЖУК", "川", "x_1", "42", "naïve", "Ωmega"]
    seps = [" ", ", ", "\n", " — ", "!? ", "\t", "“", "\u00a0"]
    texts = ["".join(rng.choice(vocab) + rng.choice(seps) for _ in range(rng.randrange(0, 40))) for _ in range(60)]
    texts += ["", "   ", "ﬁne ligature", "ＦＵＬＬ width"]
    sizes = [3, 5, 8]
    all_c = ngram_scan(texts, sizes, emit_all=True, k0=3)
    all_py = kernels.call_python(ngram_scan, texts, sizes, emit_all=True, k0=3)
    for a, b in zip(all_c, all_py):
        assert np.array_equal(a, b)
    assert len(all_c[0]) > 100
    # Filtered scans: bitmaps built from half of the keys give the same candidates on both paths.
    from dedupkit.decontaminate import _bitmap

    keys = np.unique(all_c[3][::2])
    pre, pl = _bitmap(all_c[4][::2], min_log2=10)
    full, fl = _bitmap(keys, min_log2=10)
    c = ngram_scan(texts, sizes, pre, pl, full, fl, k0=3)
    py = kernels.call_python(ngram_scan, texts, sizes, pre, pl, full, fl, k0=3)
    for a, b in zip(c, py):
        assert np.array_equal(a, b)
    assert np.isin(keys, c[3]).all()  # no false negatives


def test_c_kernel_rejects_bad_offsets():
    if kernels.decon is None:
        pytest.skip("C extension not built")
    off = np.array([0, 10], np.int64).tobytes()
    with pytest.raises(ValueError, match="ngram_scan: offsets"):
        kernels.decon.ngram_scan(b"abc", off, 1, bytes(65), 1, np.zeros(1, np.uint8), 3, np.zeros(1, np.uint8), 3, True)


# --- eval sets --------------------------------------------------------------------------------

def test_eval_sets_by_name_text_files_and_folders(tmp_path):
    (tmp_path / "lines.txt").write_text("first item here\n\nsecond item line\n")
    write_jsonl(tmp_path / "folder" / "a.jsonl", [{"prompt": "p one"}, {"prompt": "p two"}])
    write_parquet(tmp_path / "folder" / "b.parquet", [{"prompt": "p three"}])
    import gzip

    with gzip.open(tmp_path / "folder" / "c.jsonl.gz", "wt") as fh:
        fh.write(json.dumps({"prompt": "p four"}) + "\n")
    items = load_eval_sets([f"mine={tmp_path / 'lines.txt'}", str(tmp_path / "folder")])
    assert items.sets == ["mine", "folder"]
    assert items.ids.to_pylist() == ["1", "3", "a.jsonl:0", "a.jsonl:1", "b.parquet:0", "c.jsonl.gz:0"]
    assert items.prompts.to_pylist() == ["first item here", "second item line", "p one", "p two", "p three", "p four"]
    assert [s["items"] for s in items.sources] == [2, 4]


def test_eval_set_errors_name_the_file_and_fix(tmp_path):
    f = write_jsonl(tmp_path / "e.jsonl", [{"q": "x"}])
    with pytest.raises(InputError, match=r"e.jsonl: none of question.*pass --eval-fields"):
        load_eval_sets([str(f)])
    with pytest.raises(InputError, match=r"no column 'answer'.*fix --eval-fields"):
        load_eval_sets([str(f)], ["q", "answer"])
    with pytest.raises(InputError, match=r"no id column 'uid'"):
        load_eval_sets([str(f)], ["q"], "uid")
    with pytest.raises(InputError, match="does not exist"):
        load_eval_sets([str(tmp_path / "missing.jsonl")])
    with pytest.raises(ConfigError, match="two eval sets are named 'e'"):
        parse_against([str(f), str(f)])
    (tmp_path / "mixed.jsonl").write_text('{"question": "ok", "id": 1}\n{"question": ["a", "b"], "id": "x"}\n')
    items = load_eval_sets([str(tmp_path / "mixed.jsonl")], id_field="id")  # mixed types: the Python reader
    assert items.prompts.to_pylist() == ["ok", "a\nb"] and items.ids.to_pylist() == ["1", "x"]
    (tmp_path / "bad.jsonl").write_text('{"question": "ok"}\nnot json\n')
    with pytest.raises(InputError, match=r"bad.jsonl line 2: not valid JSON"):
        load_eval_sets([str(tmp_path / "bad.jsonl")])


def test_config_is_validated():
    with pytest.raises(ConfigError, match="min_tokens"):
        DecontaminateConfig(ngram=5, min_tokens=8)
    with pytest.raises(ConfigError, match="mode"):
        DecontaminateConfig(mode="erase")
    with pytest.raises(ConfigError, match="min_overlap"):
        DecontaminateConfig(min_overlap=0)


# --- runs -------------------------------------------------------------------------------------

DOCS = [
    "Harvest notes from the valley: apples were late this year and pears were early.",
    f"Practice test. {LONG_Q} (a) First (b) Second. Answer: First",
    "The Constitution is the supreme law of the land, and every other law must yield to it.",
    "quiz: what is THE supreme law of the land?\nanswer: the constitution",
    FILLER * 5,
    "Вопрос: какая река самая длинная в Европе и сколько у неё притоков? Ответ: Волга.",
]


def corpus(tmp_path: Path, fmt: str) -> Path:
    d = tmp_path / "data"
    rows = [{"id": f"d{i}", "text": t} for i, t in enumerate(DOCS)]
    write_rows(d / "p0", rows[:3], fmt)
    write_rows(d / "p1", rows[3:], fmt)
    return d


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_cli_drop_names_set_item_overlap_and_text(tmp_path, fmt):
    data = corpus(tmp_path, fmt)
    ev = eval_file(tmp_path, fmt)
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["decontaminate", str(data), "--against", f"quiz={ev}", "--eval-fields",
                                   "question,choices,answer", "--eval-id", "id", "-o", str(out), "--id-column", "id"])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(out)
    rows = {r["doc_id"]: r for r in check_output(out, len(DOCS), pointers="external")}
    dropped = sorted(d for d, r in rows.items() if not r["keep"])
    assert dropped == ["d1", "d3", "d5"]
    assert rows["d1"]["eval_set"] == "quiz" and rows["d1"]["eval_item"] == "long"
    assert rows["d1"]["overlap"] == pytest.approx(1.0) and rows["d1"]["score"] == pytest.approx(1.0)
    assert rows["d1"]["matched_text"].startswith("Which amendment")
    assert rows["d3"]["eval_item"] == "short" and rows["d3"]["matched_text"] == "what is THE supreme law of the land"
    assert json.loads(rows["d3"]["eval_matches"])[0]["item"] == "short"
    assert rows["d2"]["keep"] and rows["d2"]["eval_item"] is None and rows["d2"]["cluster_id"] is None
    assert all(r["stage"] == "decontaminate" for r in rows.values())
    assert [rows[d]["duplicate_of"] for d in ("d1", "d2", "d3")] == ["quiz/long", None, "quiz/short"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stats"]["contaminated_docs"] == 3
    assert summary["stats"]["per_eval_set"] == {"quiz": 3}
    assert "quiz/long: 1 documents" in res.stderr


def test_workers_and_batch_size_do_not_change_the_manifest(tmp_path):
    data = corpus(tmp_path, "jsonl")
    ev = str(eval_file(tmp_path))
    a = api.decontaminate([str(data)], str(tmp_path / "a"), [ev], eval_fields="question,answer", workers=1)
    b = api.decontaminate([str(data)], str(tmp_path / "b"), [ev], eval_fields="question,answer", workers=2,
                          batch_size=2)
    assert read_manifest(a.out) == read_manifest(b.out)


def test_max_drop_rate_writes_nothing_final(tmp_path):
    data = corpus(tmp_path, "jsonl")
    out = tmp_path / "out"
    with pytest.raises(GuardrailError, match="max-drop-rate"):
        api.decontaminate([str(data)], str(out), [str(eval_file(tmp_path))], eval_fields="question,answer",
                          max_drop_rate=0.1)
    assert not (out / "summary.json").exists()
    res = CliRunner().invoke(cli, ["decontaminate", str(data), "--against", str(eval_file(tmp_path)),
                                   "--eval-fields", "question,answer", "-o", str(out), "--max-drop-rate", "0.1"])
    assert res.exit_code == 4


def test_bad_records_are_skipped_and_counted(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "x.jsonl").write_text(json.dumps({"text": DOCS[3]}) + "\n{broken\n" + json.dumps({"text": DOCS[0]}) + "\n")
    ev = str(eval_file(tmp_path))
    with pytest.raises(InputError, match="x.jsonl"):
        api.decontaminate([str(d)], str(tmp_path / "fail"), [ev], eval_fields="question,answer")
    res = api.decontaminate([str(d)], str(tmp_path / "ok"), [ev], eval_fields="question,answer",
                            on_bad_record="skip")
    rows = check_output(res.out, 3, pointers="external")
    assert [r["row"] for r in rows] == [0, 1, 2]
    assert [r["keep"] for r in rows] == [False, False, True]  # the bad row is never kept
    assert res.summary["counts"]["bad_records"] == 1


def test_cli_usage_errors(tmp_path):
    data = corpus(tmp_path, "jsonl")
    res = CliRunner().invoke(cli, ["decontaminate", str(data), "-o", str(tmp_path / "o")])
    assert res.exit_code == 2 and "--against" in res.output
    res = CliRunner().invoke(cli, ["decontaminate", str(data), "--against", str(eval_file(tmp_path)), "-o",
                                   str(tmp_path / "o"), "--ngram", "4", "--min-tokens", "6"])
    assert res.exit_code == 2 and "--min-tokens" in res.output
    res = CliRunner().invoke(cli, ["decontaminate", str(data), "--against", str(tmp_path / "nope.jsonl"), "-o",
                                   str(tmp_path / "o")])
    assert res.exit_code == 1 and "does not exist" in res.output


def test_installed_command_runs(tmp_path):
    data = corpus(tmp_path, "jsonl")
    (tmp_path / "q.txt").write_text("what is the supreme law of the land\n")
    p = run_subprocess("decontaminate", str(data), "--against", str(tmp_path / "q.txt"), "-o", str(tmp_path / "o"),
                       "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["stats"]["contaminated_docs"] == 1


# --- check --against EVAL ---------------------------------------------------------------------

def test_check_against_eval_sets_fails_naming_each_item(tmp_path):
    data = corpus(tmp_path, "jsonl")
    ev = str(eval_file(tmp_path))
    out = tmp_path / "gate"
    r = CliRunner().invoke(cli, ["check", str(data), "--against", ev, "--eval-fields", "question,answer",
                                 "--eval-id", "id", "-o", str(out), "--id-column", "id"])
    assert r.exit_code == 3, r.output
    assert "d1: quiz/long (overlap 1.00)" in r.stderr and "d3: quiz/short" in r.stderr
    assert r.stdout.strip() == str(out)
    assert len(read_manifest(out)) == len(DOCS)
    clean = tmp_path / "clean"
    write_jsonl(clean / "c.jsonl", [{"id": "c0", "text": DOCS[0]}, {"id": "c1", "text": DOCS[2]}])
    r = CliRunner().invoke(cli, ["check", str(clean), "--against", ev, "--eval-fields", "question,answer",
                                 "-o", str(tmp_path / "gate2")])
    assert r.exit_code == 0, r.output
    assert "no eval item found" in r.stderr


def test_check_against_index_and_eval_sets(tmp_path):
    data = corpus(tmp_path, "jsonl")
    held = tmp_path / "held"
    write_jsonl(held / "h.jsonl", [{"id": "h0", "text": DOCS[0]}])
    idx = tmp_path / "corpus.idx"
    r = CliRunner().invoke(cli, ["index", "create", str(idx), "--from", str(held), "--id-column", "id", "-q"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "gate"
    r = CliRunner().invoke(cli, ["check", str(data), "--against", str(idx), "--against", f"quiz={eval_file(tmp_path)}",
                                 "--eval-fields", "question,answer", "--eval-id", "id", "-o", str(out),
                                 "--id-column", "id"])
    assert r.exit_code == 3, r.output  # no --max-dup-rate: only the eval items fail it
    assert "d5: quiz/ru" in r.stderr and "check: 1 duplicates" in r.stderr
    assert {x["doc_id"] for x in read_manifest(out) if not x["keep"]} == {"d0"}
    assert {x["doc_id"] for x in read_manifest(tmp_path / "gate-decontaminate") if not x["keep"]} == {"d1", "d3", "d5"}
    r = CliRunner().invoke(cli, ["check", str(data), "--against", str(idx), "--against", str(tmp_path / "idx2"),
                                 "-o", str(tmp_path / "o3")])
    assert r.exit_code == 2 and "one index" in r.output
    r = CliRunner().invoke(cli, ["check", str(data), "--against", str(eval_file(tmp_path)), "--update",
                                 "-o", str(tmp_path / "o4")])
    assert r.exit_code == 2 and "need an index" in r.output


# --- Ray --------------------------------------------------------------------------------------

@pytest.mark.ray
def test_ray_engine_gives_the_local_manifest(tmp_path):
    ray = pytest.importorskip("ray")
    import os

    from tests.support import SRC
    from dedupkit.engine.ray import init_local

    rng = random.Random(5)
    d = tmp_path / "data"
    for s in range(4):
        rows = [{"id": f"s{s}-{i}", "text": rng.choice(DOCS) + " " + FILLER * rng.randrange(3)} for i in range(15)]
        (write_parquet if s % 2 else write_jsonl)(d / f"p{s}.{'parquet' if s % 2 else 'jsonl'}", rows)
    ev = str(eval_file(tmp_path))
    local = api.decontaminate([str(d)], str(tmp_path / "local"), [ev], eval_fields="question,answer", eval_id="id",
                              id_column="id", workers=1)
    if ray.is_initialized():  # pragma: no cover - another module left one running
        ray.shutdown()
    init_local(2, runtime_env={"env_vars": {"PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}})
    try:
        on_ray = api.decontaminate([str(d)], str(tmp_path / "ray"), [ev], eval_fields="question,answer",
                                   eval_id="id", id_column="id", workers=2, engine="ray")
    finally:
        ray.shutdown()
    a, b = read_manifest(local.out), read_manifest(on_ray.out)
    assert a == b
    assert sum(not r["keep"] for r in a) > 10
    assert on_ray.summary["config"]["engine"] == "ray"


def test_inspect_names_set_item_overlap_and_text(tmp_path):
    data = corpus(tmp_path, "jsonl")
    out = tmp_path / "out"
    api.decontaminate([str(data)], str(out), [f"quiz={eval_file(tmp_path)}"], eval_fields="question,answer",
                      eval_id="id", id_column="id")
    r = CliRunner().invoke(cli, ["inspect", str(out), "--doc", "d3"])
    assert r.exit_code == 0, r.output
    assert "p1.jsonl row 0): dropped, holds 1 eval item(s)" in r.stdout
    assert "quiz/short  overlap 1.00" in r.stdout and "what is THE supreme law of the land" in r.stdout
    r = CliRunner().invoke(cli, ["inspect", str(out), "--largest", "2"])
    assert r.exit_code == 0 and "quiz/long found in 1 documents" in r.stdout and "DROP d1" in r.stdout
    r = CliRunner().invoke(cli, ["inspect", str(out), "--doc", "d0", "--json"])
    assert json.loads(r.stdout)[0]["doc"]["matches"] == []
    r = CliRunner().invoke(cli, ["inspect", str(out), "--doc", "nope"])
    assert r.exit_code == 1 and "not in" in r.stderr


# --- cut mode ---------------------------------------------------------------------------------

def test_cut_mode_writes_spans_and_apply_removes_them(tmp_path):
    d = tmp_path / "data"
    head = "Ünïcode “notes” on taxes. " + FILLER * 3
    rows = [
        {"id": "a", "text": head + "Quiz: what is the supreme law of the land? The Constitution. " + FILLER * 3},
        {"id": "b", "text": "Who vetoes bills? The President."},  # all of it would go: dropped
        {"id": "c", "text": FILLER},
        # eleven copies, each between long filler: more than --max-pieces pieces
        {"id": "e", "text": (FILLER * 3 + "What is the supreme law of the land? ") * 11},
    ]
    write_jsonl(d / "x.jsonl", rows)
    out = tmp_path / "cut"
    res = api.decontaminate([str(d)], str(out), [f"quiz={eval_file(tmp_path)}"], eval_fields="question,answer",
                            eval_id="id", id_column="id", mode="cut", margin=10)
    m = {r["doc_id"]: r for r in read_manifest(out)}
    assert [m[k]["keep"] for k in "abce"] == [True, False, True, False]
    assert m["a"]["decon_action"] == "cut" and m["b"]["decon_action"] == "drop" and m["e"]["decon_action"] == "drop"
    from dedupkit.spans import read_spans

    spans = read_spans(out).to_pylist()
    assert [(s["doc_id"], s["source"], s["stage"]) for s in spans] == [("a", "quiz/short", "decontaminate")]
    text_a = rows[0]["text"].encode("utf-8")
    s = spans[0]
    cut_piece = text_a[s["start"]:s["end"]].decode("utf-8")  # on character boundaries
    assert "what is the supreme law of the land" in cut_piece and len(cut_piece) <= len(
        "what is the supreme law of the land") + 2 * 10 + 2
    assert res.summary["stats"]["cut_docs"] == 1 and res.summary["counts"]["spans"] == 1
    api.apply([str(d)], [str(out)], str(tmp_path / "clean"))
    import pyarrow.dataset as ds

    kept = ds.dataset(str(tmp_path / "clean"), format="json").to_table().to_pylist()
    assert [r["id"] for r in kept] == ["a", "c"]
    assert "supreme law" not in kept[0]["text"] and kept[0]["text"].startswith("Ünïcode “notes” on taxes.")
    assert len(kept[0]["text"].encode("utf-8")) == len(text_a) - (s["end"] - s["start"])


def test_nfkc_ranges_cover_every_code_point_nfkc_may_change():
    import sys
    import unicodedata

    from dedupkit.decontaminate import _NFKC_RANGES, prepare

    ranges = [tuple(int(x, 16) for x in r.split("-")) for r in _NFKC_RANGES.split()]
    starts = np.array([a for a, _ in ranges])
    ends = np.array([b for _, b in ranges])

    def covered(cp: int) -> bool:
        i = int(np.searchsorted(starts, cp, "right")) - 1
        return i >= 0 and cp <= ends[i]

    if unicodedata.unidata_version == "14.0.0":  # the version the ranges were computed with
        for cp in range(0x80, sys.maxunicode + 1):
            if 0xD800 <= cp <= 0xDFFF:
                continue
            c = chr(cp)
            if unicodedata.category(c)[0] == "M" or unicodedata.normalize("NFKC", c) != c:
                assert covered(cp), hex(cp)
    assert not covered(ord("é")) and not covered(ord("ж"))
    # only texts that need it are normalised, and the result is the NFKC form either way
    texts = pa.array(["ﬁne ＡＢＣ ½", "café ok", "plain", "e\u0301 composed"])
    assert prepare(texts).to_pylist() == ["fine abc 1 2", "café ok", "plain", "é composed"]


def test_both_bitmap_builds_agree():
    from dedupkit.decontaminate import _bitmap

    keys = np.random.default_rng(0).integers(0, 2**63, 50000, dtype=np.uint64) * np.uint64(2)
    a, la = _bitmap(keys)  # bool-per-bit path (2**21 bits)
    b, lb = _bitmap(np.sort(keys), presorted=True)  # sorted reduceat path
    assert la == lb and np.array_equal(a, b)
    i = (keys >> np.uint64(64 - la)).astype(np.int64)
    assert ((a[i >> 3] >> (i & 7)) & 1).all()
    assert a.sum() > 0 and np.unpackbits(a).sum() <= len(keys)


def test_detail_pass_reads_only_row_groups_with_hits(tmp_path):
    rows = [{"id": f"d{i}", "text": DOCS[i % len(DOCS)] + f" n{i}"} for i in range(40)]
    write_parquet(tmp_path / "pq" / "x.parquet", rows, row_group_size=3)
    write_jsonl(tmp_path / "js" / "x.jsonl", rows)
    ev = [f"quiz={eval_file(tmp_path)}"]
    a = api.decontaminate([str(tmp_path / "pq")], str(tmp_path / "a"), ev, eval_fields="question,answer",
                          eval_id="id", id_column="id")
    b = api.decontaminate([str(tmp_path / "js")], str(tmp_path / "b"), ev, eval_fields="question,answer",
                          eval_id="id", id_column="id", batch_size=4)
    cols = ("doc_id", "keep", "eval_item", "overlap", "matched_text", "eval_matches")
    ma = [{c: r[c] for c in cols} for r in read_manifest(a.out)]
    mb = [{c: r[c] for c in cols} for r in read_manifest(b.out)]
    assert ma == mb
    assert [r["doc_id"] for r in ma if not r["keep"]] == [f"d{i}" for i in range(40) if i % len(DOCS) in (1, 3, 5)]
    assert all(r["matched_text"] for r in ma if not r["keep"])


def test_a_prompt_shared_by_several_items_is_matched_with_its_choices(tmp_path):
    generic = "Which of the following statements is true?"
    rows = [{"id": "a", "question": generic, "choices": ["Copper conducts electricity better than rubber does",
                                                         "Rubber conducts electricity better than copper does"]},
            {"id": "b", "question": generic, "choices": ["The moon is larger than the earth in diameter",
                                                         "The earth is larger than the moon in diameter"]}]
    f = write_jsonl(tmp_path / "mc.jsonl", rows)
    items = load_eval_sets([str(f)], ("question", "choices"), "id")
    ix = EvalIndex.build(items, DecontaminateConfig())
    assert ix.meta["shared_prompts"] == 2
    assert find_matches(f"Quiz. {generic} Think before you answer.", ix, 0.5) == []
    text = f"{generic}\n- The moon is larger than the earth in diameter\n- The earth is larger than the moon"
    assert [items.item_id(m.item) for m in find_matches(text, ix, 0.5)] == ["b"]
    # Choice labels between fields shorter than --ngram break every window (a documented limit).
    labelled = f"{generic} (A) The moon is larger than the earth in diameter (B) The earth is larger than the moon"
    assert find_matches(labelled, ix, 0.5) == []


# --- property: the matches equal a brute-force definition ------------------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

_VOCAB = ["ant", "Bee", "cat", "dög", "eel", "fox"]


def _brute(doc: list[str], items: list[list[str]], n: int, min_tokens: int, min_overlap: float) -> dict[int, float]:
    d = [t.lower() for t in doc]
    grams = {tuple(d[i:i + k]) for k in range(1, len(d) + 1) for i in range(len(d) - k + 1)}
    out = {}
    for j, it in enumerate(items):
        t = [x.lower() for x in it]
        if len(t) < min_tokens:
            continue
        if len(t) < n:
            ov = 1.0 if tuple(t) in grams else 0.0
        else:
            cov = set()
            for i in range(len(t) - n + 1):
                if tuple(t[i:i + n]) in grams:
                    cov.update(range(i, i + n))
            ov = len(cov) / len(t)
        if ov >= min_overlap:
            out[j] = ov
    return out


@settings(max_examples=80, deadline=None)
@given(items=st.lists(st.lists(st.sampled_from(_VOCAB), min_size=1, max_size=12), min_size=1, max_size=5),
       parts=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 11), st.integers(0, 12),
                                st.lists(st.sampled_from(_VOCAB), max_size=3)), max_size=6),
       seps=st.lists(st.sampled_from([" ", ", ", "\n", " — ", "!"]), min_size=1, max_size=3))
def test_matches_equal_the_brute_force_definition(items, parts, seps):
    """The document is slices of the items (so partial overlaps occur) mixed with random words."""
    cfg = DecontaminateConfig(ngram=4, min_tokens=2, min_overlap=0.5)
    doc: list[str] = []
    for j, start, length, noise in parts:
        it = items[j % len(items)]
        doc += [w.upper() if k % 3 == 0 else w for k, w in enumerate(it[start:start + length])] + noise
    ev = load_items_from_lists(items)
    ix = EvalIndex.build(ev, cfg)
    text = "".join(w + seps[i % len(seps)] for i, w in enumerate(doc))
    got = {m.item: m.overlap for m in find_matches(text, ix, cfg.min_overlap)}
    want = _brute(doc, items, cfg.ngram, cfg.min_tokens, cfg.min_overlap)
    # items with a shared prompt (identical lists) are matched on all fields: here the same tokens
    assert got.keys() == want.keys()
    for k in got:
        assert got[k] == pytest.approx(want[k], abs=1e-6)


def load_items_from_lists(items: list[list[str]]):
    from dedupkit.decontaminate import EvalItems

    texts = pa.array([" ".join(t) for t in items], pa.string())
    return EvalItems(sets=["h"], set_index=np.zeros(len(items), np.int32),
                     ids=pa.array([str(i) for i in range(len(items))], pa.string()), prompts=texts, texts=texts)


def test_rerun_rule_reuses_the_same_run_and_refuses_changed_eval_sets(tmp_path):
    from dedupkit.errors import OutputError

    data = corpus(tmp_path, "jsonl")
    ev = eval_file(tmp_path)
    kw = dict(eval_fields="question,answer", eval_id="id", id_column="id")
    first = api.decontaminate([str(data)], str(tmp_path / "o"), [str(ev)], **kw)
    again = api.decontaminate([str(data)], str(tmp_path / "o"), [str(ev)], **kw)
    assert not first.reused and again.reused
    write_jsonl(ev, ITEMS[:2])  # the eval set changed: the finished run no longer matches
    with pytest.raises(OutputError):
        api.decontaminate([str(data)], str(tmp_path / "o"), [str(ev)], **kw)
    res = api.decontaminate([str(data)], str(tmp_path / "o"), [str(ev)], overwrite=True, **kw)
    assert {r["eval_item"] for r in read_manifest(res.out)} == {None, "long", "short"}
