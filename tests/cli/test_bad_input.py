"""Bad and hostile input: each gets a clear error naming the file (and row/line) or a counted skip.

Every case here is a row of the table in docs/reliability.md. Error cases also check that the
failed run left nothing complete-looking (no summary.json, no manifest/). Skip cases check the
manifest still holds exactly one row per input row, with the bad rows dropped and explained.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from tests.support import read_manifest, write_jsonl, write_parquet
from dedupkit.cli.main import cli

ROWS = [{"id": f"i{i}", "text": f"document number {i % 4}"} for i in range(40)]


def _parquet_bytes(rows=ROWS, **kw) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), sink, **kw)
    return sink.getvalue().to_pybytes()


def _jsonl_bytes(rows=ROWS) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def invalid_utf8_parquet(d: Path) -> None:
    data = b"ok textbad \xff\xfe textfine"
    offsets = np.array([0, 7, 18, 22], dtype=np.int32)
    arr = pa.Array.from_buffers(pa.string(), 3, [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data)])
    pq.write_table(pa.table({"text": arr}), d / "a.parquet")


def flipped_pages(d: Path) -> None:
    b = bytearray(_parquet_bytes(compression="none"))
    for k in range(40, len(b) // 2, 7):
        b[k] ^= 0xFF
    (d / "a.parquet").write_bytes(bytes(b))


def corrupt_footer(d: Path) -> None:
    b = bytearray(_parquet_bytes())
    for k in range(len(b) - 60, len(b) - 8):
        b[k] ^= 0x5A
    (d / "a.parquet").write_bytes(bytes(b))


def symlink_loop(d: Path) -> None:
    (d / "sub").mkdir()
    write_parquet(d / "sub" / "a.parquet", ROWS)
    os.symlink("..", d / "sub" / "up")
    os.symlink(".", d / "self")
    os.symlink(str(d), d / "sub" / "root")


@dataclass
class Bad:
    """One bad-input case.

    Attributes:
        name: test id (and the row name in docs/reliability.md).
        build: writes the input files into a folder.
        error: regex the error message must match in ``--on-bad-record fail`` mode (None: the run
            succeeds in fail mode too).
        skipped: with ``--on-bad-record skip``: the number of bad records counted (None: skip mode
            fails the same way as fail mode, because the problem is the file, not a record).
        rows: input rows expected in the manifest when the run succeeds.
        args: extra CLI arguments.
    """

    name: str
    build: Callable[[Path], None]
    error: str | None
    skipped: int | None
    rows: int | None = None
    args: tuple[str, ...] = ()


CASES = [
    Bad("truncated-parquet", lambda d: (d / "a.parquet").write_bytes(_parquet_bytes()[:700]),
        r"a\.parquet: not a readable Parquet file .*truncated or corrupt", None),
    Bad("corrupt-parquet-pages", flipped_pages, r"a\.parquet: .*(unreadable|not a readable).*corrupt", None),
    Bad("corrupt-parquet-footer", corrupt_footer, r"a\.parquet: .*corrupt", None),
    Bad("zero-byte-parquet", lambda d: (d / "a.parquet").write_bytes(b""), r"a\.parquet: the file is empty \(0 bytes\)",
        None),
    Bad("zero-byte-jsonl", lambda d: (d / "a.jsonl").write_bytes(b""), r"a\.jsonl: the file is empty \(0 bytes\)", None),
    Bad("malformed-jsonl", lambda d: (d / "a.jsonl").write_bytes(
        b'{"text": "a"}\n{"text": "b"}\n{"text": "c",,}\n{"text": \n{"text": "e"}\n'),
        r"a\.jsonl: line 3: malformed JSON", 2, rows=5),
    Bad("truncated-jsonl-last-line", lambda d: (d / "a.jsonl").write_bytes(_jsonl_bytes()[:-9]),
        r"a\.jsonl: line 40: malformed JSON", 1, rows=40),
    Bad("mixed-encoding-jsonl", lambda d: (d / "a.jsonl").write_bytes(
        '{"text": "café"}\n'.encode() + '{"text": "café latin-1"}\n'.encode("latin-1") + b'{"text": "x"}\n'),
        r"a\.jsonl: line 2: line is not valid UTF-8", 1, rows=3),
    Bad("invalid-utf8-bytes-jsonl", lambda d: (d / "a.jsonl").write_bytes(b'{"text": "ok"}\n{"text": "\xc3\x28"}\n'),
        r"a\.jsonl: line 2: line is not valid UTF-8", 1, rows=2),
    Bad("invalid-utf8-parquet", invalid_utf8_parquet, r"a\.parquet: row 1: text is not valid UTF-8", 1, rows=3),
    Bad("utf8-bom-jsonl", lambda d: (d / "a.jsonl").write_bytes(b'\xef\xbb\xbf{"text": "a"}\n{"text": "b"}\n'),
        None, 0, rows=2),
    Bad("crlf-jsonl", lambda d: (d / "a.jsonl").write_bytes(b'{"text": "a"}\r\n{"text": "b"}\r\n'), None, 0, rows=2),
    Bad("blank-lines-jsonl", lambda d: (d / "a.jsonl").write_bytes(b'{"text": "a"}\n\n{"text": "b"}\n   \n'),
        r"a\.jsonl: line 2: blank line", 2, rows=4),
    Bad("json-not-an-object", lambda d: (d / "a.jsonl").write_bytes(b'{"text": "a"}\n["text", "b"]\n"c"\n'),
        r"a\.jsonl: line 2: expected a JSON object, got list", 2, rows=3),
    Bad("missing-text-field-jsonl", lambda d: (d / "a.jsonl").write_bytes(b'{"text": "a"}\n{"body": "b"}\n'),
        r"a\.jsonl: line 2: no 'text' field; fields are: body; pass --text-column", 1, rows=2),
    Bad("null-text-parquet", lambda d: write_parquet(d / "a.parquet", [{"text": "a"}, {"text": None}, {"text": "c"}]),
        r"a\.parquet: row 1: null text in column 'text'", 1, rows=3),
    Bad("null-text-jsonl", lambda d: (d / "a.jsonl").write_bytes(b'{"text": "a"}\n{"text": null}\n'),
        r"a\.jsonl: line 2: null text in field 'text'", 1, rows=2),
    Bad("empty-texts", lambda d: write_parquet(d / "a.parquet", [{"text": ""}, {"text": "a"}, {"text": ""}]),
        None, 0, rows=3),
    Bad("text-column-wrong-type-parquet", lambda d: write_parquet(d / "a.parquet", [{"text": 1}, {"text": 2}]),
        r"column 'text' in .*a\.parquet has type int64, not a string; pass --text-column", None),
    Bad("text-field-wrong-type-jsonl", lambda d: (d / "a.jsonl").write_bytes(b'{"text": 1}\n{"text": ["a"]}\n{"text": "ok"}\n'),
        r"a\.jsonl: line 1: field 'text' is a int, not a string", 2, rows=3),
    Bad("text-column-missing-in-one-shard", lambda d: (write_parquet(d / "a.parquet", ROWS),
                                                      write_parquet(d / "b.parquet", [{"body": "x"}])),
        r"column 'text' not found in .*b\.parquet; columns are: body; pass --text-column", None),
    Bad("id-types-disagree", lambda d: (write_parquet(d / "a.parquet", [{"id": 1, "text": "a"}, {"id": 2, "text": "b"}]),
                                        write_jsonl(d / "b.jsonl", [{"id": "x", "text": "a"}])),
        None, 0, rows=3, args=("--id-column", "id")),
    Bad("keep-by-types-disagree", lambda d: (write_parquet(d / "a.parquet", [{"q": 1, "text": "a"}]),
                                             write_parquet(d / "b.parquet", [{"q": "x", "text": "a"}])),
        r"column 'q' has different types in different shards", None, args=("--keep-by", "q")),
    Bad("duplicate-ids", lambda d: (write_parquet(d / "a.parquet", [{"id": "1", "text": "a"}, {"id": "2", "text": "b"}]),
                                    write_jsonl(d / "b.jsonl", [{"id": "2", "text": "z"}])),
        r"id '2' in column 'id' occurs more than once \(.*a\.parquet row 1 and .*b\.jsonl row 0", None,
        args=("--id-column", "id")),
    Bad("null-id", lambda d: (d / "a.jsonl").write_bytes(b'{"id": "1", "text": "a"}\n{"id": null, "text": "b"}\n'),
        r"a\.jsonl: line 2: missing or null id in field 'id'", 1, rows=2, args=("--id-column", "id")),
    Bad("nested-id", lambda d: (d / "a.jsonl").write_bytes(b'{"id": {"a": 1}, "text": "a"}\n{"id": "2", "text": "b"}\n'),
        r"a\.jsonl: line 1: id field 'id' is not a scalar", 1, rows=2, args=("--id-column", "id")),
    Bad("truncated-gzip", lambda d: (d / "a.jsonl.gz").write_bytes(gzip.compress(_jsonl_bytes() * 20)[:300]),
        r"a\.jsonl\.gz: cannot decompress after line \d+ .*truncated or corrupt", None),
    Bad("corrupt-zstd", lambda d: (d / "a.jsonl.zst").write_bytes(b"\x28\xb5\x2f\xfd garbage" * 10),
        r"a\.jsonl\.zst: cannot decompress .*truncated or corrupt", None),
    Bad("not-gzip-named-gz", lambda d: (d / "a.jsonl.gz").write_bytes(_jsonl_bytes()),
        r"a\.jsonl\.gz: named as gzip-compressed but its first bytes are not a gzip header", None),
    Bad("symlink-loops", symlink_loop, None, 0, rows=40),
    Bad("unsupported-file-named", lambda d: (d / "a.xlsx").write_text("text\nx\n"),
        r"a\.xlsx: unknown format; supported suffixes are", None, args=("{d}/a.xlsx",)),
    Bad("folder-without-shards", lambda d: (d / "notes.txt").write_text("x"), r"holds no supported shard", None),
    Bad("missing-input", lambda d: None, r"nope\.parquet: no such file or folder", None, args=("{d}/nope.parquet",)),
]


def _invoke(args: list[str]):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


_SRC = Path(__file__).resolve().parents[2] / "src" / "dedupkit"
_HAVE = [s for s in ("exact", "fuzzy", "semantic")
         if (_SRC / "stages" / f"{s}.py").exists() or (_SRC / "stages" / s / "__init__.py").exists()]
# Every stage command reads through the same readers, so each gets the whole table; `run` chains
# the cheap stages. (semantic, when present, runs the table too: the model loads only when a run
# gets past reading, which the error cases never do.)
COMMANDS = {s: [s] for s in _HAVE}
COMMANDS["run"] = ["run", "--stages", ",".join(s for s in ("exact", "fuzzy") if s in _HAVE)]


def _args(case: Bad, d: Path, out: Path, mode: str, command: str = "exact") -> list[str]:
    extra = [a.replace("{d}", str(d)) for a in case.args]
    named = [a for a in extra if a.startswith(str(d))]
    flags = [a for a in extra if not a.startswith(str(d))]
    if command == "run" and "--keep-by" in flags:  # run takes stage settings through --set
        i = flags.index("--keep-by")
        flags[i:i + 2] = ["--set", f"exact.keep_by={flags[i + 1]}"]
    cache = ["--cache-dir", str(out.parent / "cache")] if command == "semantic" else []  # never in HOME
    return [*COMMANDS[command][:1], *(named or [str(d)]), *COMMANDS[command][1:], "-o", str(out),
            "--on-bad-record", mode, "-q", *flags, *cache]


def _assert_nothing_complete(out: Path) -> None:
    assert not (out / "summary.json").exists()
    assert not (out / "manifest").exists()
    assert not (out / ".manifest.tmp").exists()


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Bad, command: str, tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    case.build(d)
    for mode in ("fail", "skip"):
        out = tmp_path / f"out-{mode}"
        res = _invoke(_args(case, d, out, mode, command))
        fails = case.error is not None and (mode == "fail" or case.skipped is None)
        if fails:
            assert res.exit_code == 1, (mode, res.output)
            msg = res.stderr if hasattr(res, "stderr") else res.output
            assert msg.startswith("Error: "), msg
            assert re.search(case.error, msg, re.S), f"{mode}: {msg!r} does not match {case.error!r}"
            assert "Traceback" not in msg
            _assert_nothing_complete(out)
            continue
        assert res.exit_code == 0, (mode, res.output)
        summary = json.loads((out / "summary.json").read_text())
        manifest = read_manifest(out)
        assert len(manifest) == case.rows == summary["counts"]["rows"]
        assert len({(m["shard"], m["row"]) for m in manifest}) == case.rows  # each row exactly once
        bad = [m for m in manifest if (m["reason"] or "").startswith("bad record")]
        assert len(bad) == summary["counts"]["bad_records"] == (case.skipped or 0)
        assert all(not m["keep"] and m["reason"].startswith("bad record: ") for m in bad)
        if command == "run":  # the first stage's summary lists them
            summary = json.loads(next(out.glob("01-*/summary.json")).read_text())
        assert len(summary["bad_records"]) == len(bad)
        for b in summary["bad_records"]:
            assert b["line"] == b["row"] + 1 and b["reason"]


def test_bad_input_case_count():
    """The table in docs/reliability.md lists every case here; keep the two in step."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "reliability.md").read_text()
    missing = [c.name for c in CASES if f"`{c.name}`" not in doc]
    assert not missing, f"cases not in docs/reliability.md: {missing}"


def test_empty_texts_are_documents(tmp_path):
    """Empty strings are valid texts (not bad records): all empty documents are one exact cluster."""
    d = tmp_path / "data"
    write_parquet(d / "a.parquet", [{"text": ""}, {"text": "a"}, {"text": "   "}])
    res = _invoke(["exact", str(d), "-o", str(tmp_path / "o"), "-q"])
    assert res.exit_code == 0, res.output
    m = read_manifest(tmp_path / "o")
    assert [r["keep"] for r in m] == [True, True, False]  # "   " normalizes to ""
    assert m[2]["duplicate_of"] == m[0]["doc_id"]


def test_output_folder_inside_input(tmp_path):
    """An -o inside the input folder is never read as input, by this run or by later ones."""
    d = tmp_path / "data"
    write_parquet(d / "a.parquet", [{"text": "same"}, {"text": "same"}, {"text": "other"}])
    for args in (["-o", str(d / "out")], ["-o", str(d / "out"), "--overwrite"], ["-o", str(d / "out2")]):
        res = _invoke(["exact", str(d), "-q", *args])
        assert res.exit_code == 0, res.output
        summary = json.loads((Path(args[1]) / "summary.json").read_text())
        assert [s["name"] for s in summary["inputs"]] == [str(d / "a.parquet")]
        assert summary["counts"]["rows"] == 3
    res = _invoke(["apply", str(d), "--manifest", str(d / "out"), "-o", str(d / "clean")])
    assert res.exit_code == 0, res.output
    res = _invoke(["exact", str(d), "-o", str(d / "out3"), "-q"])
    assert res.exit_code == 0, res.output
    summary = json.loads((d / "out3" / "summary.json").read_text())
    assert [s["name"] for s in summary["inputs"]] == [str(d / "a.parquet")], "apply's output was read as input"


def test_symlink_loop_reads_each_file_once(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    symlink_loop(d)
    res = _invoke(["exact", str(d), "-o", str(tmp_path / "o"), "-q", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert len(summary["inputs"]) == 1 and summary["counts"]["rows"] == len(ROWS)
