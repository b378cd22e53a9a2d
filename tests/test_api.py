"""The typed Python API: `import dedupkit; dedupkit.fuzzy(...)`, config objects in, StageResult out.

The docstring examples (of these modules and every other) run in tests/test_docstrings.py, on the
same four-row JSONL corpus as here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import dedupkit
from dedupkit import ConfigError, ExactConfig, FuzzyConfig, StageResult

from tests.support import SRC, write_doc_corpus


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_doc_corpus(tmp_path / "data")


def test_config_objects_in_typed_result_out(corpus, tmp_path):
    res = dedupkit.fuzzy([str(corpus)], tmp_path / "fz", FuzzyConfig(threshold=0.7), id_column="id")
    assert isinstance(res, StageResult)
    assert res.stage == "fuzzy" and res.counts["dropped"] == 1 and not res.reused
    assert res.manifest == tmp_path / "fz" / "manifest" and res.manifest.is_dir()
    assert res.summary["config"]["stage"]["threshold"] == 0.7
    again = dedupkit.fuzzy([str(corpus)], tmp_path / "fz", threshold=0.7, id_column="id")
    assert again.reused  # the same settings given as a keyword: the same run


def test_keywords_override_the_config_object(corpus, tmp_path):
    # normalize none: the case variants differ; the keyword wins over the object
    res = dedupkit.exact([str(corpus)], tmp_path / "ex", ExactConfig(normalize="lower"), normalize="none")
    assert res.counts["dropped"] == 0


def test_unknown_or_invalid_setting_is_a_config_error(corpus, tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'threshold'"):
        dedupkit.fuzzy([str(corpus)], tmp_path / "x", treshold=0.7)
    with pytest.raises(ConfigError, match=r"threshold = 2: 2.0 is not in the range 0<x<=1"):
        FuzzyConfig(threshold=2)
    with pytest.raises(ConfigError, match="workers"):
        dedupkit.exact([str(corpus)], tmp_path / "x", workers=0)
    assert not (tmp_path / "x").exists()


def test_index_functions_take_an_index_config(corpus, tmp_path):
    from dedupkit import IndexConfig

    idx = str(tmp_path / "idx")
    made = dedupkit.index_create(idx, [str(corpus)], IndexConfig(stages="exact,fuzzy", num_perm=64), id_column="id")
    assert made.added == 4
    info = dedupkit.index_info(idx)["settings"]
    assert info["stages"] == ["exact", "fuzzy"] and info["minhash"]["num_perm"] == 64
    # a config object is a requirement on every field; keywords only on those given
    with pytest.raises(ConfigError, match="num-perm: index has 64, asked for 128"):
        dedupkit.check([str(corpus)], str(tmp_path / "c1"), idx, IndexConfig(stages="exact,fuzzy"), id_column="id")
    with pytest.raises(ConfigError, match="stages: index has exact,fuzzy, asked for exact"):
        dedupkit.check([str(corpus)], str(tmp_path / "c2"), idx, stages="exact", id_column="id")
    res = dedupkit.check([str(corpus)], str(tmp_path / "c3"), idx, IndexConfig(stages="exact,fuzzy", num_perm=64),
                         id_column="id")
    assert res.summary["counts"]["rows"] == 4 and res.summary["counts"]["dropped"] == 4  # all are indexed


def test_audit_returns_a_typed_profile(corpus):
    profile = dedupkit.audit([str(corpus)], dedupkit.AuditConfig(min_tokens=5))
    assert isinstance(profile, dedupkit.AuditResult)
    # 15 + 15 + 11 + 11 tokens; d1 and d2 share all but their first (The / the): 2 x 14 in repeats
    assert profile.tokens == 52 and profile.tokens_in_repeats["2x"] == 28
    assert profile.inputs == [profile.shards[0]["shard"]] and profile.inputs[0].endswith("a.jsonl")
    assert list(profile.to_dict()) == ["inputs", "min_tokens", "tokens", "tokens_in_repeats", "share", "shards",
                                       "top_spans"]


def test_all_names_resolve():
    for name in dedupkit.__all__:
        assert getattr(dedupkit, name) is not None, name


def test_import_is_light():
    # `import dedupkit` (and so `dedupkit --help`) must not load pyarrow, numpy or click
    code = ("import sys, dedupkit; dedupkit.FuzzyConfig(); "
            "print(sorted(m for m in ('pyarrow', 'numpy', 'click') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": SRC})
    assert out.stdout.strip() == "[]"


def test_readme_python_section_runs(tmp_path):
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    code = readme.split("\n## Python\n", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    import shutil

    shutil.copytree(root / "examples" / "corpus", tmp_path / "examples" / "corpus")
    shutil.copytree(root / "configs", tmp_path / "configs")
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                       env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.splitlines()
    assert lines[0].startswith("fuzzy ") and lines[-1] == "['exact', 'fuzzy']", p.stdout
    kept, rows = int(lines[1].split()[0]), int(lines[1].split()[2])
    assert 0 < kept < rows
    assert sorted(x.name for x in (tmp_path / "out" / "py").iterdir()) == ["clean", "exact", "fuzzy", "run"]
