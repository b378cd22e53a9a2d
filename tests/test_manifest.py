"""Issue 15 item 7: a damaged or tampered manifest is refused by every reader, with a message.

Each case builds a real manifest with the real command line, damages it the way the issue's
reproducers did, and runs `apply`, `stats`, `report`, `inspect` and a stage's `--skip` over it:
every one must exit 1 with a one-line `Error:` naming the manifest file and the fix, never use
the damaged manifest and never show a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from tests.support import make_rows, write_jsonl
from dedupkit.cli.main import cli


def _cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def made(tmp_path):
    d = tmp_path / "data"
    write_jsonl(d / "a.jsonl", make_rows(["x", "x", "y", "z"], "a"))
    write_jsonl(d / "b.jsonl", make_rows(["y", "w", "w"], "b"))
    r = _cli("exact", d, "-o", tmp_path / "m", "--id-column", "id")
    assert r.exit_code == 0, r.output
    parts = sorted((tmp_path / "m" / "manifest").glob("*.parquet"))
    assert len(parts) == 2
    return d, tmp_path / "m", parts


def _rewrite(part: Path, fn) -> None:
    t = pq.read_table(part)
    pq.write_table(fn(t), part)


def _set(t: pa.Table, name: str, values) -> pa.Table:
    i = t.column_names.index(name)
    return t.set_column(i, name, pa.array(values, t.schema.field(name).type))


def _all_dropped(parts):
    for p in parts:
        _rewrite(p, lambda t: _set(t, "keep", [False] * len(t)))


def _row_minus_one(parts):
    _rewrite(parts[0], lambda t: _set(t, "row", [-1] + t.column("row").to_pylist()[1:]))


def _row_huge(parts):
    _rewrite(parts[0], lambda t: _set(t, "row", t.column("row").to_pylist()[:-1] + [10 ** 9]))


def _null_keep(parts):
    _rewrite(parts[0], lambda t: _set(t, "keep", [None] + t.column("keep").to_pylist()[1:]))


def _part_removed(parts):
    parts[1].unlink()


def _garbage_part(parts):
    parts[0].write_bytes(b"PAR1 this is not parquet at all PAR1")


def _extra_part(parts):
    (parts[0].parent / "part-99999.parquet").write_bytes(parts[0].read_bytes())


def _summary_list(parts):
    (parts[0].parent.parent / "summary.json").write_text("[]")


def _summary_rows(parts):
    sp = parts[0].parent.parent / "summary.json"
    s = json.loads(sp.read_text())
    s["inputs"][0]["rows"] = 2
    sp.write_text(json.dumps(s))


def _legacy_keep_flip(parts):
    # A summary without recorded checksums (an older run): the counts still catch a flipped keep.
    sp = parts[0].parent.parent / "summary.json"
    s = json.loads(sp.read_text())
    s.pop("manifest_parts")
    sp.write_text(json.dumps(s))
    _rewrite(parts[0], lambda t: _set(t, "keep", [True] * len(t)))


def _legacy_duplicate_row(parts):
    sp = parts[0].parent.parent / "summary.json"
    s = json.loads(sp.read_text())
    s.pop("manifest_parts")
    sp.write_text(json.dumps(s))
    _rewrite(parts[0], lambda t: _set(t, "row", [0, 0] + t.column("row").to_pylist()[2:]))


DAMAGE = {
    "every keep false": (_all_dropped, "checksum"),
    "row -1": (_row_minus_one, "checksum"),
    "row 10^9": (_row_huge, "checksum"),
    "null keep": (_null_keep, "checksum"),
    "part removed": (_part_removed, "manifest part missing"),
    "garbage part": (_garbage_part, "checksum"),
    "part added": (_extra_part, "does not record"),
    "summary []": (_summary_list, "not the summary of a finished"),
    "summary rows changed": (_summary_rows, "outside|records 2"),
    "legacy: keep flipped": (_legacy_keep_flip, "kept rows but"),
    "legacy: row twice": (_legacy_duplicate_row, "appears twice"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_every_reader_refuses_a_damaged_manifest(made, tmp_path, case):
    d, m, parts = made
    damage, why = DAMAGE[case]
    damage(parts)
    runs = {
        "apply": ("apply", d, "--manifest", m, "-o", tmp_path / "clean"),
        "stats": ("stats", m),
        "report": ("report", m, "-o", tmp_path / "r.html"),
        "inspect": ("inspect", m, "--largest", "1"),
        "--skip": ("exact", d, "-o", tmp_path / "next", "--skip", m),
    }
    for name, args in runs.items():
        r = _cli(*args)
        assert r.exit_code == 1, (name, r.output)
        assert r.exception is None or isinstance(r.exception, SystemExit), (name, r.exception)
        assert "Traceback" not in r.output
        assert "Error:" in r.output and str(m) in r.output, (name, r.output)
        assert pytest.importorskip("re").search(why, r.output), (name, r.output)
        assert "--overwrite" in r.output or "restore" in r.output or "remove it" in r.output, (name, r.output)
    assert not (tmp_path / "clean").exists()
    assert not (tmp_path / "r.html").exists()
    assert not (tmp_path / "next" / "summary.json").exists()


def test_undamaged_manifest_is_read_by_every_reader(made, tmp_path):
    d, m, parts = made
    assert _cli("apply", d, "--manifest", m, "-o", tmp_path / "clean").exit_code == 0
    assert _cli("stats", m).exit_code == 0
    assert _cli("report", m, "-o", tmp_path / "r.html").exit_code == 0
    assert _cli("inspect", m, "--largest", "1").exit_code == 0
    assert _cli("exact", d, "-o", tmp_path / "next", "--skip", m).exit_code == 0
    kept = [json.loads(x)["id"] for x in (tmp_path / "clean" / "a.jsonl").read_text().splitlines()]
    assert kept == ["a0", "a2", "a3"]
    s = json.loads((m / "summary.json").read_text())
    assert [p["file"] for p in s["manifest_parts"]] == [p.name for p in parts]


def test_pipeline_run_records_and_checks_its_combined_manifest(tmp_path):
    d = tmp_path / "data"
    write_jsonl(d / "a.jsonl", make_rows(["x", "x", "y", "z"], "a"))
    r = _cli("run", d, "-o", tmp_path / "run", "--stages", "exact,fuzzy")
    assert r.exit_code == 0, r.output
    part = next((tmp_path / "run" / "manifest").glob("*.parquet"))
    _rewrite(part, lambda t: _set(t, "keep", [True] * len(t)))
    r = _cli("apply", d, "--manifest", tmp_path / "run", "-o", tmp_path / "clean")
    assert r.exit_code == 1 and "checksum" in r.output, r.output
    r = _cli("stats", tmp_path / "run")
    assert r.exit_code == 1 and "checksum" in r.output, r.output
