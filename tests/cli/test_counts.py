"""One meaning for each count everywhere; a reason for every dropped row; one rerun rule.

The counts of a stage are read back from the five places that show them (its own stderr line,
``--json``, ``dedupkit stats``, the HTML report and ``dedupkit run``) and must agree, with the
truth computed from the manifests themselves.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from dedupkit.cli.main import cli
from dedupkit.config import stage_available
from dedupkit.explain import reason_text

from tests.support import make_rows, read_manifest, run_subprocess, write_jsonl, write_parquet

# 3 exact copies of A (2 dropped by exact), near-copies of B (dropped by fuzzy), a bad record.
BASE = ("The council met on Tuesday to discuss the new harbour bridge, the ferry timetable and the "
        "budget for the coming year, and the mayor promised a decision within a month")
NEAR = ("Scientists at the northern observatory reported a bright comet visible to the naked eye "
        "for two weeks in early spring, the first such sighting in more than a decade of records")
TEXTS = [BASE, BASE, BASE.upper(), NEAR, NEAR.replace("two weeks", "three weeks"),
         NEAR.replace("bright", "brilliant"), "A singleton about weather.", "Another singleton, about sport."]

KEYS = ("considered", "dropped_by_stage", "kept", "dropped", "rows")
LINE = re.compile(r"^(\w+): stage input (\d+) of (\d+) rows, dropped by stage (\d+), kept (\d+), "
                  r"dropped in total (\d+) \((\d+) clusters")


def corpus(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    rows = make_rows(TEXTS)
    write_parquet(d / "a.parquet", rows[:4])
    write_jsonl(d / "b.jsonl", rows[4:])
    with open(d / "b.jsonl", "a") as fh:
        fh.write('{"id": "bad", "text": 17}\n')  # a bad record: skipped and counted by the first stage
    return d


def line_counts(stderr: str, stage: str) -> dict:
    for ln in stderr.splitlines():
        m = LINE.match(ln)
        if m and m.group(1) == stage:
            inp, rows, by, kept, tot, _ = map(int, m.groups()[1:])
            return {"considered": inp, "rows": rows, "dropped_by_stage": by, "kept": kept, "dropped": tot}
    raise AssertionError(f"no count line for {stage} in:\n{stderr}")


def report_counts(out: Path, tmp_path: Path) -> list[dict]:
    page = tmp_path / f"{out.name}.html"
    r = CliRunner().invoke(cli, ["report", str(out), "-o", str(page)])
    assert r.exit_code == 0, r.output
    html = page.read_text()
    data = json.loads(re.search(r'<script id="report-data" type="application/json">(.*?)</script>', html, re.S)
                      .group(1))
    # the page's table shows the same numbers under the same labels
    head = re.findall(r"<th>(.*?)</th>", re.search(r"<thead>(.*?)</thead>", html, re.S).group(1))
    assert head[1:6] == ["stage input", "dropped by stage", "kept", "dropped in total", "all rows"]
    return [s["counts"] for s in data["stages"]]


def truth(out: Path, earlier: list[Path]) -> dict:
    """The counts computed from the manifests: this stage's rows, and those earlier stages dropped."""
    m = read_manifest(out)
    gone_before = set()
    for e in earlier:
        gone_before |= {(r["shard"], r["row"]) for r in read_manifest(e) if not r["keep"]}
    dropped = sum(not r["keep"] for r in m)
    return {"rows": len(m), "considered": len(m) - len(gone_before), "dropped_by_stage": dropped - len(gone_before),
            "kept": len(m) - dropped, "dropped": dropped}


@pytest.mark.skipif(not stage_available("fuzzy"), reason="the fuzzy stage is not in this checkout")
def test_stage_line_json_stats_report_and_run_report_the_same_counts(tmp_path):
    data = corpus(tmp_path)
    ex, fz = tmp_path / "exact", tmp_path / "fuzzy"
    common = ["--id-column", "id", "--on-bad-record", "skip"]  # no -q: it silences the count lines too
    p1 = run_subprocess("exact", str(data), "-o", str(ex), *common)
    assert p1.returncode == 0, p1.stderr
    p2 = run_subprocess("fuzzy", str(data), "-o", str(fz), "--skip", str(ex), "--threshold", "0.5", *common)
    assert p2.returncode == 0, p2.stderr
    j1 = run_subprocess("exact", str(data), "-o", str(ex), *common, "--json")  # a rerun: reused, same numbers
    j2 = run_subprocess("fuzzy", str(data), "-o", str(fz), "--skip", str(ex), "--threshold", "0.5", *common,
                        "--json")
    assert j1.returncode == 0 and j2.returncode == 0, j1.stderr + j2.stderr
    assert "reused" in j2.stderr and json.loads(j2.stdout)["reused"] is True

    want = {"exact": truth(ex, []), "fuzzy": truth(fz, [ex])}
    # the corpus exercises each count: exact drops 2 copies + 1 bad record, fuzzy 2 near-copies
    assert want["exact"] == {"rows": 9, "considered": 9, "dropped_by_stage": 3, "kept": 6, "dropped": 3}
    assert want["fuzzy"] == {"rows": 9, "considered": 6, "dropped_by_stage": 2, "kept": 4, "dropped": 5}

    for stage, out, proc, js in (("exact", ex, p1, j1), ("fuzzy", fz, p2, j2)):
        w = want[stage]
        assert line_counts(proc.stderr, stage) == w, "stage stderr line"
        assert line_counts(js.stderr, stage) == w, "stage stderr line of the reused rerun"
        assert {k: json.loads(js.stdout)["counts"][k] for k in KEYS} == w, "--json"
        st = json.loads(CliRunner().invoke(cli, ["stats", str(out), "--json"]).stdout)
        assert {k: st["stages"][0][k] for k in KEYS} == w, "stats --json"
        text = CliRunner().invoke(cli, ["stats", str(out)]).stdout.splitlines()
        assert [int(x.replace(",", "")) for x in text[2].split()[1:6]] == [w[k] for k in KEYS], "stats table"
        assert {k: report_counts(out, tmp_path)[0][k] for k in KEYS} == w, "report"

    # `dedupkit run` with the same two stages: per-stage lines, its summary, stats and report agree
    rn = tmp_path / "run"
    pr = run_subprocess("run", str(data), "-o", str(rn), "--stages", "exact,fuzzy", "--set", "fuzzy.threshold=0.5",
                        "--id-column", "id", "--on-bad-record", "skip")
    assert pr.returncode == 0, pr.stderr
    st = json.loads(CliRunner().invoke(cli, ["stats", str(rn), "--json"]).stdout)
    rep = report_counts(rn, tmp_path)
    summary = json.loads((rn / "summary.json").read_text())
    for i, stage in enumerate(("exact", "fuzzy")):
        w = want[stage]
        assert line_counts(pr.stderr, stage) == w, "run's stage line"
        assert {k: summary["stages"][i]["counts"][k] for k in KEYS} == w, "run summary"
        assert {k: st["stages"][i][k] for k in KEYS} == w, "stats of the run"
        assert {k: rep[i][k] for k in KEYS} == w, "report of the run"
    total = line_counts(pr.stderr, "run")
    assert total == {"rows": 9, "considered": 9, "dropped_by_stage": 5, "kept": 4, "dropped": 5}
    assert {k: st["total"][k] for k in KEYS} == total


@pytest.mark.skipif(not stage_available("fuzzy"), reason="the fuzzy stage is not in this checkout")
def test_every_dropped_row_has_a_reason(tmp_path):
    data = corpus(tmp_path)
    common = ["--id-column", "id", "--on-bad-record", "skip", "-q"]
    assert run_subprocess("exact", str(data), "-o", str(tmp_path / "e"), *common).returncode == 0
    p = run_subprocess("fuzzy", str(data), "-o", str(tmp_path / "f"), "--skip", str(tmp_path / "e"),
                       "--threshold", "0.5", *common)
    assert p.returncode == 0, p.stderr
    rows = read_manifest(tmp_path / "f")
    by_stage: dict[str, int] = {}
    for r in rows:
        if r["keep"]:
            assert r["reason"] is None
            continue
        by_stage[r["stage"]] = by_stage.get(r["stage"], 0) + 1
        if r["duplicate_of"] is None:
            assert r["reason"].startswith("bad record: "), r
        elif r["stage"] == "exact":
            assert r["reason"] == f"exact duplicate of {r['duplicate_of']}"
        else:  # the measure that decided (jaccard unless the stage records another), the score, the match
            m = re.fullmatch(r"(estimated jaccard|jaccard|char n-gram jaccard|containment) (\d\.\d\d) with (.+)",
                             r["reason"])
            assert m and m.group(2) == f"{r['score']:.2f}" and m.group(3) == r["duplicate_of"], r
    assert by_stage == {"exact": 3, "fuzzy": 2}


def test_reason_texts():
    assert reason_text("fuzzy", "d1", 0.834) == "jaccard 0.83 with d1"
    assert reason_text("fuzzy", "d1", 0.9, measure="containment") == "containment 0.90 with d1"
    assert reason_text("fuzzy", "d1", 0.9, measure="char") == "char n-gram jaccard 0.90 with d1"
    assert reason_text("fuzzy", "d1", 0.9, measure="jaccard_estimate") == "estimated jaccard 0.90 with d1"
    assert reason_text("semantic", "d2", 0.961) == "cosine similarity 0.96 to d2"
    assert reason_text("check", "c3", 1.0, match="index-exact") == "exact duplicate of c3 in the index"
    assert reason_text("check", "c3", 0.7, match="drop-fuzzy") == "jaccard 0.70 with c3"
    assert reason_text("mine", "x", 0.5) == "mine duplicate of x (score 0.50)"
    assert reason_text("decontaminate", "gsm/17", 0.91) == "holds eval item gsm/17 (overlap 0.91)"
    assert reason_text("substring", None, None, kind="substring", bytes_cut=120) == \
        "shorter than min_length after cutting 120 repeated bytes"


def test_semantic_drops_say_cosine(tmp_path):
    pytest.importorskip("model2vec")
    from dedupkit import api

    from tests.test_embed import tiny_model2vec

    model = tiny_model2vec(tmp_path / "m2v")
    write_jsonl(tmp_path / "d" / "a.jsonl", make_rows(["cat sat mat", "kitten sat mat", "bank money"]))
    api.semantic([str(tmp_path / "d")], str(tmp_path / "o"), id_column="id", model=f"model2vec:{model}",
                 eps=0.01, keep="first", cache_dir=str(tmp_path / "c"))
    rows = read_manifest(tmp_path / "o")
    assert rows[1]["reason"] == f"cosine similarity {rows[1]['score']:.2f} to d0"
    assert rows[0]["reason"] is None and rows[2]["reason"] is None


def test_rerunning_a_tour_step_reuses_and_a_different_one_needs_overwrite(tmp_path):
    """The rerun rule, as a user meets it: the same command twice works (reused), another setting
    on the same -o is refused with the fix, --overwrite replaces."""
    data = corpus(tmp_path)
    out = tmp_path / "exact"
    args = ["exact", str(data), "-o", str(out), "--id-column", "id", "--on-bad-record", "skip"]
    first = run_subprocess(*args)
    assert first.returncode == 0, first.stderr
    before = (out / "summary.json").read_bytes()
    again = run_subprocess(*args)
    assert again.returncode == 0 and again.stdout.strip() == str(out)
    assert "up to date, reused" in again.stderr and (out / "summary.json").read_bytes() == before
    quiet = run_subprocess(*args, "-q")  # -q: nothing on stderr but errors, the reuse note included
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout.strip() == str(out)
    other = run_subprocess(*args, "--normalize", "none")
    assert other.returncode == 1 and "--overwrite" in other.stderr and "other settings" in other.stderr
    assert (out / "summary.json").read_bytes() == before
    assert run_subprocess(*args, "--normalize", "none", "--overwrite").returncode == 0
    assert json.loads((out / "summary.json").read_text())["config"]["stage"]["normalize"] == []
    # changed input content: refused too
    with open(data / "b.jsonl", "a") as fh:
        fh.write('{"id": "new", "text": "a new line"}\n')
    changed = run_subprocess(*args, "--normalize", "none")
    assert changed.returncode == 1 and "content changed" in changed.stderr
