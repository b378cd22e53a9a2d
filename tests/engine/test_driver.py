"""dedupkit.engine.driver: fuzzy on Ray with a driver that touches no rows, on a real local Ray.

The manifest must be byte-identical to the local engine's (ids or not, bad records, several
partitions in every shuffle); the driver process must never build the per-document corpus; the
bucket step's bytes read per task must fall as the key partitions grow.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from tests.support import SRC, write_jsonl, write_parquet
from dedupkit import api

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.slow]

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho "
         "sigma tau upsilon phi chi psi omega river stone cloud forest harbor lantern meadow orbit").split()


@pytest.fixture(scope="module")
def ray_session():
    from dedupkit.engine.ray import init_local

    if ray.is_initialized():  # pragma: no cover - another module left one running
        ray.shutdown()
    init_local(2, runtime_env={"env_vars": {"PYTHONPATH": SRC}})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Five shards, exact and near copies within and across shards, and two bad records."""
    rng = random.Random(11)
    d = tmp_path_factory.mktemp("driver") / "data"
    originals = [" ".join(rng.choice(WORDS) for _ in range(50)) for _ in range(50)]
    texts = list(originals)
    for _ in range(30):  # exact copies after normalization, some with extra spaces (longer)
        texts.append(rng.choice(originals).replace(" ", "  ", rng.choice([0, 0, 1, 3])))
    for _ in range(30):
        w = rng.choice(originals).split()
        for _ in range(2):
            w[rng.randrange(len(w))] = rng.choice(WORDS)
        texts.append(" ".join(w))
    rng.shuffle(texts)
    for s in range(5):
        # "votes": a --keep-by column with ties and nulls (a shard without nulls, one all null but 2)
        rows = [{"id": f"s{s}-{i}", "text": t, "votes": None if (s == 1 and i > 1) or rng.random() < 0.2
                 else rng.randrange(5)} for i, t in enumerate(texts[s * 22:(s + 1) * 22])]
        if s == 3:
            rows.insert(4, {"id": "bad-1", "text": None, "votes": 3})
            rows.append({"id": "bad-2"})
        (write_parquet if s % 2 == 0 else write_jsonl)(d / f"p{s}.{'parquet' if s % 2 == 0 else 'jsonl'}", rows)
    return d


def _forbid_corpus(monkeypatch) -> None:
    """From here on, building the per-document corpus fails: the driver process must never need
    it (the classic path fails with this in place)."""
    from dedupkit import runner, scan

    class NoRows(scan.Corpus):
        def __init__(self, *a, **k):
            raise AssertionError("the driver built the per-document corpus")

    monkeypatch.setattr(scan, "Corpus", NoRows)
    monkeypatch.setattr(runner, "Corpus", NoRows)


def _same_parts(a: Path, b: Path) -> None:
    names = sorted(p.name for p in (a / "manifest").glob("*.parquet"))
    assert names and names == sorted(p.name for p in (b / "manifest").glob("*.parquet"))
    for n in names:
        assert (a / "manifest" / n).read_bytes() == (b / "manifest" / n).read_bytes(), n


@pytest.mark.parametrize("id_column", [None, "id"])
def test_rowless_manifest_is_byte_identical(ray_session, corpus, tmp_path, monkeypatch, id_column):
    from dedupkit.engine import graph
    from dedupkit.stages.fuzzy import partitioned as fuzzy_partitioned
    from dedupkit.stages.fuzzy import stage as fz

    # several partitions in every step: band keys, pairs, components, centres
    monkeypatch.setattr(fz, "DOCS_PER_PARTITION", 40)
    monkeypatch.setattr(fuzzy_partitioned, "PAIRS_PER_PARTITION", 8)
    monkeypatch.setattr(graph, "EDGES_PER_PARTITION", 16)
    kw = dict(id_column=id_column, on_bad_record="skip")
    local = api.fuzzy([str(corpus)], str(tmp_path / "local"), workers=1, **kw)
    _forbid_corpus(monkeypatch)
    with pytest.raises(AssertionError, match="per-document corpus"):  # --skip: the classic path
        api.fuzzy([str(corpus)], str(tmp_path / "classic"), workers=2, engine="ray", skip=[str(local.out)], **kw)
    on_ray = api.fuzzy([str(corpus)], str(tmp_path / "ray"), workers=2, engine="ray", **kw)
    g = on_ray.summary["stats"]["global_step"]
    assert g["mode"] == "rowless" and g["pair_partitions"] > 1 and g["component_partitions"] > 1
    _same_parts(local.out, on_ray.out)
    assert local.summary["counts"] == on_ray.summary["counts"]
    assert on_ray.summary["counts"]["bad_records"] == 2 and on_ray.summary["counts"]["duplicates"] >= 40
    for k in ("candidate_pairs", "verified_pairs", "decided_by"):
        assert local.summary["stats"][k] == on_ray.summary["stats"][k], k


def test_duplicate_ids_are_refused_by_tasks(ray_session, tmp_path):
    from dedupkit.errors import InputError

    write_jsonl(tmp_path / "d" / "a.jsonl", [{"id": "x", "text": "one two three four five six"},
                                             {"id": "y", "text": "seven eight nine ten eleven"}])
    write_jsonl(tmp_path / "d" / "b.jsonl", [{"id": "z", "text": "more words here and there"},
                                             {"id": "x", "text": "another text entirely new"}])
    with pytest.raises(InputError, match=r"'x'.*a.jsonl row 0 and .*b.jsonl row 1"):
        api.fuzzy([str(tmp_path / "d")], str(tmp_path / "o"), id_column="id", engine="ray", workers=2)


def test_bucket_bytes_read_per_task_fall_with_partitions(corpus, tmp_path, monkeypatch):
    from dedupkit.stages.fuzzy import stage as fz

    seen = {}
    for per in (10_000, 60, 20):
        monkeypatch.setattr(fz, "DOCS_PER_PARTITION", per)
        res = api.fuzzy([str(corpus)], str(tmp_path / f"o{per}"), on_bad_record="skip")
        b = res.summary["stats"]["bucket_bytes_read_per_task"]
        seen[res.summary["stats"]["partitions_per_band"]] = b
        assert b["tasks"] == res.summary["stats"]["partitions_per_band"] * 25  # 25 bands by default
    parts = sorted(seen)
    assert parts[0] == 1 and len(parts) == 3
    means = [seen[p]["mean"] for p in parts]
    assert means[0] > means[1] > means[2] > 0
    # one band's keys of every document, 16 bytes each (key + index), split among the partitions
    assert seen[1]["max"] == 16 * 110  # 110 good documents


@pytest.mark.parametrize("id_column", [None, "id"])
def test_rowless_exact_manifest_is_byte_identical(ray_session, corpus, tmp_path, monkeypatch, id_column):
    from dedupkit.engine import driver

    monkeypatch.setattr(driver, "HASHES_PER_PARTITION", 30)  # several hash partitions
    kw = dict(id_column=id_column, on_bad_record="skip")
    local = api.exact([str(corpus)], str(tmp_path / "local"), workers=1, **kw)
    _forbid_corpus(monkeypatch)
    with pytest.raises(AssertionError, match="per-document corpus"):  # --skip: the classic path
        api.exact([str(corpus)], str(tmp_path / "classic"), workers=2, engine="ray", skip=[str(local.out)], **kw)
    on_ray = api.exact([str(corpus)], str(tmp_path / "ray"), workers=2, engine="ray", **kw)
    g = on_ray.summary["stats"]["global_step"]
    assert g["mode"] == "rowless" and g["hash_partitions"] > 1
    _same_parts(local.out, on_ray.out)
    assert local.summary["counts"] == on_ray.summary["counts"]
    assert on_ray.summary["counts"]["bad_records"] == 2 and on_ray.summary["counts"]["duplicates"] >= 25


def test_rowless_exact_with_empty_and_all_bad_shards(ray_session, tmp_path):
    d = tmp_path / "d"
    write_jsonl(d / "a.jsonl", [{"id": f"a{i}", "text": f"text {i % 3}"} for i in range(7)])
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())}), d / "b.parquet")
    write_jsonl(d / "c.jsonl", [{"id": "c0", "text": None}, {"id": "c1", "text": None}])
    write_parquet(d / "e.parquet", [{"id": f"e{i}", "text": f"text {i % 4}"} for i in range(5)])
    kw = dict(id_column="id", on_bad_record="skip")
    local = api.exact([str(d)], str(tmp_path / "local"), **kw)
    on_ray = api.exact([str(d)], str(tmp_path / "ray"), workers=2, engine="ray", **kw)
    assert on_ray.summary["stats"]["global_step"]["mode"] == "rowless"
    _same_parts(local.out, on_ray.out)
    assert local.summary["counts"] == on_ray.summary["counts"]
    assert local.summary["counts"]["bad_records"] == 2 and local.summary["counts"]["duplicates"] == 8


POLICIES = [dict(keep="last"), dict(keep="longest"), dict(keep="shortest"),
            dict(keep_by="votes"), dict(keep_by="votes", keep_order="desc", keep="longest")]


@pytest.fixture(scope="module")
def policy_corpus(corpus, tmp_path_factory) -> Path:
    """The corpus plus a shard of 24 copies of one text (longer and shorter, with and without
    votes): its band buckets exceed ALL_PAIRS_MAX, so they give a star from the member the policy
    ranks first, not all pairs."""
    import shutil

    d = tmp_path_factory.mktemp("policies") / "data"
    shutil.copytree(corpus, d)
    rng = random.Random(5)
    text = " ".join(rng.choice(WORDS) for _ in range(40))
    write_jsonl(d / "p5.jsonl", [{"id": f"s5-{i}", "text": text.replace(" ", "  ", i % 7) + " x" * (i % 2),
                                  "votes": None if i % 3 == 0 else (i * 7) % 5} for i in range(24)])
    return d


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: "-".join(map(str, p.values())))
@pytest.mark.parametrize("stage", ["exact", "fuzzy"])
def test_rowless_keep_policies_are_byte_identical(ray_session, policy_corpus, tmp_path, monkeypatch, stage, policy):
    """Every keep policy runs rowless (ranks of the documents each task compares, no global sort),
    and its manifest is the local engine's, byte for byte."""
    from dedupkit.engine import driver, graph
    from dedupkit.stages.fuzzy import partitioned as fuzzy_partitioned
    from dedupkit.stages.fuzzy import stage as fz

    monkeypatch.setattr(driver, "HASHES_PER_PARTITION", 30)
    monkeypatch.setattr(fz, "DOCS_PER_PARTITION", 40)
    monkeypatch.setattr(fuzzy_partitioned, "PAIRS_PER_PARTITION", 8)
    monkeypatch.setattr(graph, "EDGES_PER_PARTITION", 16)
    run = getattr(api, stage)
    kw = dict(id_column="id", on_bad_record="skip", **policy)
    if stage == "fuzzy":
        kw["threshold"] = 0.5  # bigger clusters: the centre the policy picks matters more
    corpus = str(policy_corpus)
    local = run([corpus], str(tmp_path / "local"), workers=1, **kw)
    first = run([corpus], str(tmp_path / "first"), workers=1, id_column="id", on_bad_record="skip",
                **({"threshold": 0.5} if stage == "fuzzy" else {}))
    _forbid_corpus(monkeypatch)
    on_ray = run([corpus], str(tmp_path / "ray"), workers=2, engine="ray", **kw)
    assert on_ray.summary["stats"]["global_step"]["mode"] == "rowless"
    _same_parts(local.out, on_ray.out)
    assert local.summary["counts"] == on_ray.summary["counts"]
    # the policy decided something: another copy is kept than with keep first
    import pyarrow.dataset as ds

    kept = [set(ds.dataset(r.out / "manifest").to_table(filter=ds.field("keep")).column("doc_id").to_pylist())
            for r in (local, first)]
    assert kept[0] != kept[1]


def test_rowless_keep_by_refuses_what_the_classic_path_refuses(ray_session, tmp_path, monkeypatch):
    from dedupkit.errors import ConfigError, InputError

    d = tmp_path / "d"
    write_jsonl(d / "a.jsonl", [{"text": "same text here", "v": [1, 2]}, {"text": "same text here", "v": [3]}])
    for engine in ("local", "ray"):
        with pytest.raises(ConfigError, match="cannot order by"):
            api.exact([str(d)], str(tmp_path / f"l-{engine}"), keep_by="v", engine=engine, workers=2)
    e = tmp_path / "e"
    write_jsonl(e / "a.jsonl", [{"text": "same text here", "v": 1}, {"text": "other", "v": 2}])
    write_jsonl(e / "b.jsonl", [{"text": "same text here", "v": "high"}])
    for engine in ("local", "ray"):
        with pytest.raises(InputError, match="different types in different shards"):
            api.exact([str(e)], str(tmp_path / f"t-{engine}"), keep_by="v", engine=engine, workers=2)


def test_semantic_identifies_in_one_task_not_on_the_driver(ray_session, tmp_path, monkeypatch):
    """semantic on Ray: the neighbour search and the decisions run in one task that writes every
    part (the real packaged model; the Ray run reads the embeddings the local run cached, so both
    decide on the same vectors); the manifest and the analysis are the local engine's."""
    pytest.importorskip("sentence_transformers")
    d = tmp_path / "d"
    texts = ["The cat sat on the mat in the sun.", "A cat was sitting on the mat in the sunshine.",
             "Stock markets fell sharply on Monday.", "On Monday the stock markets fell sharply.",
             "I like to bake bread at home.", "Quantum computers use qubits.", "The cat sat on the mat in the sun!"]
    write_jsonl(d / "a.jsonl", [{"id": f"a{i}", "text": t} for i, t in enumerate(texts[:4])] + [{"id": "bad"}])
    write_parquet(d / "b.parquet", [{"id": f"b{i}", "text": t} for i, t in enumerate(texts[4:])])
    kw = dict(id_column="id", on_bad_record="skip", eps=0.1, cache_dir=str(tmp_path / "cache"))
    local = api.semantic([str(d)], str(tmp_path / "local"), workers=1, **kw)
    an_local = api.semantic([str(d)], str(tmp_path / "an-local"), workers=1, analyze=True, eps="0.05,0.1",
                            **{k: v for k, v in kw.items() if k != "eps"})
    _forbid_corpus(monkeypatch)
    on_ray = api.semantic([str(d)], str(tmp_path / "ray"), workers=2, engine="ray", **kw)
    _same_parts(local.out, on_ray.out)
    assert local.summary["counts"] == on_ray.summary["counts"]
    assert on_ray.summary["counts"]["bad_records"] == 1 and on_ray.summary["counts"]["duplicates"] >= 2
    an_ray = api.semantic([str(d)], str(tmp_path / "an-ray"), workers=2, engine="ray", analyze=True, eps="0.05,0.1",
                          **{k: v for k, v in kw.items() if k != "eps"})
    _same_parts(an_local.out, an_ray.out)
    a, b = (json.loads((r.out / "analysis.json").read_text()) for r in (an_local, an_ray))
    assert a["per_eps"] == b["per_eps"] and a["samples"] == b["samples"] and a["per_eps"][1]["drop"] >= 2


@pytest.mark.parametrize("stage", ["substring", "decontaminate"])
def test_span_stages_identify_in_one_task_not_on_the_driver(ray_session, tmp_path, monkeypatch, stage):
    """substring's suffix array and decontaminate's matching run in one task on Ray: the manifest
    and the span parts are the local engine's, byte for byte, and the driver builds no corpus."""
    rng = random.Random(3)
    boiler = "this page was printed from the archive of the city council please do not copy it"
    question = "what is the boiling point of water at sea level in degrees celsius on a calm day"
    d = tmp_path / "d"
    for s in range(3):
        rows = []
        for i in range(12):
            words = " ".join(rng.choice(WORDS) for _ in range(80))
            text = {0: f"{words} {boiler}", 1: f"{words} {question} it is one hundred"}.get(i % 3, words)
            rows.append({"id": f"s{s}-{i}", "text": text})
        (write_parquet if s % 2 else write_jsonl)(d / f"p{s}.{'parquet' if s % 2 else 'jsonl'}", rows)
    if stage == "substring":
        def run(out, **kw):
            return api.substring([str(d)], str(out), min_tokens=8, id_column="id", **kw)
    else:
        ev = tmp_path / "eval.jsonl"
        write_jsonl(ev, [{"id": "q1", "question": question, "answer": "one hundred"},
                         {"id": "q2", "question": "who wrote the play hamlet and when", "answer": "shakespeare"}])

        def run(out, **kw):
            return api.decontaminate([str(d)], str(out), [str(ev)], eval_fields="question,answer", eval_id="id",
                                     id_column="id", mode="cut", margin=0, **kw)
    local = run(tmp_path / "local", workers=1)
    _forbid_corpus(monkeypatch)
    on_ray = run(tmp_path / "ray", workers=2, engine="ray")
    _same_parts(local.out, on_ray.out)
    spans = sorted(p.name for p in (local.out / "spans").glob("*.parquet"))
    assert spans and spans == sorted(p.name for p in (on_ray.out / "spans").glob("*.parquet"))
    for n in spans:
        assert (local.out / "spans" / n).read_bytes() == (on_ray.out / "spans" / n).read_bytes(), n
    assert local.summary["counts"] == on_ray.summary["counts"] and local.summary["counts"]["spans"] >= 8


@pytest.mark.parametrize("stage", ["exact", "substring"])
def test_a_refused_run_leaves_no_finished_output(ray_session, corpus, tmp_path, stage):
    """--max-drop-rate refuses the run in a task (substring: the one identify task) or on the driver
    (exact, keep longest): the error is the dedupkit error, and nothing looks finished."""
    from dedupkit.errors import GuardrailError

    out = tmp_path / "o"
    kw = dict(id_column="id", on_bad_record="skip", engine="ray", workers=2, max_drop_rate=0.0)
    with pytest.raises(GuardrailError, match="max-drop-rate"):
        if stage == "exact":
            api.exact([str(corpus)], str(out), keep="longest", **kw)
        else:
            api.substring([str(corpus)], str(out), min_tokens=8, **kw)
    assert not (out / "summary.json").exists() and not list(out.glob("manifest/*.parquet"))
