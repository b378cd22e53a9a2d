"""The index stores (local folder and a real Redis server) and the check stage against them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings, strategies as st

from tests.support import free_port, make_texts, near_copy, read_manifest, write_jsonl, write_rows
from tests.support.invariants import check_output
from dedupkit import api
from dedupkit.errors import CheckFailed, ConfigError
from dedupkit.index import IndexSettings, IndexStoreError, Segment, create_index, open_index

import pyarrow as pa


@pytest.fixture
def redis_url(redis_server, request):
    import redis

    redis.Redis(port=redis_server).flushdb()
    return f"redis://127.0.0.1:{redis_server}/0?prefix=t{abs(hash(request.node.name)) % 10**8}"


@pytest.fixture(params=["local", pytest.param("redis", marks=pytest.mark.redis)])
def location(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "corpus.idx")
    return request.getfixturevalue("redis_url")


# -- the must-show test: planted copies are found with the right matched doc_id --------------------

@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_planted_exact_and_near_copies_are_found(tmp_path, location, fmt):
    pytest.importorskip("dedupkit.minhash")
    base = make_texts(120, seed=1)
    write_rows(tmp_path / "held" / "a", [{"id": f"a{i}", "text": t} for i, t in enumerate(base[:60])], fmt)
    write_rows(tmp_path / "held" / "b", [{"id": f"b{i}", "text": t} for i, t in enumerate(base[60:])], fmt)
    res = api.index_create(location, [str(tmp_path / "held")], stages="exact,fuzzy", id_column="id")
    assert res.added == 120 and res.documents == 120

    new = make_texts(30, seed=2)
    planted: dict[str, tuple[str, str, str]] = {}  # drop id -> (indexed doc_id, shard suffix, kind)
    rows = []
    for j, i in enumerate([3, 17, 59, 60, 88, 119]):  # exact copies, some re-spaced
        text = base[i] if j % 2 else "  " + base[i].replace(" ", "   ", 5) + "\n"
        rows.append({"id": f"x{j}", "text": text})
        planted[f"x{j}"] = (f"a{i}" if i < 60 else f"b{i - 60}", "a" if i < 60 else "b", "index-exact")
    for j, i in enumerate([0, 25, 61, 100, 110]):  # near copies (one word changed)
        rows.append({"id": f"n{j}", "text": near_copy(base[i], j)})
        planted[f"n{j}"] = (f"a{i}" if i < 60 else f"b{i - 60}", "a" if i < 60 else "b", "index-fuzzy")
    rows += [{"id": f"new{j}", "text": t} for j, t in enumerate(new)]
    order = np.random.default_rng(3).permutation(len(rows))
    write_rows(tmp_path / "drop" / "d", [rows[k] for k in order], fmt)

    out = tmp_path / "out"
    chk = api.check([str(tmp_path / "drop")], str(out), location, id_column="id", max_dup_rate=0.5)
    m = {r["doc_id"]: r for r in check_output(out, len(rows), pointers="external")}
    for doc, (want, shard, kind) in planted.items():
        r = m[doc]
        assert not r["keep"], doc
        assert r["matched_doc_id"] == want and r["duplicate_of"] == want, (doc, r)
        assert Path(r["matched_shard"]).name.startswith(shard)
        assert r["match"] == kind, (doc, r["match"])
        assert 0 < r["score"] <= 1
    for j in range(len(new)):
        r = m[f"new{j}"]
        assert r["keep"] and r["matched_doc_id"] is None and r["duplicate_of"] is None
    assert chk.summary["stats"]["index_exact"] == 6 and chk.summary["stats"]["index_fuzzy"] == 5
    assert chk.passed and chk.dup_rate == pytest.approx(11 / 41)


def test_duplicates_within_the_drop_and_update(tmp_path, location):
    base = make_texts(20, seed=4)
    write_jsonl(tmp_path / "held.jsonl", [{"id": f"h{i}", "text": t} for i, t in enumerate(base)])
    api.index_create(location, [str(tmp_path / "held.jsonl")], id_column="id")
    new = make_texts(5, seed=5)
    rows = [{"id": "c0", "text": base[2]}, {"id": "u0", "text": new[0]}, {"id": "u1", "text": new[1]},
            {"id": "u0copy", "text": new[0] + "  "}, {"id": "u2", "text": new[2]}]
    write_jsonl(tmp_path / "drop.jsonl", rows)
    res = api.check([str(tmp_path / "drop.jsonl")], str(tmp_path / "out"), location, id_column="id",
                    update=True, max_dup_rate=0.5)
    m = {r["doc_id"]: r for r in read_manifest(tmp_path / "out")}
    assert [m[k]["keep"] for k in ("c0", "u0", "u1", "u0copy", "u2")] == [False, True, True, False, True]
    assert m["u0copy"]["duplicate_of"] == "u0" and m["u0copy"]["match"] == "drop-exact"
    assert m["u0copy"]["matched_doc_id"] is None
    assert m["u0"]["cluster_id"] == m["u0copy"]["cluster_id"]
    assert m["c0"]["duplicate_of"] == "h2"
    assert res.added == 3
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["check"]["added_to_index"] == 3 and summary["check"]["passed"]
    with open_index(location) as idx:
        assert idx.count == 23
        hit = idx.lookup_exact(np.array([[0, 0]], np.uint64))
        assert hit.tolist() == [-1]
    # The updated index now knows u1: a second drop holding it is matched to it.
    write_jsonl(tmp_path / "drop2.jsonl", [{"id": "again", "text": new[1]}])
    api.check([str(tmp_path / "drop2.jsonl")], str(tmp_path / "out2"), location, id_column="id")
    r = read_manifest(tmp_path / "out2")[0]
    assert not r["keep"] and r["matched_doc_id"] == "u1" and r["matched_shard"].endswith("drop.jsonl")


def test_failed_check_exits_3_and_does_not_update(tmp_path, location):
    base = make_texts(10, seed=6)
    write_jsonl(tmp_path / "held.jsonl", [{"id": f"h{i}", "text": t} for i, t in enumerate(base)])
    api.index_create(location, [str(tmp_path / "held.jsonl")], id_column="id")
    write_jsonl(tmp_path / "drop.jsonl", [{"id": f"d{i}", "text": t} for i, t in enumerate(base[:3] + make_texts(2, 7))])
    with pytest.raises(CheckFailed) as exc:
        api.check([str(tmp_path / "drop.jsonl")], str(tmp_path / "out"), location, id_column="id",
                  max_dup_rate=0.5, update=True)
    assert exc.value.exit_code == 3
    assert "60.00%" in str(exc.value) and "not updated" in str(exc.value)
    assert len(read_manifest(tmp_path / "out")) == 5  # the manifest is written for inspection
    with open_index(location) as idx:
        assert idx.count == 10


def test_other_settings_are_refused(tmp_path, location):
    write_jsonl(tmp_path / "held.jsonl", [{"id": "h0", "text": "some text here"}])
    api.index_create(location, [str(tmp_path / "held.jsonl")], id_column="id", normalize="whitespace")
    write_jsonl(tmp_path / "drop.jsonl", [{"id": "d0", "text": "Some text here"}])
    with pytest.raises(ConfigError, match="normalize: index has whitespace, asked for lower,whitespace"):
        api.check([str(tmp_path / "drop.jsonl")], str(tmp_path / "out"), location, normalize="lower,whitespace")
    with pytest.raises(ConfigError, match="stages: index has exact, asked for exact,fuzzy"):
        api.check([str(tmp_path / "drop.jsonl")], str(tmp_path / "out"), location, stages="exact,fuzzy")
    assert not (tmp_path / "out" / "summary.json").exists()


def test_create_refuses_existing_index_without_overwrite(tmp_path, location):
    create_index(location, IndexSettings()).close()
    with pytest.raises(IndexStoreError, match="already holds an index"):
        create_index(location, IndexSettings())
    create_index(location, IndexSettings(normalize="nfkc"), overwrite=True).close()
    with open_index(location) as idx:
        assert idx.settings.normalize == ("nfkc",) and idx.count == 0


def _seg(ids: list[str], h: np.ndarray) -> Segment:
    return Segment(doc_ids=pa.array(ids), shard_names=["s.jsonl"], shard_index=np.zeros(len(ids), np.int32),
                   exact=h)


def test_snapshot_is_stable_while_another_writer_appends(location):
    rng = np.random.default_rng(0)
    h1, h2 = rng.integers(0, 2**63, (50, 2)).astype(np.uint64), rng.integers(0, 2**63, (30, 2)).astype(np.uint64)
    create_index(location, IndexSettings()).close()
    with open_index(location) as w:
        w.append(_seg([f"a{i}" for i in range(50)], h1))
    reader = open_index(location)
    with open_index(location) as w2:
        assert w2.append(_seg([f"b{i}" for i in range(30)], h2)) == 50
    # The reader's snapshot does not see the second append, not even half of it.
    assert reader.count == 50
    assert (reader.lookup_exact(h2) == -1).all()
    assert reader.lookup_exact(h1).tolist() == list(range(50))
    reader.close()
    with open_index(location) as fresh:
        assert fresh.count == 80
        got = fresh.lookup_exact(np.vstack([h2[:3], h1[:1]]))
        assert got.tolist() == [50, 51, 52, 0]
        assert fresh.resolve(got)[0] == ["b0", "b1", "b2", "a0"]


def test_lowest_doc_number_wins_for_repeated_hashes(location):
    h = np.array([[5, 6], [5, 7], [5, 6], [1, 2]], np.uint64)
    with create_index(location, IndexSettings()) as idx:
        idx.append(_seg(["p", "q", "r", "s"], h))
        idx.append(_seg(["t"], h[:1]))
    with open_index(location) as idx:
        assert idx.lookup_exact(np.array([[5, 6], [5, 7], [1, 2], [5, 8], [4, 6]], np.uint64)).tolist() == \
            [0, 1, 3, -1, -1]


# -- integrity -----------------------------------------------------------------------------------

def _local_index(tmp_path) -> Path:
    write_jsonl(tmp_path / "held.jsonl", [{"id": f"h{i}", "text": t} for i, t in enumerate(make_texts(30, 8))])
    loc = tmp_path / "corpus.idx"
    api.index_create(str(loc), [str(tmp_path / "held.jsonl")], id_column="id")
    return loc


def test_missing_index_is_an_error(tmp_path):
    write_jsonl(tmp_path / "drop.jsonl", [{"text": "x"}])
    with pytest.raises(IndexStoreError, match="no such index"):
        api.check([str(tmp_path / "drop.jsonl")], str(tmp_path / "out"), str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexStoreError, match="not a dedupkit index"):
        api.index_info(str(tmp_path / "empty"))


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "json"])
def test_damaged_local_index_is_an_error(tmp_path, damage):
    loc = _local_index(tmp_path)
    seg = next((loc / "segments").iterdir())
    target = seg / "exact_hi.npy"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:-16])
        msg = "truncated"
    elif damage == "flip":
        data = bytearray(target.read_bytes())
        data[-1] ^= 0xFF
        target.write_bytes(bytes(data))
        msg = "checksum mismatch"
    elif damage == "delete":
        (seg / "docs.parquet").unlink()
        msg = "missing index file"
    else:
        (loc / "index.json").write_text((loc / "index.json").read_text()[:40])
        msg = "not valid JSON"
    write_jsonl(tmp_path / "drop.jsonl", [{"text": "x"}])
    with pytest.raises(IndexStoreError, match=msg):
        api.check([str(tmp_path / "drop.jsonl")], str(tmp_path / "out"), str(loc))
    with pytest.raises(IndexStoreError, match="rebuild it"):
        api.index_info(str(loc))
    assert not (tmp_path / "out" / "summary.json").exists()


def test_crashed_append_leaves_nothing_visible(tmp_path):
    loc = _local_index(tmp_path)
    junk = loc / "segments" / ".tmp-seg-000002-999"
    junk.mkdir()
    (junk / "exact_hi.npy").write_bytes(b"half")
    with open_index(str(loc)) as idx:
        assert idx.count == 30
        idx.append(_seg(["z"], np.array([[1, 1]], np.uint64)))
    assert not junk.exists()
    with open_index(str(loc)) as idx:
        assert idx.count == 31 and len(idx.segments) == 2


@pytest.mark.redis
def test_redis_that_lost_data_is_an_error(tmp_path, redis_url):
    import redis

    write_jsonl(tmp_path / "held.jsonl", [{"id": f"h{i}", "text": t} for i, t in enumerate(make_texts(30, 9))])
    api.index_create(redis_url, [str(tmp_path / "held.jsonl")], id_column="id")
    r = redis.Redis.from_url(redis_url.split("?")[0])
    prefix = redis_url.split("prefix=")[1]
    for k in r.scan_iter(match=f"{prefix}:d:*"):
        r.delete(k)
    with pytest.raises(IndexStoreError, match="Redis lost data"):
        open_index(redis_url)
    r.delete(f"{prefix}:meta")
    with pytest.raises(IndexStoreError, match="partly deleted"):
        open_index(redis_url)
    r.flushdb()
    with pytest.raises(IndexStoreError, match="no index with prefix"):
        open_index(redis_url)


def test_unreachable_redis_is_an_error():
    port = free_port()
    with pytest.raises(IndexStoreError, match="cannot connect to Redis"):
        open_index(f"redis://127.0.0.1:{port}/0")


# -- the bits ------------------------------------------------------------------------------------

def test_index_add_uses_the_index_settings_and_skips_bad_records(tmp_path):
    loc = str(tmp_path / "i")
    write_jsonl(tmp_path / "a.jsonl", [{"text": "Hello   World"}])
    api.index_create(loc, [str(tmp_path / "a.jsonl")], normalize="lower,whitespace")
    (tmp_path / "b.jsonl").write_text('{"text": "x y"}\nnot json\n{"text": "HELLO WORLD"}\n')
    with pytest.raises(Exception, match="line 2"):
        api.index_add(loc, [str(tmp_path / "b.jsonl")])
    res = api.index_add(loc, [str(tmp_path / "b.jsonl")], on_bad_record="skip")
    assert res.added == 2 and res.bad_records == 1 and res.documents == 3
    with open_index(loc) as idx:
        docs = pq.read_table(idx.segments[1].dir / "docs.parquet").to_pylist()
    assert [d["doc_id"] for d in docs] == [f"{tmp_path / 'b.jsonl'}:0", f"{tmp_path / 'b.jsonl'}:2"]
    write_jsonl(tmp_path / "drop.jsonl", [{"text": "hello world"}])
    api.check([str(tmp_path / "drop.jsonl")], str(tmp_path / "out"), loc)
    r = read_manifest(tmp_path / "out")[0]
    assert r["matched_doc_id"] == f"{tmp_path / 'a.jsonl'}:0"  # the first-indexed copy


def test_failed_create_leaves_no_index(tmp_path, location):
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"text": 5}\n')
    with pytest.raises(Exception, match="line 2"):
        api.index_create(location, [str(tmp_path / "bad.jsonl")])
    with pytest.raises(IndexStoreError, match="no such index|no index with prefix"):
        open_index(location)
    res = api.index_create(location, [str(tmp_path / "bad.jsonl")], on_bad_record="skip")
    assert res.added == 1 and res.bad_records == 1


def test_default_normalization_is_the_exact_stage_default(tmp_path):
    from dedupkit.normalize import DEFAULT

    write_jsonl(tmp_path / "a.jsonl", [{"text": "x"}])
    api.index_create(str(tmp_path / "i"), [str(tmp_path / "a.jsonl")])
    with open_index(str(tmp_path / "i")) as idx:
        assert idx.settings.normalize == DEFAULT


def test_fuzzy_only_index(tmp_path):
    base = make_texts(20, seed=11)
    write_jsonl(tmp_path / "held.jsonl", [{"id": f"h{i}", "text": t} for i, t in enumerate(base)])
    loc = str(tmp_path / "i")
    api.index_create(loc, [str(tmp_path / "held.jsonl")], stages="fuzzy", id_column="id")
    with open_index(loc) as idx:
        assert idx.settings.stages == ("fuzzy",) and idx.settings.bands * idx.settings.rows <= 128
        with pytest.raises(ConfigError, match="no exact hashes"):
            idx.lookup_exact(np.zeros((1, 2), np.uint64))
    rows = [{"id": "same", "text": base[4]}, {"id": "near", "text": near_copy(base[7], 0)},
            {"id": "new", "text": make_texts(1, 12)[0]}, {"id": "near2", "text": near_copy(near_copy(base[7], 0), 1)}]
    write_jsonl(tmp_path / "drop.jsonl", rows)
    api.check([str(tmp_path / "drop.jsonl")], str(tmp_path / "out"), loc, id_column="id")
    m = {r["doc_id"]: r for r in read_manifest(tmp_path / "out")}
    assert m["same"]["matched_doc_id"] == "h4" and m["same"]["score"] == 1.0 and m["same"]["match"] == "index-fuzzy"
    assert m["near"]["matched_doc_id"] == "h7" and 0.8 <= m["near"]["score"] < 1.0
    assert m["near2"]["matched_doc_id"] == "h7"
    assert m["new"]["keep"]
    with open_index(loc) as idx:
        have = idx.settings.minhash["threshold"]
    other = 0.9 if have != 0.9 else 0.7
    with pytest.raises(ConfigError, match=f"threshold: index has {have}, asked for {other}"):
        api.check([str(tmp_path / "drop.jsonl")], str(tmp_path / "out2"), loc, threshold=other)
