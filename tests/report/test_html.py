"""``dedupkit report``: the page's data against real runs, bounded size, missing texts, errors."""

from __future__ import annotations

import json
import re
from collections import defaultdict

import pytest
from click.testing import CliRunner

from tests.support import BASE_DOCS, make_rows, read_manifest, write_parquet
from dedupkit import api
from dedupkit.cli.main import cli
from dedupkit.errors import ManifestError, OutputError
from dedupkit.report.diff import diff_stats, plain, word_diff
from dedupkit.report.html import ReportOptions, build_report
from dedupkit.report.model import lsh_curve, lsh_params, score_histogram, size_histogram, stage_threshold
from tests.support.report import many_clusters_corpus, near_corpus, run_fuzzy


def page_data(html: str) -> dict:
    m = re.search(r'<script id="report-data" type="application/json">(.*?)</script>', html, re.S)
    assert m, "no embedded data block"
    return json.loads(m.group(1))


def clusters_of(manifest_rows: list[dict], stage: str | None = None) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = defaultdict(list)
    for r in manifest_rows:
        if r["cluster_id"] is not None and (stage is None or r["stage"] == stage):
            out[r["cluster_id"]].append(r)
    return dict(out)


def dup_text(seg) -> str:
    return "".join(t for tag, t in seg if tag != "-")


def rep_words(seg) -> list[str]:
    return "".join(t for tag, t in seg if tag != "+").split()


@pytest.fixture
def pipeline_run(tmp_path):
    """A run folder laid out as `dedupkit run` does: 01-exact, then 02-fuzzy chained with --skip."""
    data, rows = near_corpus(tmp_path / "data")
    run = tmp_path / "run"
    api.exact([str(data)], str(run / "01-exact"), id_column="id")
    run_fuzzy(data, run / "02-fuzzy", skip=(str(run / "01-exact"),))
    return run, {r["id"]: r["text"] for r in rows}


def test_report_of_exact_run_lists_every_cluster_with_its_texts(tmp_path, corpus, fmt):
    out = tmp_path / "out"
    res = api.exact([str(corpus)], str(out), id_column="id")
    texts = {}
    half = len(BASE_DOCS) // 2
    for i, chunk in enumerate([BASE_DOCS[:half], BASE_DOCS[half:]]):
        for r in make_rows(chunk, prefix=f"s{i}-"):
            texts[r["id"]] = r["text"]
    page = tmp_path / "r.html"
    result = build_report(out, page)
    html = page.read_text(encoding="utf-8")
    data = page_data(html)
    manifest = read_manifest(out)
    truth = clusters_of(manifest)
    assert result.bytes == page.stat().st_size
    assert result.clusters_total == len(truth) and result.clusters_listed == len(truth)
    assert not result.sampled and "This page lists a sample" not in html
    (stage,) = data["stages"]
    c = res.summary["counts"]
    for k in ("rows", "considered", "dropped_by_stage", "kept", "dropped", "clusters"):
        assert stage["counts"][k] == c[k], k
    row = re.search(r'<table id="summary-table".*?<tbody>(.*?)</tbody>', html, re.S).group(1)
    cells = re.findall(r"<td>(.*?)</td>", row)
    # stage input, dropped by stage, kept, dropped in total, all rows, stage drop rate
    assert cells[1:6] == [str(c[k]) for k in ("considered", "dropped_by_stage", "kept", "dropped", "rows")]
    assert cells[6] == f"{100 * c['drop_rate']:.2f}%"
    assert sorted(stage["largest"]) == sorted(f"exact:{k}" for k in truth)
    for cid, members in truth.items():
        view = data["clusters"][f"exact:{cid}"]
        assert view["size"] == len(members)
        kept = [m["doc_id"] for m in members if m["keep"]]
        assert view["rep"]["doc_id"] == kept[0]
        assert view["rep"]["text"] == texts[kept[0]]
        assert sorted(d["doc_id"] for d in view["dups"]) == sorted(m["doc_id"] for m in members if not m["keep"])
        for d in view["dups"]:
            assert dup_text(d["diff"]) == texts[d["doc_id"]]
            assert d["score"] == 1.0
    # Every clustered document is searchable; a unique one is not in the index.
    clustered = {m["doc_id"] for ms in truth.values() for m in ms}
    assert set(data["doc_index"]) == clustered
    # Exact stage: no LSH curve, all dropped scores in the top bin.
    assert stage["lsh"] is None
    assert sum(stage["score_hist"]["counts"]) == c["dropped_by_stage"]


def test_pipeline_run_shows_each_stage_lsh_curve_and_threshold(pipeline_run):
    run, texts = pipeline_run
    page = run.parent / "run.html"
    build_report(run, page)
    html = page.read_text(encoding="utf-8")
    data = page_data(html)
    assert [s["label"] for s in data["stages"]] == ["01-exact", "02-fuzzy"]
    assert "did not finish" in data["notes"][0]  # no combined summary.json in this hand-made layout
    mh = data["stages"][1]
    assert mh["lsh"]["bands"] == 16 and mh["lsh"]["rows"] == 4 and mh["threshold"] == 0.5
    curve = dict((s, p) for s, p in mh["lsh"]["curve"])
    assert curve[0.5] == pytest.approx(1 - (1 - 0.5 ** 4) ** 16, abs=1e-4)
    assert curve[0.0] == 0.0 and curve[1.0] == 1.0
    assert 'id="lsh-1"' in html and 'id="lsh-0"' not in html
    manifest = read_manifest(run / "02-fuzzy")
    own = clusters_of(manifest, "fuzzy")
    dropped_scores = [r["score"] for r in manifest if r["stage"] == "fuzzy" and not r["keep"]
                      and r["cluster_id"] is not None]
    assert sum(mh["score_hist"]["counts"]) == len(dropped_scores) > 0
    assert mh["score_hist"]["edges"][0] <= min(dropped_scores) and mh["score_hist"]["edges"][0] <= 0.5
    # The 02 manifest also carries the row exact dropped (stage "exact"): it is not a fuzzy cluster.
    assert any(r["stage"] == "exact" for r in manifest)
    assert sorted(mh["largest"]) == sorted(f"fuzzy:{k}" for k in own)
    for cid, members in own.items():
        view = data["clusters"][f"fuzzy:{cid}"]
        assert view["size"] == len(members)
        rep = texts[view["rep"]["doc_id"]]
        dups = view["dups"]
        assert [d["score"] for d in dups] == sorted(d["score"] for d in dups)  # least similar first
        for d in dups:
            assert dup_text(d["diff"]) == texts[d["doc_id"]]
            assert rep_words(d["diff"]) == rep.split()
        assert any(d["words"]["removed"] for d in dups)


def test_large_run_is_sampled_and_page_size_does_not_grow_with_it(tmp_path):
    sizes = {}
    for n in (60, 600):
        data = many_clusters_corpus(tmp_path / f"d{n}" / "docs.parquet", clusters=n, copies=3, length=2000)
        out = tmp_path / f"out{n}"
        api.exact([str(data)], str(out), id_column="id")
        page = tmp_path / f"r{n}.html"
        res = build_report(out, page, ReportOptions(largest=5, sample=7, max_members=1, max_chars=300,
                                                    doc_index_limit=500))
        html = page.read_text(encoding="utf-8")
        data_ = page_data(html)
        st = data_["stages"][0]
        assert res.sampled and "This page lists a sample" in html
        assert res.clusters_total == n and res.clusters_listed == 12 == len(data_["clusters"])
        assert len(st["largest"]) == 5 and len(st["sample"]) == 7 and not set(st["largest"]) & set(st["sample"])
        assert sum(st["size_hist"]["clusters"]) == n  # histograms count every cluster
        for c in data_["clusters"].values():
            assert c["hidden"] == 1 and len(c["dups"]) == 1
            assert len(c["rep"]["text"]) == 300 and c["rep"]["truncated"]
            assert len(dup_text(c["dups"][0]["diff"])) == 300 and c["dups"][0]["truncated"]
        # 60 clusters x 3 docs fit the search index; 600 x 3 exceed doc_index_limit=500.
        assert st["index_complete"] == (n * 3 <= 500)
        expected = n * 3 if n * 3 <= 500 else 12 * 2
        assert len(data_["doc_index"]) == expected
        sizes[n] = res.bytes
    assert sizes[600] < sizes[60] * 1.2


def test_same_seed_same_sample_other_seed_other_sample(tmp_path):
    data = many_clusters_corpus(tmp_path / "d" / "docs.parquet", clusters=80)
    out = tmp_path / "out"
    api.exact([str(data)], str(out), id_column="id")
    pick = []
    for i, seed in enumerate((0, 0, 1)):
        page = tmp_path / f"r{i}.html"
        build_report(out, page, ReportOptions(largest=2, sample=5, seed=seed))
        pick.append(page_data(page.read_text(encoding="utf-8"))["stages"][0]["sample"])
    assert pick[0] == pick[1] and pick[0] != pick[2]


def test_changed_or_missing_shard_gives_a_note_not_wrong_texts(tmp_path, pipeline_run):
    run, _ = pipeline_run
    data = run.parent / "data"
    write_parquet(data / "a.parquet", make_rows(["something else entirely"] * 10, prefix="x"))
    (data / "b.jsonl").unlink()
    page = tmp_path / "r.html"
    res = build_report(run / "02-fuzzy", page)
    assert any("a.parquet" in n and "changed" in n for n in res.notes)
    assert any("b.jsonl" in n and "no longer exists" in n for n in res.notes)
    data_ = page_data(page.read_text(encoding="utf-8"))
    for c in data_["clusters"].values():
        assert c["rep"]["text"] is None
        assert all("diff" not in d and d["text"] is None for d in c["dups"])


def test_texts_cannot_break_out_of_the_page(tmp_path):
    nasty = 'x </script><script>alert("pwned")</script> <!-- & \u2028 caf\u00e9 \U0001F600'
    write_parquet(tmp_path / "d" / "a.parquet", make_rows([nasty, nasty, "other"], prefix="q"))
    out = tmp_path / "out"
    api.exact([str(tmp_path / "d")], str(out), id_column="id")
    page = tmp_path / "r.html"
    build_report(out, page)
    html = page.read_text(encoding="utf-8")
    assert 'alert("pwned")' not in html and "<!-- &" not in html
    data = page_data(html)
    (c,) = data["clusters"].values()
    assert c["rep"]["text"] == nasty and dup_text(c["dups"][0]["diff"]) == nasty
    assert not re.search(r'(src|href)="https?:', html)  # nothing loads from the network


def test_report_of_unfinished_or_missing_output_fails_clearly(tmp_path):
    (tmp_path / "half").mkdir()
    with pytest.raises(ManifestError, match="summary.json"):
        build_report(tmp_path / "half", tmp_path / "r.html")
    r = CliRunner().invoke(cli, ["report", str(tmp_path / "half"), "-o", str(tmp_path / "r.html")])
    assert r.exit_code == 1 and "no summary.json" in r.stderr and r.stdout == ""
    assert not (tmp_path / "r.html").exists()


def test_output_that_is_a_folder_is_refused_and_nothing_half_written(tmp_path, pipeline_run):
    run, _ = pipeline_run
    (tmp_path / "page").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        build_report(run, tmp_path / "page")
    assert not list(tmp_path.glob(".*tmp*"))


def test_cli_report_prints_only_the_path_on_stdout(tmp_path, pipeline_run):
    run, _ = pipeline_run
    page = tmp_path / "sub" / "report.html"
    r = CliRunner().invoke(cli, ["report", str(run / "01-exact"), "-o", str(page)])
    assert r.exit_code == 0, r.output
    assert r.stdout == f"{page}\n"
    assert "clusters listed" in r.stderr and page.exists()
    r = CliRunner().invoke(cli, ["report", str(run), "-o", str(page), "--json", "--largest", "1", "--sample", "0"])
    assert r.exit_code == 0
    info = json.loads(r.stdout)
    assert info["path"] == str(page) and info["bytes"] == page.stat().st_size
    assert info["clusters_listed"] == 2 and info["clusters_total"] == 5 and info["sampled"]


def test_help_of_report_and_inspect_ends_with_an_example():
    for cmd in ("report", "inspect"):
        r = CliRunner().invoke(cli, [cmd, "--help"])
        assert r.exit_code == 0
        assert r.stdout.rstrip().splitlines()[-2].strip() == "Example:" or "Example:" in r.stdout.split("\n\n")[-1]


# -- pieces -------------------------------------------------------------------------------------

def test_word_diff_rebuilds_both_texts_and_counts_words():
    a = "The quick brown fox\njumps over the lazy dog."
    b = "The  quick red fox jumps over the dog. Extra words"
    seg = word_diff(a, b)
    assert dup_text(seg) == b
    assert rep_words(seg) == a.split()
    assert diff_stats(seg) == {"same": 7, "removed": 2, "added": 3}
    assert plain(word_diff("a b c", "a x c")) == "a [-b-] {+x+} c"
    assert word_diff("", "") == [] and dup_text(word_diff("", "new text")) == "new text"


def test_size_histogram_bins_every_cluster():
    import numpy as np

    h = size_histogram(np.array([2, 2, 3, 11, 12, 25, 150]))
    assert h["labels"][:2] == ["2", "3"] and "11-20" in h["labels"] and "101-200" in h["labels"]
    got = dict(zip(h["labels"], h["clusters"]))
    assert got["2"] == 2 and got["11-20"] == 2 and got["21-50"] == 1 and got["101-200"] == 1
    assert sum(h["clusters"]) == 7 and sum(h["docs"]) == 205
    assert size_histogram(np.array([], dtype=np.int64))["labels"] == []


def test_score_histogram_covers_threshold_and_every_score():
    import numpy as np

    s = np.array([0.71, 0.8, 0.95, 1.0, np.nan])
    h = score_histogram(s, 0.6)
    assert sum(h["counts"]) == 4 and h["edges"][0] <= 0.6 and h["edges"][-1] == 1.0
    assert score_histogram(np.array([]), 0.5)["counts"] == []


@pytest.mark.parametrize("summary,expected", [
    ({"config": {"stage": {"bands": 9, "rows": 13}}}, (9, 13)),
    ({"config": {"stage": {"lsh": {"num_bands": 20, "rows_per_band": 5}}}}, (20, 5)),
    ({"stats": {"b": 4, "r": 2}}, (4, 2)),
    ({"config": {"stage": {"bands": True, "rows": 3}}}, None),
    ({"config": {"stage": {"threshold": 0.8}}}, None),
    ({}, None),
])
def test_lsh_params_read_defensively(summary, expected):
    assert lsh_params(summary) == expected


def test_threshold_read_defensively():
    assert stage_threshold({"config": {"stage": {"threshold": 0.7}}}) == 0.7
    assert stage_threshold({"config": {"stage": {"eps": 0.1}}}) == pytest.approx(0.9)
    assert stage_threshold({"config": {"stage": {"eps": [0.05]}}}) == pytest.approx(0.95)
    assert stage_threshold({"config": {"stage": {"eps": [0.05, 0.1]}}}) is None
    assert stage_threshold({"config": {"stage": {"threshold": "high"}}}) is None
    assert stage_threshold({"config": "broken"}) is None
    assert lsh_curve(1, 1, points=3) == [[0.0, 0.0], [0.5, 0.5], [1.0, 1.0]]


def test_case_only_differences_are_named(tmp_path):
    texts = ["Rain Is Expected Tomorrow in the north", "rain is expected tomorrow in the north",
             "Rain is expected tomorrow in the south"]
    write_parquet(tmp_path / "d" / "a.parquet", make_rows(texts, prefix="c"))
    out = tmp_path / "out"
    api.exact([str(tmp_path / "d")], str(out), id_column="id", normalize="lower,whitespace")
    page = tmp_path / "r.html"
    build_report(out, page)
    (c,) = page_data(page.read_text(encoding="utf-8"))["clusters"].values()
    (d,) = c["dups"]
    assert d["words"]["removed"] == 4 and d["words"]["same_ignoring_case"] is True
    r = CliRunner().invoke(cli, ["inspect", str(out), "--doc", "c1"])
    assert "(same words ignoring case)" in r.stdout


def test_gzipped_jsonl_shards_give_their_texts(tmp_path):
    import gzip

    texts = ["same text here", "other text", "same text here"]
    path = tmp_path / "d" / "a.jsonl.gz"
    path.parent.mkdir(parents=True)
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for r in make_rows(texts, prefix="g"):
            fh.write(json.dumps(r) + "\n")
    out = tmp_path / "out"
    api.exact([str(path)], str(out), id_column="id")
    page = tmp_path / "r.html"
    res = build_report(out, page)
    assert res.notes == []
    (c,) = page_data(page.read_text(encoding="utf-8"))["clusters"].values()
    assert c["rep"]["doc_id"] == "g0" and c["rep"]["text"] == "same text here"
    assert c["dups"][0]["doc_id"] == "g2" and dup_text(c["dups"][0]["diff"]) == "same text here"


def test_run_without_duplicates_says_so(tmp_path):
    write_parquet(tmp_path / "d" / "a.parquet", make_rows(["one", "two", "three"], prefix="u"))
    out = tmp_path / "out"
    api.exact([str(tmp_path / "d")], str(out), id_column="id")
    page = tmp_path / "r.html"
    res = build_report(out, page)
    data = page_data(page.read_text(encoding="utf-8"))
    assert res.clusters_total == 0 and not res.sampled and data["clusters"] == {} and data["doc_index"] == {}
    st = data["stages"][0]
    assert st["size_hist"]["labels"] == [] and st["score_hist"]["counts"] == []


def test_combined_run_counts_keep_numbers_only():
    from dedupkit.report.html import _counts

    c = _counts({"counts": {"rows": 10, "kept": 7, "dropped": 3, "dropped_by_stage": {"exact": 1, "fuzzy": 2},
                            "clusters": 2}, "timings": {"total_s": 1.5}})
    assert c["rows"] == 10 and c["dropped"] == 3 and c["drop_rate"] == pytest.approx(0.3) and c["time_s"] == 1.5


def test_report_of_a_dedupkit_run_folder(tmp_path, corpus):
    out = tmp_path / "run"
    api.run([str(corpus)], str(out), stages="exact", id_column="id")
    page = tmp_path / "r.html"
    res = build_report(out, page)
    html = page.read_text(encoding="utf-8")
    data = page_data(html)
    assert res.notes == [] and data["pipeline"] is True
    assert [s["label"] for s in data["stages"]] == ["01-exact"]
    combined = data["combined"]
    truth = read_manifest(out)
    assert combined["rows"] == len(truth) and combined["dropped"] == sum(not r["keep"] for r in truth)
    assert '<tr class="total"><td>all stages</td>' in html


def test_byte_budget_cuts_texts_and_index_until_the_page_fits(tmp_path):
    data = many_clusters_corpus(tmp_path / "d" / "docs.parquet", clusters=40, copies=2, length=3000)
    out = tmp_path / "out"
    api.exact([str(data)], str(out), id_column="id")
    full = tmp_path / "full.html"
    small = tmp_path / "small.html"
    big = build_report(out, full, ReportOptions(max_chars=2000))
    res = build_report(out, small, ReportOptions(max_chars=2000, max_bytes=40_000))
    html = small.read_text(encoding="utf-8")
    d = page_data(html)
    block = re.search(r'<script id="report-data" type="application/json">(.*?)</script>', html, re.S).group(1)
    assert len(block.encode()) <= 40_000 < big.bytes
    assert res.sampled and any("cut to" in n for n in res.notes)
    limit = d["options"]["max_chars"]
    assert limit < 2000
    for c in d["clusters"].values():
        assert len(c["rep"]["text"]) <= limit and c["rep"]["truncated"]
        assert len(dup_text(c["dups"][0]["diff"])) <= limit
    assert f"{limit} characters per text" in html
