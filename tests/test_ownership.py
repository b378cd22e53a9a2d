"""Nothing dedupkit does may delete, hide or overwrite data it did not write (issue 15, items 1-6).

Each test is the issue's reproducer, run through the real command line on real files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
from click.testing import CliRunner

from tests.support import write_jsonl, write_parquet
from dedupkit.cli.main import cli


def _invoke(*args: str, cwd: Path | None = None):
    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    finally:
        os.chdir(old)


def _rows(folder: Path) -> int:
    """Rows in every shard under ``folder`` (JSONL lines and Parquet rows)."""
    n = 0
    for p in sorted(folder.rglob("*")):
        if p.name.endswith(".jsonl"):
            n += sum(1 for _ in p.open())
        elif p.name.endswith(".parquet"):
            n += pq.read_metadata(p).num_rows
    return n


def _snapshot(root: Path) -> dict[str, object]:
    """Every entry below root: file bytes, link targets, and folders."""
    out: dict[str, object] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", p.read_bytes())
    return out


def _year_corpus(data: Path) -> None:
    texts = [f"document number {i} about topic {i % 7}" for i in range(150)]
    write_jsonl(data / "2024" / "a.jsonl", [{"id": f"a{i}", "text": t} for i, t in enumerate(texts)])
    write_jsonl(data / "2025" / "b.jsonl", [{"id": f"b{i}", "text": t + " later"} for i, t in enumerate(texts)])
    write_jsonl(data / "c.jsonl", [{"id": f"c{i}", "text": f"tail {i}"} for i in range(5)])


# -- item 1 --------------------------------------------------------------------------------------
def test_refused_output_leaves_nothing_and_does_not_hide_data(tmp_path):
    """A refused -o leaves no lock file; the next walk still reads that folder."""
    data = tmp_path / "data"
    _year_corpus(data)
    before = _snapshot(tmp_path)
    res = _invoke("exact", data, "-o", data / "2025", "-q")
    assert res.exit_code == 1 and "already holds other files" in res.output
    assert _snapshot(tmp_path) == before  # no .dedupkit.lock, nothing else
    res = _invoke("exact", data, "-o", tmp_path / "out", "-q", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["counts"]["rows"] == 305
    res = _invoke("apply", data, "--manifest", tmp_path / "out", "-o", tmp_path / "clean")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "clean" / "2025" / "b.jsonl").exists()


def test_stale_lock_file_does_not_hide_a_folder(tmp_path):
    """A .dedupkit.lock left by a killed or older run is not proof that a folder is dedupkit's."""
    data = tmp_path / "data"
    _year_corpus(data)
    (data / "2025" / ".dedupkit.lock").write_text("pid 1")
    res = _invoke("exact", data, "-o", tmp_path / "out", "-q", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["counts"]["rows"] == 305


def test_refused_new_output_folder_is_not_created(tmp_path):
    data = tmp_path / "data"
    _year_corpus(data)
    out = tmp_path / "new" / "out"
    res = _invoke("exact", data, "-o", out, "--id-column", "nope", "-q")
    assert res.exit_code == 1
    assert not (tmp_path / "new").exists()
    res = _invoke("run", data, "--stages", "exact", "-o", out, "--id-column", "nope", "-q")
    assert res.exit_code == 1
    assert not (tmp_path / "new").exists()


# -- item 2 --------------------------------------------------------------------------------------
def test_same_name_after_dotdot_never_collides(tmp_path):
    work = tmp_path / "w"
    write_jsonl(tmp_path / "x" / "part.jsonl", [{"text": f"outer {i}"} for i in range(5)])
    write_jsonl(work / "x" / "part.jsonl", [{"text": f"inner {i}"} for i in range(5)])
    res = _invoke("exact", "../x/part.jsonl", "x/part.jsonl", "-o", "out", "-q", cwd=work)
    assert res.exit_code == 0, res.output
    res = _invoke("apply", "../x/part.jsonl", "x/part.jsonl", "--manifest", "out", "-o", "clean", "--json",
                  cwd=work)
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout)
    outputs = [s["output"] for s in record["shards"]]
    assert len(set(outputs)) == 2
    assert record["kept"] == 10 and _rows(work / "clean") == 10


# -- item 3 --------------------------------------------------------------------------------------
def test_shards_are_matched_by_name_never_by_fingerprint_alone(tmp_path):
    data = tmp_path / "data"
    write_jsonl(data / "a.jsonl", [{"text": f"row {i}"} for i in range(5)])
    (data / "b.jsonl").write_bytes((data / "a.jsonl").read_bytes())
    assert _invoke("exact", "data", "-o", "m", "-q", cwd=tmp_path).exit_code == 0
    res = _invoke("apply", "data", "--manifest", "m", "-o", "c1", "--json", cwd=tmp_path)
    assert res.exit_code == 0 and json.loads(res.stdout)["kept"] == 5
    # the same files named another way: the same 5 rows, or a refusal, never 10
    res = _invoke("apply", tmp_path / "data", "--manifest", "m", "-o", "c2", "--json", cwd=tmp_path)
    if res.exit_code == 0:
        assert json.loads(res.stdout)["kept"] == 5 and _rows(tmp_path / "c2") == 5
    else:
        assert "not in manifest" in res.output and not (tmp_path / "c2").exists()
    # a file named like a manifest shard but holding other bytes is refused (name and fingerprint
    # must both match), even when its bytes equal another shard of the manifest
    other = tmp_path / "other" / "data"
    write_jsonl(other / "a.jsonl", [{"text": "something else"}])
    (other / "b.jsonl").write_bytes((data / "a.jsonl").read_bytes())
    res = _invoke("apply", "data", "--manifest", tmp_path / "m", "-o", tmp_path / "c3", cwd=tmp_path / "other")
    assert res.exit_code == 1 and "changed since manifest" in res.output
    assert not (tmp_path / "c3").exists()


# -- item 4 --------------------------------------------------------------------------------------
def test_apply_overwrite_never_deletes_a_folder_it_did_not_write(tmp_path):
    data = tmp_path / "data"
    write_jsonl(data / "a.jsonl", [{"text": f"row {i % 3}"} for i in range(6)])
    m = tmp_path / "m"
    assert _invoke("exact", data, "-o", m, "-q").exit_code == 0
    home = tmp_path / "home"
    (home / "docs").mkdir(parents=True)
    (home / "docs" / "thesis.tex").write_text("years of work")
    before = _snapshot(tmp_path)
    res = _invoke("apply", data, "--manifest", m, "-o", home, "--overwrite")
    assert res.exit_code == 1 and "not written by dedupkit apply" in res.output
    res = _invoke("apply", data, "--manifest", m, "-o", m, "--overwrite")
    assert res.exit_code == 1
    res = _invoke("apply", data, "--manifest", m, "-o", tmp_path, "--overwrite")
    assert res.exit_code == 1
    res = _invoke("apply", data, "--manifest", m, "-o", data, "--overwrite")
    assert res.exit_code == 1
    assert _snapshot(tmp_path) == before
    # a folder apply wrote is replaced; a file added to it later is not deleted silently
    clean = tmp_path / "clean"
    assert _invoke("apply", data, "--manifest", m, "-o", clean).exit_code == 0
    assert _invoke("apply", data, "--manifest", m, "-o", clean, "--overwrite").exit_code == 0
    (clean / "notes.txt").write_text("mine")
    res = _invoke("apply", data, "--manifest", m, "-o", clean, "--overwrite")
    assert res.exit_code == 1 and "notes.txt" in res.output
    assert (clean / "notes.txt").read_text() == "mine"


def test_run_clean_refuses_foreign_folder(tmp_path):
    data = tmp_path / "data"
    write_jsonl(data / "a.jsonl", [{"text": f"row {i % 3}"} for i in range(6)])
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    res = _invoke("run", data, "--stages", "exact", "-o", tmp_path / "out", "--clean", home, "-q")
    assert res.exit_code == 1
    assert (home / "thesis.tex").read_text() == "years of work"


# -- item 5 --------------------------------------------------------------------------------------
def test_stage_overwrite_keeps_foreign_files_and_the_old_run_until_the_new_one_is_done(tmp_path):
    data = tmp_path / "data"
    write_jsonl(data / "a.jsonl", [{"id": f"a{i}", "text": f"row {i % 3}"} for i in range(6)])
    out = tmp_path / "out"
    assert _invoke("exact", data, "-o", out, "-q").exit_code == 0
    (out / "notes.txt").write_text("mine")
    old = _snapshot(out)
    res = _invoke("exact", data, "-o", out, "-q", "--overwrite", "--id-column", "idd")  # mistyped
    assert res.exit_code == 1
    assert _snapshot(out) == old  # the old finished run is intact, and nothing was added
    res = _invoke("exact", data, "-o", out, "-q", "--overwrite", "--id-column", "id")
    assert res.exit_code == 0, res.output
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "summary.json").read_text())["config"]["read"]["id_column"] == "id"
    # the same for `run --overwrite` (its stages rerun over the old finished run)
    run = tmp_path / "run"
    assert _invoke("run", data, "--stages", "exact,fuzzy", "-o", run, "-q").exit_code == 0
    old = _snapshot(run)
    res = _invoke("run", data, "--stages", "exact,fuzzy", "-o", run, "-q", "--overwrite", "--id-column", "idd")
    assert res.exit_code == 1
    assert _snapshot(run) == old


def test_output_that_is_a_skip_manifest_is_refused_up_front(tmp_path):
    data = tmp_path / "data"
    write_jsonl(data / "a.jsonl", [{"id": f"a{i}", "text": f"row {i % 3} words here"} for i in range(6)])
    m = tmp_path / "m"
    assert _invoke("exact", data, "-o", m, "-q").exit_code == 0
    before = _snapshot(tmp_path)
    for args in (["fuzzy", data, "-o", m, "--skip", m, "--overwrite"],
                 ["exact", data, "-o", m / "manifest", "--skip", m, "--overwrite"],
                 ["exact", data, "-o", tmp_path, "--skip", m, "--overwrite"]):
        res = _invoke(*args, "-q")
        assert res.exit_code == 1, args
        assert "--skip" in res.output, res.output
    assert _snapshot(tmp_path) == before


# -- item 6 --------------------------------------------------------------------------------------
def test_report_never_replaces_a_file_it_did_not_write(tmp_path):
    data = tmp_path / "data"
    write_jsonl(data / "a.jsonl", [{"text": f"row {i % 3}"} for i in range(6)])
    out = tmp_path / "out"
    assert _invoke("exact", data, "-o", out, "-q").exit_code == 0
    before = _snapshot(tmp_path)
    for target in (data / "a.jsonl", out / "summary.json"):
        for extra in ([], ["--overwrite"]):
            res = _invoke("report", out, "-o", target, *extra)
            assert res.exit_code == 1, (target, extra, res.output)
    assert _snapshot(tmp_path) == before
    page = tmp_path / "report.html"
    assert _invoke("report", out, "-o", page).exit_code == 0
    assert _invoke("report", out, "-o", page).exit_code == 0  # its own page is regenerated
    mine = tmp_path / "mine.html"
    mine.write_text("<html>my own page</html>")
    res = _invoke("report", out, "-o", mine)
    assert res.exit_code == 1 and "--overwrite" in res.output
    assert mine.read_text() == "<html>my own page</html>"
    assert _invoke("report", out, "-o", mine, "--overwrite").exit_code == 0
    link = tmp_path / "link.html"
    link.symlink_to(page)
    res = _invoke("report", out, "-o", link, "--overwrite")
    assert res.exit_code == 1 and "symbolic link" in res.output


def test_inputs_that_are_not_regular_files_are_refused_at_the_start(tmp_path):
    """A dangling link or a pipe among the inputs: a clear error before anything is written."""
    data = tmp_path / "data"
    write_jsonl(data / "a.jsonl", [{"text": "one"}])
    (data / "gone.jsonl").symlink_to(data / "no-such.jsonl")
    res = _invoke("exact", data, "-o", tmp_path / "out", "-q")
    assert res.exit_code == 1 and "gone.jsonl is a symbolic link to nothing" in res.output
    (data / "gone.jsonl").unlink()
    os.mkfifo(data / "pipe.jsonl")
    res = _invoke("exact", data, "-o", tmp_path / "out", "-q")
    assert res.exit_code == 1 and "pipe.jsonl is a named pipe" in res.output and "not a regular file" in res.output
    assert not (tmp_path / "out").exists()


def test_stale_lock_files_never_block_and_never_linger_in_our_folders(tmp_path):
    data = tmp_path / "data"
    write_jsonl(data / "a.jsonl", [{"text": f"row {i % 3}"} for i in range(6)])
    out = tmp_path / "out"
    assert _invoke("exact", data, "-o", out, "-q").exit_code == 0
    assert not (out / ".dedupkit.lock").exists()  # the lock goes with the run
    (out / ".dedupkit.lock").write_text("pid 999999")  # a killed run's
    assert _invoke("exact", data, "-o", out, "-q", "--overwrite").exit_code == 0
    assert not (out / ".dedupkit.lock").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".dedupkit.lock").write_text("pid 999999")  # in a folder not (yet) provably ours
    assert _invoke("exact", data, "-o", empty, "-q", "--id-column", "nope").exit_code == 1
    assert [p.name for p in empty.iterdir()] == [".dedupkit.lock"]
    assert (empty / ".dedupkit.lock").read_text() == "pid 999999"
