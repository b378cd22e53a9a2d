"""Big shards split into scan tasks of bounded size (dedupkit.scan.plan_tasks): Parquet by row group
and by row ranges of one big row group, JSON Lines by byte ranges at line starts; the manifest is
the unsplit run's, byte for byte."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dedupkit.io.read import ReadSpec
from dedupkit.io.shards import discover
from dedupkit.runner import RunOptions, run_stage
from dedupkit.scan import _cuts, _row_pieces, plan_tasks
from dedupkit.stages.exact import ExactMapper, ExactStage
from dedupkit.stages.fuzzy import FuzzyConfig, FuzzyStage

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma "
         "tau upsilon phi chi psi omega").split()


def _texts(n: int, seed: int = 3) -> list[str]:
    """Documents with exact copies, near copies and unique ones (some non-ASCII)."""
    rng = random.Random(seed)
    base = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60))) for _ in range(n // 3)]
    out = []
    for i in range(n):
        b = base[rng.randrange(len(base))]
        kind = rng.random()
        if kind < 0.3:
            out.append(b)
        elif kind < 0.6:
            w = b.split()
            w[rng.randrange(len(w))] = rng.choice(["Zürich", "naïve", "ÉTÉ", "x"])
            out.append(" ".join(w))
        else:
            out.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 50))) + f" u{i}")
    return out


def _manifest_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "manifest").glob("*.parquet"))}


def _plan(paths, **kw):
    shards = discover([str(p) for p in paths])
    kw.setdefault("workers", 1)
    return plan_tasks(shards, ReadSpec(), None, "/nonexistent", "k", **kw)


def test_parquet_row_groups_become_tasks(tmp_path):
    """16 row groups of a file 16 x split_bytes big: at least 16 tasks, rows in order, none twice."""
    path = tmp_path / "big.parquet"
    pq.write_table(pa.table({"text": _texts(1600)}), path, row_group_size=100)
    md = pq.ParquetFile(path).metadata
    assert md.num_row_groups == 16
    per_group = max(md.row_group(g).total_byte_size for g in range(16))
    tasks = _plan([path], split_bytes=per_group)
    assert len(tasks) >= 16
    ranges = [(t.piece.start, t.piece.stop) for t in tasks]
    assert ranges[0][0] == 0 and ranges[-1][1] == 1600
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    # tiny row groups merge (up to MERGE_BYTES), so a file of many small groups is not 1,000 tasks
    assert len(_plan([path])) == 1


def test_exact_does_not_cut_one_row_group_by_bytes(tmp_path):
    """Decoding outweighs exact's hashing, and each range decodes the group from its start: exact
    keeps one big row group whole (split_rows still cuts it), fuzzy cuts it for its workers."""
    path = tmp_path / "one.parquet"
    pq.write_table(pa.table({"text": _texts(1000)}), path, row_group_size=10_000)
    shards = discover([str(path)])
    exact = plan_tasks(shards, ReadSpec(), ExactStage().mapper(), "/nonexistent", "k", split_bytes=5_000, workers=2)
    fuzzy = plan_tasks(shards, ReadSpec(), FuzzyStage(FuzzyConfig()).mapper(), "/nonexistent", "k",
                       split_bytes=5_000, workers=2)
    assert len(exact) == 1 and len(fuzzy) > 5
    assert len(plan_tasks(shards, ReadSpec(), ExactStage().mapper(), "/nonexistent", "k", split_rows=300,
                          workers=2)) == 4


def test_one_big_row_group_splits_by_rows(tmp_path):
    path = tmp_path / "one.parquet"
    pq.write_table(pa.table({"text": _texts(1000)}), path, row_group_size=10_000)
    assert pq.ParquetFile(path).metadata.num_row_groups == 1
    tasks = _plan([path], split_bytes=5_000)
    assert len(tasks) > 5
    assert [t.part for t in tasks] == list(range(len(tasks)))
    assert sum(t.piece.stop - t.piece.start for t in tasks) == 1000
    # workers: the input is cut into at least as many tasks as workers (pieces >= MIN_PIECE_BYTES
    # only, so this small file stays whole)
    assert len(_plan([path], workers=2)) == 1


@pytest.mark.parametrize("k", [1, 2, 3, 7])
@pytest.mark.parametrize("r", [0.0, 0.15, 2.0])
def test_cuts_of_one_row_group_cost_alike(k, r):
    """A range ending at s with n of the rows costs r * s + n (it decodes the group from its start):
    the cuts make every range cost the same, longer ranges first."""
    cuts = _cuts(k, r)
    assert cuts[0] == 0.0 and cuts[-1] == 1.0 and len(cuts) == k + 1
    lens = [b - a for a, b in zip(cuts, cuts[1:])]
    assert all(x >= y - 1e-12 for x, y in zip(lens, lens[1:]))
    assert lens[0] <= 1.5 / k + 1e-9  # bounded: no range above 1.5x an equal share
    if k == 2 or r * k <= 0.5:  # within the bound: equal costs
        costs = [r * b + (b - a) for a, b in zip(cuts, cuts[1:])]
        assert max(costs) - min(costs) < 1e-9


def test_jsonl_pieces_start_at_lines_and_count_them(tmp_path):
    lines = [json.dumps({"text": t}) for t in _texts(300)]
    lines[7] = ""  # a blank line and a malformed one are rows too
    lines[150] = "{not json"
    path = tmp_path / "a.jsonl"
    path.write_text("\n".join(lines))  # no newline after the last line
    data = path.read_bytes()
    tasks = _plan([path], split_bytes=len(data) // 9)
    assert len(tasks) >= 9
    prev_row, prev_byte = 0, 0
    for t in tasks:
        p = t.piece
        assert (p.start, p.byte_start) == (prev_row, prev_byte)
        assert p.byte_start == 0 or data[p.byte_start - 1:p.byte_start] == b"\n"
        assert data[p.byte_start:p.byte_stop].count(b"\n") in (p.stop - p.start, p.stop - p.start - 1)
        assert p.start == data[:p.byte_start].count(b"\n")
        prev_row, prev_byte = p.stop, p.byte_stop
    assert (prev_row, prev_byte) == (300, len(data))


def _run(stage_factory, inp, out, **opts):
    spec = ReadSpec(batch_size=37, on_bad_record=opts.pop("on_bad_record", "fail"))
    return run_stage(stage_factory(), [str(inp)], out, spec, RunOptions(**opts))


@pytest.mark.parametrize("fmt", ["parquet-one-group", "parquet-one-group-pages", "parquet-groups", "jsonl"])
@pytest.mark.parametrize("stage", ["exact", "fuzzy"])
def test_split_manifest_is_byte_identical(tmp_path, fmt, stage):
    texts = _texts(900)
    if fmt == "jsonl":
        inp = tmp_path / "c.jsonl"
        lines = [json.dumps({"text": t}) for t in texts]
        lines[10] = "   "
        lines[500] = '{"text": 5}'
        inp.write_text("\n".join(lines) + "\n")
    else:
        inp = tmp_path / "c.parquet"
        texts[77] = texts[401] = None  # bad records
        pages = dict(write_batch_size=20, data_page_size=2_000) if fmt.endswith("pages") else {}
        pq.write_table(pa.table({"text": texts}), inp, row_group_size=10_000 if "one-group" in fmt else 64, **pages)
    factory = ExactStage if stage == "exact" else (lambda: FuzzyStage(FuzzyConfig()))
    whole = _run(factory, inp, tmp_path / "whole", on_bad_record="skip")
    # exact does not cut one row group by bytes (each range decodes the group from its start, and
    # decoding costs more than exact's hashing): split_rows cuts it, as it bounds every stage's tasks
    split = _run(factory, inp, tmp_path / "split", on_bad_record="skip", split_bytes=4_000, split_rows=150,
                 workers=2)
    assert split.summary["counts"] == whole.summary["counts"]
    assert whole.summary["timings"]["scan_tasks"] == 1 and split.summary["timings"]["scan_tasks"] > 4
    assert whole.summary["counts"]["rows"] == 900
    assert split.summary["counts"]["dropped"] > 0
    assert _manifest_bytes(split.out) == _manifest_bytes(whole.out)
    if fmt == "jsonl":
        assert [b["row"] for b in split.summary["bad_records"]] == [10, 500]
    else:
        assert [b["row"] for b in split.summary["bad_records"]] == [77, 401]


def test_split_jsonl_bad_record_names_its_line(tmp_path):
    lines = [json.dumps({"text": t}) for t in _texts(400)]
    lines[333] = "[1, 2]"
    inp = tmp_path / "c.jsonl"
    inp.write_text("\n".join(lines) + "\n")
    from dedupkit.errors import InputError

    with pytest.raises(InputError, match=r"c\.jsonl: line 334: expected a JSON object"):
        _run(ExactStage, inp, tmp_path / "o", split_bytes=2_000)


def test_rerun_with_other_pieces_rescans(tmp_path):
    """A run killed after some tasks, rerun with other pieces under the same task numbers, must
    not reuse a finished task of the old plan."""
    inp = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": _texts(600)}), inp, row_group_size=10_000)
    ref = _run(ExactStage, inp, tmp_path / "ref")
    out = tmp_path / "o"
    _run(ExactStage, inp, out, split_rows=100, keep_work=True)
    (out / "summary.json").unlink()  # as if killed before the end: the work files stay
    again = _run(ExactStage, inp, out, split_rows=250)
    assert again.summary["timings"]["reused_scan_tasks"] == 0
    assert _manifest_bytes(again.out) == _manifest_bytes(ref.out)


class _TextKeeper:
    """A mapper that asks the scan to keep a copy of the good rows' texts (fuzzy's char pass does)."""

    keep_text = True

    def map_batch(self, batch):
        return {}

    def empty(self):
        return {}


def test_kept_text_copy_is_complete_or_absent(tmp_path):
    """keep_text: the scan writes the texts' Arrow copy through one atomic write; a failed scan
    leaves neither it nor a temporary file."""
    from dedupkit.scan import _text_path, good_texts, run_scan_task

    path = tmp_path / "a.jsonl"
    texts = _texts(300)
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    work = tmp_path / "work"
    work.mkdir()
    shards = discover([str(path)])
    task = plan_tasks(shards, ReadSpec(batch_size=64), _TextKeeper(), str(work), "k", workers=1)[0]
    run_scan_task(task)
    assert _text_path(task).exists()
    assert [t for a in good_texts(task) for t in a.to_pylist()] == texts
    assert not [p.name for p in work.iterdir() if ".tmp" in p.name]

    class Boom(_TextKeeper):
        def map_batch(self, batch):
            if batch.rows[0] >= 128:
                raise RuntimeError("worker died")
            return {}

    work2 = tmp_path / "work2"
    work2.mkdir()
    task = plan_tasks(shards, ReadSpec(batch_size=64), Boom(), str(work2), "k", workers=1)[0]
    with pytest.raises(RuntimeError):
        run_scan_task(task)
    assert not _text_path(task).exists()
    assert not [p.name for p in work2.iterdir() if ".tmp" in p.name]


def test_a_small_input_makes_two_pieces_per_worker(tmp_path, monkeypatch):
    """An input smaller than SPLIT_BYTES per worker is cut into PIECES_PER_WORKER pieces per
    worker (the worker that finishes first takes the next piece, so neither idles while the other
    finishes a bigger one); one worker keeps SPLIT_BYTES pieces; the manifest is byte-identical."""
    from dedupkit import scan

    monkeypatch.setattr(scan, "MIN_PIECE_BYTES", 1)  # pieces of this small file
    inp = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": _texts(900)}), inp, row_group_size=10_000, compression="zstd",
                   write_batch_size=50, max_rows_per_page=100)
    assert len(_plan([inp], workers=1)) == 1
    assert len(_plan([inp], workers=2)) == 4
    factory = lambda: FuzzyStage(FuzzyConfig())  # noqa: E731
    whole = _run(factory, inp, tmp_path / "whole")
    split = _run(factory, inp, tmp_path / "split", workers=2)
    assert (whole.summary["timings"]["scan_tasks"], split.summary["timings"]["scan_tasks"]) == (1, 4)
    assert split.summary["counts"]["dropped"] > 0
    assert _manifest_bytes(split.out) == _manifest_bytes(whole.out)


@pytest.mark.parametrize("workers,expect", [(1, 3), (2, 4), (3, 3), (4, 4)])
def test_a_group_cut_at_page_starts_makes_a_multiple_of_the_workers(workers, expect):
    """A row group that reads by pages and needs 3 ranges of ``target`` bytes is cut into a multiple
    of the workers (c200k's exact scan at --workers 2 was 3 tasks: one worker ran two while the
    other idled), at page starts, covering every row once."""
    pieces = _row_pieces([(3000, 300)], 100, 10**6, 2.0, [list(range(0, 3000, 100))], 0, workers=workers)
    assert len(pieces) == expect
    assert pieces[0].start == 0 and pieces[-1].stop == 3000
    assert all(a.stop == b.start for a, b in zip(pieces, pieces[1:]))
    assert all(p.start % 100 == 0 for p in pieces)


class _BatchLengths(ExactMapper):
    """exact's mapper, also recording each row's batch length (a feature the scan saves)."""

    batch_rows = 64

    def map_batch(self, batch):
        import numpy as np

        return {**super().map_batch(batch), "batch_len": np.full(len(batch.rows), len(batch.rows), np.int64)}


def test_a_mapper_caps_the_rows_of_each_batch_it_reads(tmp_path):
    """A mapper's batch_rows caps the scan's read batches below --batch-size (a bigger one does not
    raise it), and exact's mapper sets one; hashes do not depend on it."""
    import numpy as np

    from dedupkit.scan import run_scan_task

    inp = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": _texts(500)}), inp)
    assert ExactStage().mapper().batch_rows is not None
    got = {}
    for name, spec, mapper in (("capped", ReadSpec(batch_size=1000), _BatchLengths(("lower", "whitespace"))),
                               ("small", ReadSpec(batch_size=50), _BatchLengths(("lower", "whitespace"))),
                               ("plain", ReadSpec(batch_size=1000), ExactStage().mapper())):
        work = tmp_path / name
        work.mkdir()
        [task] = plan_tasks(discover([str(inp)]), spec, mapper, str(work), "k", workers=1)
        run_scan_task(task)
        got[name] = {f.name.split(".")[1]: np.load(f) for f in work.glob("task-*.npy")}
    assert got["capped"]["batch_len"].max() == 64 and got["small"]["batch_len"].max() == 50
    assert np.array_equal(got["capped"]["hash"], got["plain"]["hash"])


def test_ids_are_checked_unique_by_their_hashes_first():
    """The driver's quick check (64-bit words of the ids' hashes, sorted) passes distinct ids and never
    passes a repeated one, across chunks (the exact count then names both places)."""
    from dedupkit import kernels
    from dedupkit.scan import _surely_unique

    if kernels.speedups is None:
        pytest.skip("the quick check needs the C kernels")
    ids = [f"id-{i}" for i in range(3000)]
    assert _surely_unique(pa.chunked_array([pa.array(ids[:1000]), pa.array([], pa.string()), pa.array(ids[1000:])]))
    for a, b in ((5, 2500), (0, 2999), (1500, 1501)):
        dup = list(ids)
        dup[b] = dup[a]
        assert not _surely_unique(pa.chunked_array([pa.array(dup[:1000]), pa.array(dup[1000:])]))
