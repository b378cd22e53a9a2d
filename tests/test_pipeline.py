"""`dedupkit run`: combined manifest, chain resolution, resume, guardrails, dry run, stats."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dedupkit import api
from dedupkit.cli.main import cli
from dedupkit.errors import GuardrailError, OutputError
from dedupkit.manifest.combine import combine_manifests
from dedupkit.settings import ExactConfig
from dedupkit.stages import register_stage, unregister_stage
from dedupkit.stages.exact import ExactStage

from tests.support import make_rows, read_manifest, write_jsonl, write_rows
from tests.support.invariants import check_manifest


class Exact2(ExactStage):
    """A second, real exact stage under another name, so two exact passes can be chained."""

    name = "exact2"


@pytest.fixture(autouse=True)
def exact2():
    # a third-party stage is a Stage class and a config class (here the exact stage's settings)
    register_stage("exact2", Exact2, ExactConfig)
    yield
    unregister_stage("exact2")


# A: row 0, B: rows 1 and 2 (byte-identical), C: case variant of B at row 3.
# exact (normalize none): 2 -> 1.   exact2 (lower,whitespace): 1 -> 0 (keep first). So 2 -> 0.
CHAIN = [
    "The Quick Brown Fox jumps over the lazy dog.",
    "the quick brown fox jumps over the lazy dog.",
    "the quick brown fox jumps over the lazy dog.",
    "Something else entirely, about weather.",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG.",
    "Something else entirely, about weather.",
    "A singleton.",
]

ENV: dict = {}


def chain_corpus(tmp_path: Path, fmt: str = "jsonl") -> Path:
    d = tmp_path / "data"
    rows = make_rows(CHAIN)
    write_rows(d / "a", rows[:4], fmt)
    write_rows(d / "b", rows[4:], fmt)
    return d


def run2(data, out, **kw):
    kw.setdefault("stages", "exact,exact2")
    kw.setdefault("sets", ["exact.normalize=none", "exact2.normalize=lower,whitespace"])
    return api.run([str(data)], str(out), id_column="id", env=ENV, **kw)


def by_id(out) -> dict:
    return {r["doc_id"]: r for r in read_manifest(out)}


# ---- combined manifest ---------------------------------------------------------------------


def test_single_stage_run_equals_the_stage(corpus, tmp_path):
    res = api.run([str(corpus)], str(tmp_path / "run"), stages="exact", id_column="id", env=ENV)
    api.exact([str(corpus)], str(tmp_path / "ex"), id_column="id")
    a, b = read_manifest(res.out), read_manifest(tmp_path / "ex")
    assert len(a) == len(b) == 8
    for ra, rb in zip(a, b):
        for col in ("shard", "row", "doc_id", "keep", "cluster_id", "duplicate_of", "score", "stage"):
            assert ra[col] == rb[col], (col, ra, rb)
    assert (tmp_path / "run" / "01-exact" / "summary.json").exists()


def test_chain_resolves_duplicate_of_to_final_representative(tmp_path, fmt):
    data = chain_corpus(tmp_path, fmt)
    res = run2(data, tmp_path / "out")
    m = by_id(res.out)
    assert len(m) == len(CHAIN)
    assert [m[f"d{i}"]["keep"] for i in range(7)] == [True, False, False, True, False, False, True]
    # d2 was an exact copy of d1, and d1 a case variant of d0: d2 is identical to d1, so d1's
    # comparison with d0 (stage exact2, score 1.0) is the one that decides d2 too
    assert m["d2"]["duplicate_of"] == "d0" and m["d2"]["direct_duplicate_of"] == "d1"
    assert m["d2"]["stage"] == "exact2" and m["d1"]["stage"] == "exact2" and m["d4"]["stage"] == "exact2"
    assert m["d2"]["kept_duplicate_of"] == "d0" and m["d2"]["score"] == 1.0
    assert m["d1"]["duplicate_of"] == "d0" and m["d4"]["duplicate_of"] == "d0"
    assert m["d5"]["duplicate_of"] == "d3" and m["d5"]["stage"] == "exact"
    # one joined cluster across stages, id = smallest global row of its members
    assert {m[f"d{i}"]["cluster_id"] for i in (0, 1, 2, 4)} == {0}
    assert m["d3"]["cluster_id"] == m["d5"]["cluster_id"] == 3
    assert m["d6"]["cluster_id"] is None and m["d6"]["duplicate_of"] is None
    assert m["d0"]["duplicate_of"] is None and m["d0"]["keep"]
    c = res.summary["counts"]
    assert (c["rows"], c["kept"], c["dropped"], c["clusters"], c["largest_cluster"]) == (7, 3, 4, 2, 4)
    assert c["dropped_by_stage"] == {"exact": 2, "exact2": 2}
    # the stage manifests stay as each stage wrote them
    assert by_id(tmp_path / "out" / "01-exact")["d1"]["keep"] is True


def test_combined_row_takes_the_decision_of_the_comparison_that_decided_it(tmp_path):
    """A exact copy of B, B fuzzy duplicate of C: A's row says fuzzy, C and B's direct score to C,
    which is also A's own similarity to C (a row never says exact with a non-identical target)."""
    from dedupkit.minhash import MinHashConfig, shingles

    base = " ".join(f"word{i} alpha{i % 7} beta{i % 5}" for i in range(60))
    words = base.split()
    words[10] = "edited"
    words[90] = "changed"
    b = " ".join(words)
    texts = [base, b, b.upper(), "an unrelated text about something else entirely, with enough words"]
    write_jsonl(tmp_path / "data" / "x.jsonl", make_rows(texts))
    res = api.run([str(tmp_path / "data")], str(tmp_path / "out"), id_column="id", env=ENV, stages="exact,fuzzy",
                  sets=["fuzzy.threshold=0.7", "fuzzy.verify=sets"])
    m = by_id(res.out)
    assert by_id(tmp_path / "out" / "01-exact")["d2"]["duplicate_of"] == "d1"
    a = m["d2"]
    assert (a["keep"], a["stage"], a["duplicate_of"], a["direct_duplicate_of"], a["measure"]) == \
        (False, "fuzzy", "d0", "d1", "jaccard")
    sa, sc = set(shingles(texts[2], MinHashConfig())), set(shingles(texts[0], MinHashConfig()))
    assert a["score"] == pytest.approx(len(sa & sc) / len(sa | sc), abs=1e-6) and a["score"] < 1.0
    assert m["d1"]["stage"] == "fuzzy" and m["d1"]["score"] == a["score"]
    assert m["d0"]["keep"] and m["d3"]["keep"]


def test_apply_takes_the_combined_manifest(tmp_path):
    data = chain_corpus(tmp_path)
    res = run2(data, tmp_path / "out")
    r = api.apply([str(data)], [str(res.out)], str(tmp_path / "clean"))
    assert r.summary["kept"] == 3
    texts = [json.loads(x)["text"] for f in sorted((tmp_path / "clean").glob("*.jsonl"))
             for x in f.read_text().splitlines()]
    assert texts == [CHAIN[0], CHAIN[3], CHAIN[6]]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["a b", "A b", "a  b", "A  B", "c", "C", "d e f", "D e f", "x"]),
                min_size=1, max_size=30),
       st.sampled_from(["first", "last", "longest", "shortest"]))
def test_combined_invariants(tmp_path_factory, texts, keep):
    """One row per input row; every dropped row points to a kept row of its own cluster; keep is
    the AND of the stages; the representative's text equals the dropped text once normalized."""
    tmp = tmp_path_factory.mktemp("p")
    write_jsonl(tmp / "data" / "x.jsonl", make_rows(texts))
    res = run2(tmp / "data", tmp / "out", sets=["exact.normalize=none", f"exact.keep={keep}",
                                                "exact2.normalize=lower,whitespace", f"exact2.keep={keep}"])
    rows = read_manifest(res.out)
    assert [r["row"] for r in rows] == list(range(len(texts)))
    m = check_manifest(rows, len(texts))
    s1, s2 = by_id(tmp / "out" / "01-exact"), by_id(tmp / "out" / "02-exact2")
    norm = lambda t: " ".join(t.lower().split())  # noqa: E731
    for r in rows:
        assert r["keep"] == (s1[r["doc_id"]]["keep"] and s2[r["doc_id"]]["keep"])
        if not r["keep"]:
            rep = m[r["duplicate_of"]]
            assert norm(texts[int(r["doc_id"][1:])]) == norm(texts[int(rep["doc_id"][1:])])
    # kept documents are pairwise different once normalized
    kept = [norm(texts[int(r["doc_id"][1:])]) for r in rows if r["keep"]]
    assert len(kept) == len(set(kept))


# ---- resume --------------------------------------------------------------------------------


def test_rerun_with_nothing_changed_reuses_everything(tmp_path):
    data = chain_corpus(tmp_path)
    out = tmp_path / "out"
    first = run2(data, out)
    mtime = (out / "summary.json").stat().st_mtime_ns
    again = run2(data, out)
    assert again.up_to_date and all(s.reused for s in again.stages)
    assert (out / "summary.json").stat().st_mtime_ns == mtime
    assert read_manifest(out) == read_manifest(out)  # still readable
    assert again.summary["counts"] == first.summary["counts"]


def test_changed_setting_is_refused_then_overwrite_reruns_that_stage_and_later_ones(tmp_path):
    data = chain_corpus(tmp_path)
    out = tmp_path / "out"
    run2(data, out)
    before = read_manifest(out)
    with pytest.raises(OutputError, match="other settings for stage exact2.*--overwrite"):
        run2(data, out, sets=["exact.normalize=none", "exact2.normalize=whitespace"])
    assert read_manifest(out) == before  # refused: nothing changed
    res = run2(data, out, sets=["exact.normalize=none", "exact2.normalize=whitespace"], overwrite=True)
    assert [s.reused for s in res.stages] == [True, False]
    assert by_id(out)["d1"]["keep"] is True  # exact2 no longer folds case
    res = run2(data, out, sets=["exact.normalize=lower", "exact2.normalize=whitespace"], overwrite=True)
    assert [s.reused for s in res.stages] == [False, False]


def test_changed_input_is_refused_then_overwrite_reruns_everything(tmp_path):
    data = chain_corpus(tmp_path)
    out = tmp_path / "out"
    run2(data, out)
    write_jsonl(data / "b.jsonl", make_rows(CHAIN[4:] + ["one more"], prefix="e"))
    with pytest.raises(OutputError, match="other input files"):
        run2(data, out)
    res = run2(data, out, overwrite=True)
    assert [s.reused for s in res.stages] == [False, False]
    assert res.summary["counts"]["rows"] == 8


def test_overwrite_with_nothing_changed_reuses_and_rerun_reruns_everything(tmp_path):
    data = chain_corpus(tmp_path)
    run2(data, tmp_path / "out")
    res = run2(data, tmp_path / "out", overwrite=True)
    assert res.up_to_date and all(s.reused for s in res.stages)
    from dedupkit.config import resolve
    from dedupkit.pipeline import run_pipeline

    cfg = resolve(None, flags={"stages": "exact,exact2", "id_column": "id"},
                  sets=["exact.normalize=none", "exact2.normalize=lower,whitespace"], env=ENV)
    res = run_pipeline([str(data)], tmp_path / "out", cfg, rerun=True)
    assert [s.reused for s in res.stages] == [False, False] and not res.up_to_date


def test_fewer_stages_removes_stale_stage_folders(tmp_path):
    data = chain_corpus(tmp_path)
    out = tmp_path / "out"
    run2(data, out)
    with pytest.raises(OutputError, match="other stages"):
        run2(data, out, stages="exact")
    res = run2(data, out, stages="exact", overwrite=True)
    assert [s.reused for s in res.stages] == [True]
    assert not (out / "02-exact2").exists()
    assert by_id(out)["d1"]["keep"] is True


# ---- guardrails and interrupted runs --------------------------------------------------------


def test_guardrail_aborts_with_nothing_final_then_resumes(tmp_path):
    data = chain_corpus(tmp_path)
    out = tmp_path / "out"
    # exact2 drops 2 of the 5 rows it sees (40%): over 0.3
    with pytest.raises(GuardrailError, match="exact2 would drop 2 of 5 rows"):
        run2(data, out, sets=["exact.normalize=none", "exact2.normalize=lower,whitespace",
                              "exact2.max_drop_rate=0.3"])
    assert not (out / "summary.json").exists() and not (out / "manifest").exists()
    assert (out / "01-exact" / "summary.json").exists()
    assert not (out / "02-exact2" / "summary.json").exists()
    res = run2(data, out)  # the interrupted run restarts where it stopped
    assert [s.reused for s in res.stages] == [True, False]
    assert res.summary["counts"]["kept"] == 3


def test_guardrail_invalidates_a_previous_finished_run(tmp_path):
    data = chain_corpus(tmp_path)
    out = tmp_path / "out"
    run2(data, out)
    with pytest.raises(GuardrailError):
        run2(data, out, max_drop_rate=0.2)  # the flag applies to every stage, reused ones too
    assert not (out / "summary.json").exists()
    with pytest.raises(Exception, match="no finished run"):
        api.apply([str(data)], [str(out)], str(tmp_path / "clean"))


def test_cli_guardrail_exit_code_4(tmp_path):
    data = chain_corpus(tmp_path)
    r = CliRunner().invoke(cli, ["run", str(data), "-o", str(tmp_path / "out"), "--stages", "exact",
                                 "--id-column", "id", "--set", "exact.normalize=none",
                                 "--max-drop-rate", "0.1", "-q"])
    assert r.exit_code == 4, r.output
    assert "would drop 2 of 7 rows" in r.output and "--max-drop-rate" in r.output
    assert not (tmp_path / "out" / "summary.json").exists()


def test_dry_run_never_writes_the_clean_corpus(tmp_path):
    data = chain_corpus(tmp_path)
    r = CliRunner().invoke(cli, ["run", str(data), "-o", str(tmp_path / "out"), "--stages", "exact,exact2",
                                 "--id-column", "id", "--clean", str(tmp_path / "clean"), "--dry-run",
                                 "--set", "exact2.normalize=lower,whitespace"])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str(tmp_path / "out")
    assert not (tmp_path / "clean").exists()
    assert "dry run" in r.stderr and "exact2" in r.stderr and "drop rate" in r.stderr
    assert (tmp_path / "out" / "summary.json").exists()
    r = CliRunner().invoke(cli, ["run", str(data), "-o", str(tmp_path / "out"), "--stages", "exact,exact2",
                                 "--id-column", "id", "--clean", str(tmp_path / "clean"),
                                 "--set", "exact2.normalize=lower,whitespace"])
    assert r.exit_code == 0, r.output
    assert "up to date" in r.stderr
    lines = [x for f in sorted((tmp_path / "clean").glob("*.jsonl")) for x in f.read_text().splitlines()]
    assert len(lines) == 3


def test_clean_refuses_a_foreign_folder(tmp_path):
    data = chain_corpus(tmp_path)
    (tmp_path / "clean").mkdir()
    (tmp_path / "clean" / "mine.txt").write_text("x")
    with pytest.raises(OutputError, match="was not written by dedupkit"):
        run2(data, tmp_path / "out", clean=str(tmp_path / "clean"))
    assert (tmp_path / "clean" / "mine.txt").exists()


def test_output_folder_checks(tmp_path):
    data = chain_corpus(tmp_path)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("x")
    with pytest.raises(OutputError, match="already holds other files"):
        run2(data, tmp_path / "busy")
    api.exact([str(data)], str(tmp_path / "single"), id_column="id")
    with pytest.raises(OutputError, match="single `dedupkit exact` run"):
        run2(data, tmp_path / "single")


def test_output_inside_the_input_folder_is_not_read_as_input(tmp_path):
    data = chain_corpus(tmp_path)
    res = api.run([str(data)], str(data / "out"), stages="exact,exact2", id_column="id", env=ENV)
    assert res.summary["counts"]["rows"] == 7
    res = api.run([str(data)], str(data / "out"), stages="exact,exact2", id_column="id", env=ENV)
    assert res.up_to_date


# ---- stats ---------------------------------------------------------------------------------


def test_stats_text_and_json(tmp_path):
    data = chain_corpus(tmp_path)
    run2(data, tmp_path / "out")
    r = CliRunner().invoke(cli, ["stats", str(tmp_path / "out"), "--json"])
    assert r.exit_code == 0, r.output
    st_ = json.loads(r.stdout)
    assert [s["stage"] for s in st_["stages"]] == ["exact", "exact2"]
    e1, e2 = st_["stages"]
    assert (e1["considered"], e1["dropped_by_stage"], e1["kept"], e1["dropped"], e1["rows"], e1["clusters"],
            e1["largest_cluster"]) == (7, 2, 5, 2, 7, 2, 2)
    # exact2 saw the 5 rows exact kept and dropped 2 of them: 4 dropped in total
    assert (e2["considered"], e2["dropped_by_stage"], e2["kept"], e2["dropped"], e2["rows"]) == (5, 2, 3, 4, 7)
    assert e2["drop_rate"] == pytest.approx(0.4)
    assert st_["total"]["rows"] == 7 and st_["total"]["kept"] == 3 and st_["total"]["largest_cluster"] == 4
    r = CliRunner().invoke(cli, ["stats", str(tmp_path / "out")])
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["stage", "stage", "input", "dropped", "by", "stage", "kept", "dropped", "in",
                                "total", "all", "rows", "clusters", "largest", "drop", "rate", "time"]
    assert lines[2].split()[:6] == ["exact", "7", "2", "5", "2", "7"]
    assert lines[3].split()[:6] == ["exact2", "5", "2", "3", "4", "7"]
    assert lines[-1].split()[:6] == ["total", "7", "4", "3", "4", "7"]
    # a single stage's folder works too
    api.exact([str(data)], str(tmp_path / "single"), id_column="id")
    r = CliRunner().invoke(cli, ["stats", str(tmp_path / "single"), "--json"])
    assert json.loads(r.stdout)["kind"] == "stage"
    r = CliRunner().invoke(cli, ["stats", str(tmp_path)])
    assert r.exit_code == 1 and "no finished run" in r.output


def test_run_json_output(tmp_path):
    data = chain_corpus(tmp_path)
    r = CliRunner().invoke(cli, ["run", str(data), "-o", str(tmp_path / "out"), "--stages", "exact",
                                 "--id-column", "id", "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["pipeline"] and s["counts"]["rows"] == 7 and s["stages"][0]["dir"] == "01-exact"


# ---- shell chaining ------------------------------------------------------------------------


def test_shell_chain_gives_the_same_combined_result(tmp_path):
    """`dedupkit exact | dedupkit exact --skip -` in a real shell, combined, equals `dedupkit run`."""
    import subprocess
    import sys

    from tests.support import SRC

    data = chain_corpus(tmp_path)
    env = {**os.environ, "PYTHONPATH": SRC}
    dk = f"{sys.executable} -m dedupkit"
    cmd = (f"set -o pipefail; {dk} exact {data} -o {tmp_path}/a --id-column id --normalize none -q "
           f"| {dk} exact {data} -o {tmp_path}/b --id-column id --normalize lower,whitespace --skip - -q")
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"{tmp_path}/b"
    (tmp_path / "combined").mkdir()
    combine_manifests([tmp_path / "a", tmp_path / "b"], tmp_path / "combined")
    import pyarrow.dataset as ds

    shell = ds.dataset(str(tmp_path / "combined")).to_table().to_pylist()
    run = read_manifest(run2(data, tmp_path / "run").out)
    assert len(shell) == len(run) == 7
    for a, b in zip(shell, run):
        b = {**b, "stage": "exact" if b["stage"] == "exact2" else b["stage"]}
        assert a == b


@pytest.mark.skipif(not __import__("dedupkit.config").config.stage_available("fuzzy"),
                    reason="the fuzzy stage is not merged into this checkout yet")
def test_shell_exact_fuzzy_pipe_equals_dedupkit_run(tmp_path):
    """The issue's pipe, `dedupkit exact data -o a | dedupkit fuzzy data -o b --skip -`, run in a
    real shell on the bundled corpus, gives the same combined result as `dedupkit run`."""
    import subprocess
    import sys

    import pyarrow.dataset as ds

    from tests.support import SRC, run_subprocess

    data = str(Path(__file__).resolve().parents[1] / "examples" / "corpus")
    env = {**os.environ, "PYTHONPATH": SRC}
    dk = f"{sys.executable} -m dedupkit"
    cmd = (f"set -o pipefail; {dk} exact {data} -o {tmp_path}/a --id-column id -q "
           f"| {dk} fuzzy {data} -o {tmp_path}/b --id-column id --skip - -q")
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"{tmp_path}/b"
    r = run_subprocess("run", data, "-o", str(tmp_path / "run"), "--stages", "exact,fuzzy", "--id-column", "id",
                       "-q")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path / "run")
    (tmp_path / "combined").mkdir()
    combine_manifests([tmp_path / "a", tmp_path / "b"], tmp_path / "combined")
    shell = ds.dataset(str(tmp_path / "combined")).to_table().to_pylist()
    run = read_manifest(tmp_path / "run")
    assert len(shell) == len(run) == 305
    assert shell == run
    # the shell's last manifest already has the final keep decisions
    last = read_manifest(tmp_path / "b")
    assert [x["keep"] for x in last] == [x["keep"] for x in run]
    assert {x["stage"] for x in run if not x["keep"]} == {"exact", "fuzzy"}
    # and chains were resolved: no dropped row points to a dropped row
    keep = {x["doc_id"]: x["keep"] for x in run}
    assert all(keep[x["duplicate_of"]] for x in run if not x["keep"])


def test_clean_folder_must_be_outside_the_output(tmp_path):
    from dedupkit.errors import ConfigError

    data = chain_corpus(tmp_path)
    with pytest.raises(ConfigError, match="must be separate folders"):
        run2(data, tmp_path / "out", clean=str(tmp_path / "out" / "clean"))


def test_a_second_run_on_the_same_folder_is_refused(tmp_path):
    import fcntl

    data = chain_corpus(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".dedupkit.lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(OutputError, match="being written by another dedupkit run"):
            run2(data, out)
    assert run2(data, out).summary["counts"]["rows"] == 7


def test_combined_manifest_does_not_depend_on_workers(tmp_path):
    data = chain_corpus(tmp_path, "parquet")
    a = read_manifest(run2(data, tmp_path / "w1").out)
    b = read_manifest(run2(data, tmp_path / "w2", workers=2).out)
    assert a == b
