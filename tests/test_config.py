"""Config files: precedence, presets, and a clear error for every kind of bad value."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from dedupkit.cli.main import cli
from dedupkit.config import (
    PipelineConfig, StageSettings, parse_set, resolve, stage_available,
)
from dedupkit.errors import ConfigError

from tests.support import BASE_DOCS, make_rows, write_jsonl

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def cfg(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.toml"
    p.write_text(text)
    return p


def err(tmp_path, text, **kw) -> str:
    p = cfg(tmp_path, text)
    with pytest.raises(ConfigError) as ei:
        resolve(p, env={}, **kw)
    return str(ei.value)


# ---- bad configs: every message names the file and the key -----------------------------------


def test_unknown_top_level_key_names_key_and_file(tmp_path):
    msg = err(tmp_path, 'stages = ["exact"]\nworkerz = 2\n')
    assert "cfg.toml" in msg and "'workerz'" in msg and "did you mean 'workers'" in msg


def test_unknown_table_names_table_and_file(tmp_path):
    msg = err(tmp_path, 'stages = ["exact"]\n[exakt]\nnormalize = "none"\n')
    assert "cfg.toml" in msg and "[exakt]" in msg and "did you mean 'exact'" in msg


def test_unknown_stage_key_names_key_file_and_valid_keys(tmp_path):
    msg = err(tmp_path, 'stages = ["exact"]\n[exact]\nnormalise = "none"\n')
    assert "cfg.toml" in msg and "[exact] normalise" in msg and "did you mean 'normalize'" in msg
    assert "valid keys are" in msg and "keep_by" in msg


def test_unknown_key_in_a_stage_table_not_run_is_still_an_error(tmp_path):
    # a typo in a table of a stage not selected must not pass silently
    msg = err(tmp_path, 'stages = ["exact"]\n[exact]\nkeep_ordr = "asc"\n', flags={"stages": "exact"})
    assert "keep_ordr" in msg


def test_run_wide_key_in_stage_table(tmp_path):
    msg = err(tmp_path, 'stages = ["exact"]\n[exact]\ntext_column = "body"\n')
    assert "cfg.toml: [exact] text_column" in msg and "top level" in msg


@pytest.mark.parametrize("text, expect", [
    ('batch_size = "big"', "batch_size = 'big': expected an integer, got string"),
    ("workers = 1.5", "workers = 1.5: expected an integer, got number"),
    ("text_column = 3", "text_column = 3: expected a string, got integer"),
    ("[exact]\nnormalize = [1, 2]", "[exact] normalize = [1, 2]: expected a single text, got an array"),
    ('stages = "exact"\nmax_drop_rate = "lots"', "max_drop_rate = 'lots': expected a number"),
    ("[exact]\nkeep = 3", "[exact] keep = 3: expected a string, got integer"),
    ("[exact]\nnormalize = true", "[exact] normalize = True: expected a string, got boolean"),
    ('[exact]\nmax_drop_rate = "0.5"', "[exact] max_drop_rate = '0.5': expected a number, got a string"),
])
def test_wrong_type(tmp_path, text, expect):
    msg = err(tmp_path, text if text.startswith("stages") else 'stages = ["exact"]\n' + text)
    assert "cfg.toml" in msg and expect in msg


@pytest.mark.parametrize("text, expect", [
    ("max_drop_rate = 1.5", "max_drop_rate = 1.5: must be between 0 and 1"),
    ("[exact]\nmax_drop_rate = -0.1", "[exact] max_drop_rate = -0.1"),
    ('[exact]\nkeep = "best"', "[exact] keep = 'best'"),
    ('[exact]\nkeep_order = "up"', "[exact] keep_order = 'up'"),
])
def test_out_of_range(tmp_path, text, expect):
    msg = err(tmp_path, 'stages = ["exact"]\n' + text)
    assert "cfg.toml" in msg and expect in msg


def test_out_of_range_workers(tmp_path):
    with pytest.raises(ConfigError, match="workers must be an integer >= 1, got 0"):
        resolve(cfg(tmp_path, 'stages = ["exact"]\nworkers = 0\n'), env={})


def test_choice_error_lists_choices(tmp_path):
    msg = err(tmp_path, 'stages = ["exact"]\n[exact]\nkeep = "best"\n')
    assert "first" in msg and "longest" in msg


@pytest.mark.skipif(not stage_available("fuzzy"), reason="fuzzy stage not merged yet")
def test_out_of_range_fuzzy_threshold(tmp_path):
    msg = err(tmp_path, 'stages = ["exact", "fuzzy"]\n[fuzzy]\nthreshold = 1.5\n')
    assert "cfg.toml" in msg and "[fuzzy] threshold = 1.5" in msg


@pytest.mark.skipif(not stage_available("fuzzy"), reason="fuzzy stage not merged yet")
@pytest.mark.parametrize("text, expect", [
    ("[fuzzy]\nthreshold = 0", "[fuzzy] threshold = 0"),
    ('[fuzzy]\nthreshold = "high"', "[fuzzy] threshold = 'high': expected a number, got a string"),
    ("[fuzzy]\nnum_perm = 0", "[fuzzy] num_perm = 0"),
    ("[fuzzy]\nnum_perm = 128.5", "[fuzzy] num_perm = 128.5: expected an integer"),
    ('[fuzzy]\nshingle = "sentence"', "[fuzzy] shingle = 'sentence'"),
    ("[fuzzy]\nthreshhold = 0.7", "did you mean 'threshold'"),
])
def test_bad_fuzzy_values(tmp_path, text, expect):
    msg = err(tmp_path, 'stages = ["exact", "fuzzy"]\n' + text)
    assert "cfg.toml" in msg and expect in msg


@pytest.mark.skipif(not stage_available("fuzzy"), reason="fuzzy stage not merged yet")
def test_fuzzy_bands_without_rows_fails_before_any_work(tmp_path, corpus):
    from dedupkit import api

    p = cfg(tmp_path, 'stages = ["exact", "fuzzy"]\n[fuzzy]\nbands = 16\n')
    with pytest.raises(ConfigError, match="cfg.toml: \\[fuzzy\\]: give bands and rows together"):
        api.run([str(corpus)], str(tmp_path / "out"), config=str(p), env={})
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not stage_available("semantic"), reason="semantic stage not merged yet")
def test_bad_semantic_values(tmp_path):
    msg = err(tmp_path, 'stages = ["exact", "semantic"]\n[semantic]\nmax_tokens = 4\n')
    assert "cfg.toml: [semantic] max_tokens = 4" in msg
    msg = err(tmp_path, 'stages = ["exact", "semantic"]\n[semantic]\nkeep = "best"\n')
    assert "[semantic] keep = 'best'" in msg and "hard" in msg


def test_bad_normalize_step_fails_before_any_work(tmp_path, corpus):
    """Ranges only the stage knows (a normalization step name) fail before any stage runs."""
    from dedupkit import api

    p = cfg(tmp_path, 'stages = ["exact"]\n[exact]\nnormalize = "nfkc,stemming"\n')
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as ei:
        api.run([str(corpus)], str(out), config=str(p), env={})
    assert "cfg.toml: [exact]" in str(ei.value) and "stemming" in str(ei.value)
    assert not out.exists()


def test_toml_syntax_error_names_file_and_line(tmp_path):
    msg = err(tmp_path, 'stages = ["exact"]\n[exact]\nnormalize = "none\n')
    assert "cfg.toml is not valid TOML" in msg and "line 3" in msg


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file .*nope.toml not found"):
        resolve(tmp_path / "nope.toml", env={})


def test_unknown_and_duplicate_stages(tmp_path):
    with pytest.raises(ConfigError, match="unknown stage 'exactt'.*did you mean 'exact'"):
        resolve(None, flags={"stages": "exactt"}, env={})
    with pytest.raises(ConfigError, match="'exact' is listed twice"):
        resolve(None, flags={"stages": "exact,exact"}, env={})
    with pytest.raises(ConfigError, match="no stage to run"):
        resolve(None, flags={"stages": ""}, env={})


def test_bad_set_and_env_values(tmp_path):
    with pytest.raises(ConfigError, match="expected STAGE.KEY=VALUE"):
        resolve(None, flags={"stages": "exact"}, sets=["exact"], env={})
    with pytest.raises(ConfigError, match="--set exact.kep: unknown key 'kep'"):
        resolve(None, flags={"stages": "exact"}, sets=["exact.kep=first"], env={})
    with pytest.raises(ConfigError, match="DEDUPKIT_WORKERS='two': expected an integer"):
        resolve(None, flags={"stages": "exact"}, env={"DEDUPKIT_WORKERS": "two"})
    with pytest.raises(ConfigError, match="DEDUPKIT_EXACT_KEEP='best'"):
        resolve(None, flags={"stages": "exact"}, env={"DEDUPKIT_EXACT_KEEP": "best"})


def test_config_objects_validate_on_construction():
    with pytest.raises(ConfigError, match="unknown stage 'nope'"):
        StageSettings("nope")
    with pytest.raises(ConfigError, match="max_drop_rate must be a number between 0 and 1"):
        StageSettings("exact", {}, max_drop_rate=2.0)
    with pytest.raises(ConfigError, match="on_bad_record must be fail or skip"):
        PipelineConfig(stages=(StageSettings("exact"),), on_bad_record="ignore")
    c = PipelineConfig(stages=(StageSettings("exact", {"keep": "first"}),))
    with pytest.raises(Exception):
        c.workers = 3  # frozen
    with pytest.raises(TypeError):
        c.stages[0].options["keep"] = "last"  # read-only mapping


# ---- precedence: flag > env > config > default --------------------------------------------


def test_precedence_run_wide(tmp_path):
    p = cfg(tmp_path, 'stages = ["exact"]\ntext_column = "body"\nworkers = 2\n')
    assert resolve(None, flags={"stages": "exact"}, env={}).text_column == "text"  # default
    assert resolve(p, env={}).text_column == "body"  # config
    assert resolve(p, env={"DEDUPKIT_TEXT_COLUMN": "content"}).text_column == "content"  # env
    c = resolve(p, flags={"text_column": "title"}, env={"DEDUPKIT_TEXT_COLUMN": "content"})
    assert c.text_column == "title"  # flag
    assert c.workers == 2
    assert resolve(p, flags={"workers": 3}, env={"DEDUPKIT_WORKERS": "4"}).workers == 3
    assert resolve(p, env={"DEDUPKIT_WORKERS": "4"}).workers == 4


def test_precedence_stage_settings(tmp_path):
    p = cfg(tmp_path, 'stages = ["exact"]\n[exact]\nnormalize = ["nfkc", "lower"]\nkeep = "longest"\n')

    def opts(**kw):
        return dict(resolve(**kw).stages[0].options)

    assert opts(config_path=None, flags={"stages": "exact"}, env={})["normalize"] == "lower,whitespace"
    o = opts(config_path=p, env={})
    assert o["normalize"] == "nfkc,lower" and o["keep"] == "longest"
    # the stage option's own variable and the generic DEDUPKIT_<STAGE>_<KEY> both count as env
    assert opts(config_path=p, env={"DEDUPKIT_NORMALIZE": "none"})["normalize"] == "none"
    assert opts(config_path=p, env={"DEDUPKIT_EXACT_KEEP": "last"})["keep"] == "last"
    o = opts(config_path=p, sets=["exact.keep=shortest"], env={"DEDUPKIT_EXACT_KEEP": "last"})
    assert o["keep"] == "shortest"


def test_max_drop_rate_levels(tmp_path):
    p = cfg(tmp_path, 'stages = ["exact"]\nmax_drop_rate = 0.3\n')
    assert resolve(p, env={}).stages[0].max_drop_rate == 0.3
    p2 = cfg(tmp_path, 'stages = ["exact"]\nmax_drop_rate = 0.3\n[exact]\nmax_drop_rate = 0.6\n')
    assert resolve(p2, env={}).stages[0].max_drop_rate == 0.6  # the stage's own value wins over the file's
    assert resolve(p2, flags={"max_drop_rate": 0.1}, env={}).stages[0].max_drop_rate == 0.1  # a flag wins


def test_parse_set_reads_toml_values():
    assert parse_set("fuzzy.threshold=0.7") == ("fuzzy", "threshold", 0.7)
    assert parse_set("exact.normalize=nfkc,lower") == ("exact", "normalize", "nfkc,lower")
    assert parse_set("fuzzy.num-perm=64") == ("fuzzy", "num_perm", 64)


# ---- presets -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["default", "web", "code", "cjk", "rewritten", "translations"])
def test_presets_resolve(name):
    path = CONFIGS / f"{name}.toml"
    assert path.exists()
    text = path.read_text()
    assert text.count("#") >= 5, "presets explain their numbers in comments"
    from dedupkit.config import load_toml

    wanted = load_toml(path).get("stages", [])
    available = [s for s in wanted if stage_available(s)]
    c = resolve(path, flags={"stages": ",".join(available)} if available != wanted else None, env={})
    assert [s.name for s in c.stages] == available
    from dedupkit.config import build_stage

    for s in c.stages:  # every preset builds real stages (ranges the options cannot express)
        build_stage(s.name, s.options)


# ---- CLI -------------------------------------------------------------------------------------


def test_cli_bad_config_exit_1_and_message(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", make_rows(BASE_DOCS))
    p = cfg(tmp_path, 'stages = ["exact"]\n[exact]\nnormalise = "none"\n')
    r = CliRunner().invoke(cli, ["run", str(data), "-o", str(tmp_path / "out"), "-c", str(p)])
    assert r.exit_code == 1
    assert "cfg.toml: [exact] normalise" in r.output
    assert not (tmp_path / "out").exists()


# ---- the same config file for single stage commands ------------------------------------------


def _exact_normalize(tmp_path, args, env=None):
    data = write_jsonl(tmp_path / "d.jsonl", make_rows(BASE_DOCS))
    out = tmp_path / f"o{len(list(tmp_path.iterdir()))}"
    r = CliRunner().invoke(cli, [*args[:-1], "exact", str(data), "-o", str(out), *args[-1]], env=env or {})
    assert r.exit_code == 0, r.output
    import json

    s = json.loads((out / "summary.json").read_text())
    return s["config"]["stage"]["normalize"], s["config"]["read"]["id_column"]


def test_stage_command_takes_config_with_precedence(tmp_path):
    p = cfg(tmp_path, 'id_column = "id"\n[exact]\nnormalize = "nfkc"\n')
    assert _exact_normalize(tmp_path, [[]]) == (["lower", "whitespace"], None)  # default
    assert _exact_normalize(tmp_path, ["-c", str(p), []]) == (["nfkc"], "id")  # config
    assert _exact_normalize(tmp_path, [[]], env={"DEDUPKIT_CONFIG": str(p)}) == (["nfkc"], "id")
    assert _exact_normalize(tmp_path, ["-c", str(p), []], env={"DEDUPKIT_NORMALIZE": "digits"})[0] == ["digits"]
    assert _exact_normalize(tmp_path, ["-c", str(p), ["--normalize", "none"]],
                            env={"DEDUPKIT_NORMALIZE": "digits"})[0] == []  # flag


def test_stage_command_bad_config_names_file_and_key(tmp_path):
    p = cfg(tmp_path, '[exact]\nnormalize = "nfkc"\nkeep = "best"\n')
    data = write_jsonl(tmp_path / "d.jsonl", make_rows(BASE_DOCS))
    r = CliRunner().invoke(cli, ["-c", str(p), "exact", str(data), "-o", str(tmp_path / "o")])
    assert r.exit_code == 1 and "cfg.toml: [exact] keep = 'best'" in r.output
    assert not (tmp_path / "o").exists()
