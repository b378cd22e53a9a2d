"""The manifest contract of STYLE.md as one checker that every stage's tests call.

A manifest (as :func:`tests.support.read_manifest` returns it, a list of row dicts) must hold:

- one row per input row: ``(shard, row)`` pairs and ``doc_id``s unique (and ``n_input`` rows);
- a kept row names no ``duplicate_of``; a row without a ``cluster_id`` names none either;
- a row dropped as a duplicate points, through ``duplicate_of``, to a KEPT row of its own non-null
  cluster (only a dropped row with nothing to point at, a bad record or a document a stage drops
  for itself, e.g. substring's ``--min-length``, may name none: ``pointers="optional"``; `check`
  and `decontaminate` point at indexed documents or eval items outside the manifest:
  ``pointers="external"``);
- ``score``, when set, lies in [0, 1] (cosine up to float rounding);
- with a ``reason`` column: a row says why exactly when it is dropped.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

CONTRACT = {
    "shard": pa.string(), "row": pa.int64(), "doc_id": pa.string(), "keep": pa.bool_(),
    "cluster_id": pa.int64(), "duplicate_of": pa.string(), "score": pa.float32(), "stage": pa.string(),
}


def _bad_record(r: dict) -> bool:
    return str(r.get("reason") or "").startswith("bad record")


def check_manifest(rows: list[dict], n_input: int | None = None, *, stage: str | None = None,
                   pointers: str = "required") -> dict[str, dict]:
    """Assert the manifest invariants on ``rows``; returns the rows by ``doc_id``.

    Args:
        rows: the manifest's rows.
        n_input: the number of input rows, when the caller knows it.
        stage: check ``duplicate_of`` only on rows this stage decided (rows a ``--skip``ped earlier
            stage dropped point into that stage's manifest); None: every row.
        pointers: ``required`` (every dropped row but a bad record names a kept representative),
            ``optional`` (a dropped row may name none; one that names one is still checked) or
            ``external`` (as optional, and the named row may be outside this manifest).
    """
    assert pointers in ("required", "optional", "external")
    if n_input is not None:
        assert len(rows) == n_input, f"{len(rows)} manifest rows for {n_input} input rows"
    assert len({(r["shard"], r["row"]) for r in rows}) == len(rows), "a (shard, row) appears twice"
    by_id = {r["doc_id"]: r for r in rows}
    assert len(by_id) == len(rows), "a doc_id appears twice"
    for r in rows:
        if "reason" in r:
            assert (r["reason"] is None) == r["keep"], f"every dropped row, and only those, says why: {r}"
        if r["score"] is not None:
            assert 0.0 <= r["score"] <= 1.0 + 1e-5, r
        if r["keep"] or r["cluster_id"] is None:
            assert r["duplicate_of"] is None, f"a kept or unclustered row names a representative: {r}"
        if r["keep"] or (stage is not None and r["stage"] != stage):
            continue
        if r["duplicate_of"] is None:
            assert pointers != "required" or _bad_record(r), f"a dropped row names no representative: {r}"
            continue
        rep = by_id.get(r["duplicate_of"])
        if rep is None and pointers == "external":
            continue
        assert rep is not None, f"duplicate_of names no row of this manifest: {r}"
        assert rep["keep"], f"duplicate_of must point to a kept row: {r} -> {rep}"
        assert rep["cluster_id"] == r["cluster_id"] is not None, f"representative of another cluster: {r} -> {rep}"
    return by_id


def check_output(out: str | Path, n_input: int | None = None, **kw) -> list[dict]:
    """Read ``out/manifest`` (checking the eight contract columns' types), assert
    :func:`check_manifest` on it; returns the rows sorted by ``(shard, row)``."""
    table = ds.dataset(str(Path(out) / "manifest"), format="parquet").to_table()
    for name, typ in CONTRACT.items():
        assert name in table.column_names, f"manifest of {out} lacks column {name!r}"
        assert table.schema.field(name).type == typ, f"{out}: column {name} is {table.schema.field(name).type}"
    rows = table.sort_by([("shard", "ascending"), ("row", "ascending")]).to_pylist()
    check_manifest(rows, n_input, **kw)
    return rows
