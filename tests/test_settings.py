"""The settings schema (dedupkit.settings) is the one place a default, range or choice is written.

Walks every config dataclass and every Click command: an option's default, range, choices and
environment variable must be its setting's; and no module of src/ may declare a literal default
for a name the schema holds (it must read the schema's)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import click
import pytest

from dedupkit import settings
from dedupkit.cli.main import cli
from dedupkit.cli.schema import click_type
from dedupkit.config import resolve
from dedupkit.errors import ConfigError
from dedupkit.stages.registry import known_stages, stage_entry

SRC = Path(__file__).resolve().parents[1] / "src" / "dedupkit"
SCHEMA = [c for _, c in inspect.getmembers(settings, inspect.isclass)
          if dataclasses.is_dataclass(c) and c.__module__ == settings.__name__ and settings.specs(c)
          and c is not settings.Spec]
SPECS: dict[str, list[settings.Spec]] = {}
for cls in SCHEMA:
    for name, spec in settings.specs(cls).items():
        SPECS.setdefault(name, []).append(spec)


def _commands(group=cli, path=()):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, path + (name,))
        else:
            yield " ".join(path + (name,)), cmd


COMMANDS = dict(_commands())


def _same_type(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, click.Choice):
        return list(a.choices) == list(b.choices)
    if isinstance(a, (click.IntRange, click.FloatRange)):
        return (a.min, a.max, a.min_open, a.max_open) == (b.min, b.max, b.min_open, b.max_open)
    if isinstance(a, click.Path):
        return (a.file_okay, a.dir_okay) == (b.file_okay, b.dir_okay)
    return True


# Options that share a setting's name but mean something else (no default either).
OTHER_MEANING = {("inspect", "cluster"): "a cluster id, not the fuzzy stage's --cluster mode",
                 ("inspect", "largest"): "which clusters to show (unset: none), not how many the report lists"}


def _unset(value) -> bool:
    return value is None or value is False or value == () or "UNSET" in repr(value)


def test_the_schema_is_found():
    names = {c.__name__ for c in SCHEMA}
    assert {"ExactConfig", "FuzzyConfig", "SemanticConfig", "SubstringConfig", "AuditConfig",
            "DecontaminateConfig", "ReadConfig", "RunConfig", "IndexConfig"} <= names
    assert len(COMMANDS) >= 15


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_is_its_setting(command):
    """An option named like a setting has that setting's default (or none: filled in later),
    range, choices and environment variable; any other option declares no default."""
    for p in COMMANDS[command].params:
        if not isinstance(p, click.Option) or (command, p.name) in OTHER_MEANING:
            continue
        name = p.name[5:] if p.name.startswith("eval_") and p.name not in SPECS else p.name
        if name not in SPECS:
            assert _unset(p.default), f"{command} {p.opts[-1]}: default {p.default!r} is not from the schema"
            continue
        candidates = [s for s in SPECS[name] if (s.kind == "flag") == bool(p.is_flag)
                      and (p.is_flag or _same_type(click_type(s) or click.STRING, p.type))
                      and (p.default == s.default or _unset(p.default))
                      and p.envvar in (s.env, None)]
        assert candidates, (f"{command} {p.opts[-1]}: default {p.default!r}, type {p.type!r}, env {p.envvar!r} "
                            f"match no setting {name!r} of the schema: "
                            f"{[(s.default, s.range_text(), s.choices, s.env) for s in SPECS[name]]}")


def test_stage_tables_and_commands_share_one_schema():
    """A stage's [table] keys are its config's fields; `dedupkit <stage>` has one option per field."""
    for name in known_stages():
        cfg = stage_entry(name).config_class()
        resolved = resolve(None, flags={"stages": name}, env={}).stages[0].options
        assert dict(resolved) == settings.to_options(cfg()), name
        opts = {p.name for p in COMMANDS[name].params}
        assert set(settings.specs(cfg)) <= opts, name


def _literal(node):
    if isinstance(node, ast.Constant) and node.value is not None and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.Tuple) and node.elts and all(isinstance(e, ast.Constant) for e in node.elts):
        return tuple(e.value for e in node.elts)
    if isinstance(node, ast.BinOp):  # 4 * 2**20, 256 * 1024 * 1024
        try:
            return ast.literal_eval(node)
        except ValueError:
            return None
    return None


def _declared_defaults(tree: ast.AST):
    """(line, name, literal) of every default a function parameter, a dataclass field or a
    click.option(default=...) declares."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            pos = a.posonlyargs + a.args
            pairs = list(zip(pos[len(pos) - len(a.defaults):], a.defaults)) + \
                [(arg, d) for arg, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]
            for arg, d in pairs:
                yield d.lineno, arg.arg, _literal(d)
        elif isinstance(node, ast.ClassDef):
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
                    yield stmt.lineno, stmt.target.id, _literal(stmt.value)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "option":
            flag = next((a.value for a in node.args if isinstance(a, ast.Constant)
                         and str(a.value).startswith("--")), "")
            for kw in node.keywords:
                if kw.arg == "default":
                    yield kw.value.lineno, flag[2:].replace("-", "_"), _literal(kw.value)


def test_no_choices_are_written_outside_the_schema():
    """A module-level tuple of strings that equals a choice setting's values reads them from the
    schema (``_S.choices(_S.FuzzyConfig, "shingle")``) instead of repeating them."""
    all_choices = {s.choices for specs in SPECS.values() for s in specs if len(s.choices) > 1}
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = str(path.relative_to(SRC))
        if rel == "settings.py":
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Tuple):
                value = _literal(node.value)
                if value in all_choices:
                    found.append(f"{rel}:{node.lineno}: {ast.unparse(node.targets[0])} = {value!r}")
    assert not found, "choices written outside dedupkit/settings.py:\n" + "\n".join(found)


def _valid(spec: settings.Spec, value) -> bool:
    """A value the setting accepts (a sentinel outside its range, such as char_ngram = 0 for
    "no char sets", is not a second default)."""
    try:
        spec.check(value, spec.name)
    except ConfigError:
        return False
    return True


def test_no_default_is_written_outside_the_schema():
    """A parameter or field named like a setting never repeats a literal default: it reads the
    schema's (``_S.FuzzyConfig.threshold``), so a default is changed in one place."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "settings.py" and path.parent == SRC:
            continue
        rel = str(path.relative_to(SRC))
        for line, name, value in _declared_defaults(ast.parse(path.read_text())):
            if value is not None and name in SPECS and any(_valid(s, value) for s in SPECS[name]):
                found.append(f"{rel}:{line}: {name} = {value!r}")
    assert not found, "literal defaults of settings outside dedupkit/settings.py:\n" + "\n".join(found)


def test_the_schema_checks_values():
    with pytest.raises(ConfigError, match=r"num_perm = 0: 0 is not in the range 1<=x<=4096"):
        settings.FuzzyConfig(num_perm=0)
    with pytest.raises(ConfigError, match="'best' is not one of 'first', 'last'"):
        settings.ExactConfig(keep="best")
    with pytest.raises(ConfigError, match="give bands and rows together"):
        settings.FuzzyConfig(bands=4)
    assert settings.FuzzyConfig(threshold=1).threshold == 1.0  # an int is a number
    spec = settings.specs(settings.ReadConfig)["batch_size"]
    assert spec.parse("64", "DEDUPKIT_BATCH_SIZE") == 64
    with pytest.raises(ConfigError, match="DEDUPKIT_BATCH_SIZE='0'"):
        spec.parse("0", "DEDUPKIT_BATCH_SIZE")


def test_a_third_party_stage_is_a_class_and_a_config(tmp_path):
    """No Click: a plain dataclass's fields become the keys of its [table], checked by type."""
    from dedupkit.stages.registry import register_stage, unregister_stage

    @dataclasses.dataclass(frozen=True)
    class LengthConfig:
        min_chars: int = 10

    register_stage("length", "dedupkit.stages.exact:ExactStage", LengthConfig)
    try:
        cfg = tmp_path / "c.toml"
        cfg.write_text('stages = ["length"]\n[length]\nmin_chars = 3\n')
        assert dict(resolve(cfg, env={}).stages[0].options) == {"min_chars": 3}
        cfg.write_text('stages = ["length"]\n[length]\nmin_chars = "3"\n')
        with pytest.raises(ConfigError, match=r"\[length\] min_chars = '3': expected a number"):
            resolve(cfg, env={})
        assert resolve(None, flags={"stages": "length"}, env={"DEDUPKIT_LENGTH_MIN_CHARS": "7"}).stages[0].options \
            == {"min_chars": 7}
    finally:
        unregister_stage("length")
