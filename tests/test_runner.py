"""Invariants of every manifest, checked on generated corpora (hypothesis)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import make_rows, read_manifest, write_jsonl, write_parquet
from tests.support.invariants import check_manifest
from dedupkit.io.read import ReadSpec
from dedupkit.policy import KeepPolicy
from dedupkit.runner import RunOptions, run_stage
from dedupkit.stages.exact import ExactConfig, ExactStage

texts = st.lists(st.sampled_from(["a", "b", "a ", " b", "c\n", "d d", "D d", "é", ""]), min_size=1, max_size=40)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shards=st.lists(texts, min_size=1, max_size=3), batch=st.integers(1, 7),
       keep=st.sampled_from(["first", "last", "longest", "shortest"]), split=st.integers(3, 50))
def test_exact_manifest_invariants_and_batch_independence(shards, batch, keep, split):
    tmp = Path(tempfile.mkdtemp())
    try:
        n = 0
        for i, s in enumerate(shards):
            rows = make_rows(s, prefix=f"s{i}-")
            n += len(rows)
            if i % 2:
                write_jsonl(tmp / "in" / f"{i}.jsonl", rows)
            else:
                write_parquet(tmp / "in" / f"{i}.parquet", rows, row_group_size=3)
        stage = ExactStage(ExactConfig(policy=KeepPolicy(keep=keep)))
        a = run_stage(stage, [str(tmp / "in")], tmp / "a", ReadSpec(id_column="id", batch_size=batch))
        b = run_stage(stage, [str(tmp / "in")], tmp / "b", ReadSpec(id_column="id", batch_size=1000),
                      RunOptions(split_rows=split))
        ra, rb = read_manifest(a.out), read_manifest(b.out)
        check_manifest(ra, n)
        assert ra == rb
        # the number kept equals the number of distinct whitespace-normalized texts
        distinct = {" ".join(t.lower().split()) for s in shards for t in s}
        assert sum(r["keep"] for r in ra) == len(distinct)
    finally:
        shutil.rmtree(tmp)


def test_manifest_identical_for_one_and_two_workers(tmp_path):
    for i in range(4):
        write_parquet(tmp_path / "in" / f"{i}.parquet",
                      make_rows([f"text {j % 11}" for j in range(60)], prefix=f"s{i}-"))
    spec = ReadSpec(id_column="id")
    a = run_stage(ExactStage(), [str(tmp_path / "in")], tmp_path / "a", spec, RunOptions(workers=1))
    b = run_stage(ExactStage(), [str(tmp_path / "in")], tmp_path / "b", spec, RunOptions(workers=2))
    ra = read_manifest(a.out)
    assert ra == read_manifest(b.out)
    check_manifest(ra, 240)
    files_a = sorted((a.out / "manifest").iterdir())
    files_b = sorted((b.out / "manifest").iterdir())
    assert [f.read_bytes() for f in files_a] == [f.read_bytes() for f in files_b]
