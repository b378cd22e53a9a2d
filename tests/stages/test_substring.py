"""Substring dedup and audit: exact against a brute-force reference, on every script."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import write_jsonl, write_parquet
from dedupkit import api, kernels
from dedupkit.cli.main import cli
from dedupkit.errors import ConfigError
from dedupkit.spans import read_spans
from dedupkit.stages import substring as sub
from dedupkit.stages.substring import TOKEN_RE, SubstringConfig

PIECES = ["a", "b", "ab", " ", " ", "\n", "日", "本", "語", "😀", "👍🏽", "e\u0301", "\u0301", "ß", "é", "ка", ".", "ﷺ"]


def ref_tokens(text: str) -> list[tuple[int, int]]:
    pos = [0]
    for ch in text:
        pos.append(pos[-1] + len(ch.encode()))
    return [(pos[m.start()], pos[m.end()]) for m in TOKEN_RE.finditer(text)]


def ref_windows(docs: list[str], k: int):
    """Every k-token window's bytes -> its occurrences (doc, start, end, first token), corpus order."""
    occ = defaultdict(list)
    for d, text in enumerate(docs):
        raw = text.encode()
        toks = ref_tokens(text)
        for t in range(len(toks) - k + 1):
            a, b = toks[t][0], toks[t + k - 1][1]
            occ[raw[a:b]].append((d, a, b, t))
    return occ


def ref_spans(docs: list[str], k: int, keep: str) -> list[tuple[int, int, int]]:
    """Brute force: the union of the byte ranges of repeated windows, first occurrence kept."""
    cut = defaultdict(list)
    for occs in ref_windows(docs, k).values():
        if len(occs) < 2:
            continue
        for i, (d, a, b, _) in enumerate(occs):
            if keep == "none" or i > 0:
                cut[d].append((a, b))
    out = []
    for d in sorted(cut):
        merged: list[list[int]] = []
        for a, b in sorted(cut[d]):
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        out += [(d, a, b) for a, b in merged]
    return out


def ref_audit(docs: list[str], k: int) -> dict:
    covered = {c: set() for c in sub.THRESHOLDS}
    for occs in ref_windows(docs, k).values():
        for c in sub.THRESHOLDS:
            if len(occs) >= c:
                for d, _, _, t in occs:
                    covered[c].update((d, t + j) for j in range(k))
    return {"tokens": sum(len(ref_tokens(t)) for t in docs), **{c: len(v) for c, v in covered.items()}}


def _write(tmp_path, docs, nshards=1, fmt="jsonl"):
    d = tmp_path / "data"
    per = -(-len(docs) // nshards)
    for s in range(nshards):
        rows = [{"text": t, "n": i} for i, t in enumerate(docs[s * per:(s + 1) * per])]
        if fmt == "jsonl":
            write_jsonl(d / f"s{s}.jsonl", rows)
        else:
            write_parquet(d / f"s{s}.parquet", rows)
    return d


texts = st.lists(st.sampled_from(PIECES), max_size=14).map("".join)


@given(st.lists(texts, min_size=1, max_size=6), st.integers(1, 3), st.sampled_from(["first", "none"]),
       st.sampled_from([1, 2, 4]), st.integers(1, 2))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_spans_equal_brute_force(tmp_path_factory, docs, k, keep, partitions, nshards):
    tmp = tmp_path_factory.mktemp("p")
    nshards = min(nshards, len(docs))
    d = _write(tmp, docs, nshards)
    res = api.substring([str(d)], str(tmp / "out"), min_tokens=k, keep=keep, partitions=partitions)
    per = -(-len(docs) // nshards)
    t = read_spans(tmp / "out")
    shard_no = {f"{d}/s{s}.jsonl": s for s in range(nshards)}
    got = sorted((shard_no[s] * per + r, a, b) for s, r, a, b in zip(
        t.column("shard").to_pylist(), t.column("row").to_pylist(), t.column("start").to_pylist(),
        t.column("end").to_pylist()))
    assert got == ref_spans(docs, k, keep)
    # spans land on character boundaries and the first occurrence they name holds the same bytes
    raw = [x.encode() for x in docs]
    for (g, a, b), dup, ds in zip(got, t.column("duplicate_of").to_pylist(), t.column("duplicate_start").to_pylist()):
        raw[g][a:b].decode()
        if keep == "first":
            sd, rd = dup.rsplit(":", 1)
            src = raw[shard_no[sd] * per + int(rd)]
            assert src[ds:ds + 1] == raw[g][a:a + 1]
        else:
            assert dup is None and ds is None
    # audit figures equal a brute-force count
    audit = res.summary["stats"]["audit"]
    ref = ref_audit(docs, k)
    assert audit["tokens"] == ref["tokens"]
    assert [audit["tokens_in_repeats"][f"{c}x"] for c in sub.THRESHOLDS] == [ref[c] for c in sub.THRESHOLDS]
    assert res.summary["counts"]["bytes_cut"] == sum(b - a for _, a, b in got)


@given(st.lists(st.sampled_from(PIECES + ["\t", "\x0b", "\u3000", "\x00"]), max_size=30).map("".join))
@settings(max_examples=300, deadline=None)
def test_c_tokenizer_equals_python(text):
    ts, te, cnt = sub.tokenize(pa.array([text, "x " + text]))
    ref = ref_tokens(text) + [(a, b) for a, b in ref_tokens("x " + text)]
    assert list(zip(ts.tolist(), te.tolist())) == ref


def test_python_path_equals_c(tmp_path):
    docs = ["one two three four 日本語テキスト five", "zero one two three four 日本語テキスト", "😀 😀 😀 😀"]
    d = _write(tmp_path, docs)
    a = api.substring([str(d)], str(tmp_path / "c"), min_tokens=3)
    b = kernels.call_python(api.substring, [str(d)], str(tmp_path / "py"), min_tokens=3)
    assert read_spans(tmp_path / "c").equals(read_spans(tmp_path / "py"))
    assert a.summary["stats"]["audit"]["tokens_in_repeats"] == b.summary["stats"]["audit"]["tokens_in_repeats"]


def test_results_do_not_depend_on_workers_or_batch_size(tmp_path, fmt):
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(40)]
    shared = " ".join(rng.choice(words, 30))
    docs = [" ".join(rng.choice(words, 20)) + " " + shared + " " + " ".join(rng.choice(words, 10)) for _ in range(30)]
    d = _write(tmp_path, docs, 3, fmt)
    a = api.substring([str(d)], str(tmp_path / "a"), min_tokens=8)
    b = api.substring([str(d)], str(tmp_path / "b"), min_tokens=8, workers=2, batch_size=7, partitions=8)
    assert read_spans(tmp_path / "a").equals(read_spans(tmp_path / "b"))
    assert a.summary["counts"]["spans"] >= 29


def test_min_length_drops_gutted_documents_and_apply_writes_cut_text(tmp_path):
    boiler = "this licence header repeats word for word in every file of the corpus"
    docs = [f"{boiler} first", f"{boiler} x", f"{boiler} and a long tail that stays after the cut"]
    d = tmp_path / "data"
    write_parquet(d / "a.parquet", [{"text": t, "id": i, "meta": [i]} for i, t in enumerate(docs)])
    res = api.substring([str(d)], str(tmp_path / "out"), min_tokens=5, min_length=10)
    m = pq.read_table(tmp_path / "out" / "manifest").sort_by("row")
    assert m.column("keep").to_pylist() == [True, False, True]
    assert m.column("stage").to_pylist() == ["substring"] * 3
    assert res.summary["counts"]["spans"] == 2
    api.apply([str(d)], [str(tmp_path / "out")], str(tmp_path / "clean"))
    t = pq.read_table(tmp_path / "clean" / "a.parquet")
    assert t.schema == pq.read_table(d / "a.parquet").schema
    assert t.column("text").to_pylist() == [docs[0], " and a long tail that stays after the cut"]
    assert t.column("meta").to_pylist() == [[0], [2]]


def test_keep_by_chooses_the_kept_occurrence(tmp_path):
    boiler = "a b c d e f g h"
    d = tmp_path / "data"
    write_jsonl(d / "a.jsonl", [{"text": f"x {boiler}", "q": 1}, {"text": f"y {boiler}", "q": 5}])
    api.substring([str(d)], str(tmp_path / "o"), min_tokens=4, keep_by="q")
    t = read_spans(tmp_path / "o")
    assert t.column("row").to_pylist() == [0] and t.column("duplicate_of").to_pylist() == [f"{d}/a.jsonl:1"]


@pytest.mark.parametrize("unit", ["line", "paragraph"])
def test_line_and_paragraph_units_with_guardrails(tmp_path, unit):
    sep = "\n" if unit == "line" else "\n\n"
    header = "Copyright the authors, all rights reserved, do not copy"
    nav = "Home | About | Contact | Blog | Shop"
    docs = [sep.join([header, f"body of document {i} with its own words and more words, enough of them to stay the larger part", nav]) for i in range(4)]
    docs.append(sep.join([header, nav]))  # would be gutted: protected
    docs.append(f"{header}  again but longer so it differs")
    d = tmp_path / "data"
    write_jsonl(d / "a.jsonl", [{"text": t} for t in docs])
    res = api.substring([str(d)], str(tmp_path / "o"), unit=unit, min_tokens=3, min_docs=3, protect=0.6)
    st_ = res.summary["stats"]
    assert st_["protected_documents"] == 1
    t = read_spans(tmp_path / "o")
    assert sorted(set(t.column("row").to_pylist())) == [1, 2, 3]
    api.apply([str(d)], [str(tmp_path / "o")], str(tmp_path / "clean"))
    out = [json.loads(x)["text"] for x in (tmp_path / "clean" / "a.jsonl").read_text().splitlines()]
    assert out[0] == docs[0] and out[4] == docs[4] and out[5] == docs[5]
    for i in (1, 2, 3):
        assert header not in out[i] and nav not in out[i] and f"document {i}" in out[i]
    # min_docs above the count: nothing cut
    api.substring([str(d)], str(tmp_path / "o2"), unit=unit, min_tokens=3, min_docs=7)
    assert len(read_spans(tmp_path / "o2")) == 0


def test_config_errors():
    with pytest.raises(ConfigError, match="unit"):
        SubstringConfig(unit="word")
    with pytest.raises(ConfigError, match="keep"):
        SubstringConfig(keep="last")
    assert SubstringConfig().min_tokens == 50 and SubstringConfig(unit="line").min_tokens == 5


def test_cli_substring_audit_and_inspect(tmp_path):
    boiler = " ".join(f"w{i}" for i in range(12))
    d = tmp_path / "data"
    write_jsonl(d / "a.jsonl", [{"text": f"doc {i} {boiler} end {i}"} for i in range(12)])
    r = CliRunner().invoke(cli, ["substring", str(d), "-o", str(tmp_path / "o"), "--min-tokens", "10", "-q"])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str(tmp_path / "o")
    r = CliRunner().invoke(cli, ["audit", str(d), "--min-tokens", "10", "-q"])
    assert r.exit_code == 0, r.output
    prof = json.loads(r.stdout)
    assert prof["tokens"] == 12 * 16 and prof["tokens_in_repeats"]["10x"] == 12 * 13  # boiler + "end"
    assert prof["tokens_in_repeats"]["100x"] == 0
    assert prof["top_spans"][0]["count"] == 12 and prof["top_spans"][0]["text"] == boiler + " end"
    r = CliRunner().invoke(cli, ["substring", str(d), "-o", str(tmp_path / "x"), "--keep", "last"])
    assert r.exit_code == 2


def _boiler_corpus(tmp_path, n=12):
    boiler = " ".join(f"w{i}" for i in range(12))
    d = tmp_path / "data"
    write_jsonl(d / "a.jsonl", [{"id": f"d{i}", "text": f"doc {i} {boiler} end {i}"} for i in range(n)])
    return d, boiler


def test_run_pipeline_clean_inspect_and_report(tmp_path):
    d, boiler = _boiler_corpus(tmp_path)
    r = CliRunner().invoke(cli, ["run", str(d), "-o", str(tmp_path / "run"), "--stages", "exact,substring",
                                 "--set", "substring.min_tokens=10", "--id-column", "id",
                                 "--clean", str(tmp_path / "clean")])
    assert r.exit_code == 0, r.output
    out = [json.loads(x)["text"] for x in (tmp_path / "clean" / "a.jsonl").read_text().splitlines()]
    assert out[0] == f"doc 0 {boiler} end 0" and out[5] == "doc 5  5"
    r = CliRunner().invoke(cli, ["inspect", str(tmp_path / "run" / "02-substring"), "--doc", "d3", "--no-color"])
    assert r.exit_code == 0, r.output
    assert "bytes cut" in r.stdout and f"[-{boiler} end-]" in r.stdout and "kept in d0 at byte 6" in r.stdout
    r = CliRunner().invoke(cli, ["inspect", str(tmp_path / "run" / "02-substring"), "--largest", "2", "--json"])
    docs = json.loads(r.stdout)
    assert len(docs) == 2 and docs[0]["diff"][1] == ["-", f"{boiler} end"]
    r = CliRunner().invoke(cli, ["report", str(tmp_path / "run"), "-o", str(tmp_path / "r.html")])
    assert r.exit_code == 0, r.output
    page = (tmp_path / "r.html").read_text()
    assert "Most repeated passages" in page and f"<del>{boiler} end</del>" in page


@pytest.mark.ray
def test_ray_engine_gives_the_same_spans(tmp_path):
    pytest.importorskip("ray")
    import os

    from tests.support import SRC

    from dedupkit.engine.ray import init_local
    import ray

    d, _ = _boiler_corpus(tmp_path, 40)
    write_jsonl(d / "b.jsonl", [{"id": f"b{i}", "text": f"other {i} w3 w4 w5 w6 w7 w8 w9 w10 w11 x"} for i in range(9)])
    a = api.substring([str(d)], str(tmp_path / "local"), min_tokens=5, partitions=4, id_column="id")
    if ray.is_initialized():  # pragma: no cover
        ray.shutdown()
    init_local(2, runtime_env={"env_vars": {"PYTHONPATH": SRC}})
    try:
        b = api.substring([str(d)], str(tmp_path / "ray"), min_tokens=5, partitions=4, id_column="id",
                          engine="ray", workers=2)
    finally:
        ray.shutdown()
    assert read_spans(tmp_path / "local").equals(read_spans(tmp_path / "ray"))
    assert a.summary["stats"]["audit"] == b.summary["stats"]["audit"]
    assert os.path.isdir(tmp_path / "ray" / "spans")
