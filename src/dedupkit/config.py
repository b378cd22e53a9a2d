"""Pipeline configuration: the stage registry, TOML loading and the flag > env > config > default merge.

A config file is TOML. Its top level holds the run-wide settings (the stages to run, the shared read
options, workers, the guardrail); one table per stage holds that stage's settings, with the same
names as the stage command's options (``--num-perm`` is ``num_perm``)::

    stages = ["exact", "fuzzy"]
    id_column = "id"
    max_drop_rate = 0.5

    [exact]
    normalize = "nfkc,whitespace"

    [fuzzy]
    threshold = 0.8

Each value is resolved, highest first, from: a command-line flag (for stage settings ``--set
fuzzy.threshold=0.7``), a ``DEDUPKIT_*`` environment variable (run-wide ``DEDUPKIT_WORKERS``;
per stage ``DEDUPKIT_FUZZY_THRESHOLD``, or the stage option's own variable such as
``DEDUPKIT_NORMALIZE``), the config file, the option's default.

The valid keys of a stage table, their types, ranges, defaults and environment variables are the
fields of the stage's config dataclass (:mod:`dedupkit.settings`, the one schema the commands'
options are generated from too), so a stage that lands later (or a third-party one, see
:func:`dedupkit.stages.registry.register_stage`) is configurable without changes here. This module
never imports Click. Unknown keys, wrong types and out-of-range values raise :class:`ConfigError`
naming the key and the file.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Mapping, Sequence

from dedupkit.errors import ConfigError
from dedupkit.settings import (
    GuardConfig, PipelineSettings, ReadConfig, RunConfig, Spec, default_of, specs, type_name as _type_name,
)
from dedupkit.stages.registry import (
    _REGISTRY, StageEntry, build_stage, did_you_mean as _did_you_mean, known_stages, register_stage, stage_entry,
    unregister_stage,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["PipelineConfig", "StageSettings", "StageEntry", "apply_stage_checks", "build_pipeline_stage", "build_stage", "command_defaults",
           "known_stages", "load_toml", "parse_set", "register_stage", "resolve", "stage_available", "stage_entry",
           "stage_params", "unregister_stage"]

# Settings that are run-wide in a pipeline (set at the top level of the file or by `dedupkit run`
# itself), never in a stage table.
READ_KEYS = tuple(specs(ReadConfig))
RUN_KEYS = ("stages",) + tuple(specs(RunConfig)) + ("max_drop_rate", "clean")
NOT_STAGE_KEYS = frozenset(READ_KEYS + tuple(specs(RunConfig)) + (
    "inputs", "output", "overwrite", "quiet", "as_json", "skip", "config", "json"))
DEFAULT_STAGES = tuple(default_of(PipelineSettings, "stages").split(","))
ENGINES = specs(RunConfig)["engine"].choices
BAD_RECORD_MODES = specs(ReadConfig)["on_bad_record"].choices


# --------------------------------------------------------------------------------------------
# Stage registry (kept in dedupkit.stages.registry)


def stage_available(name: str) -> bool:
    """True when the stage is registered."""
    return name in _REGISTRY


# A stage table's max_drop_rate: the stage's own guardrail. Only the run-wide key has an
# environment variable of its own; per stage it is DEDUPKIT_<STAGE>_MAX_DROP_RATE.
_STAGE_RATE = replace(specs(GuardConfig)["max_drop_rate"], env=None)


def stage_params(name: str) -> dict[str, Spec]:
    """The settings a stage table may set, by key: the stage config's fields and ``max_drop_rate``."""
    return {**specs(stage_entry(name).config_class()), "max_drop_rate": _STAGE_RATE}


# --------------------------------------------------------------------------------------------
# Values


def convert_param(spec: Spec, value: Any, where: str) -> Any:
    """Check a TOML / ``--set`` value against a setting's spec and convert it.

    Raises:
        ConfigError: naming ``where`` (e.g. ``"configs/web.toml: [fuzzy] threshold"``), the value,
            and what is expected.
    """
    return spec.check(value, where)


def parse_set(item: str) -> tuple[str, str, Any]:
    """Parse ``--set STAGE.KEY=VALUE``; VALUE is read as TOML when it parses, else as a string."""
    if "=" not in item or "." not in item.split("=", 1)[0]:
        raise ConfigError(f"--set {item!r}: expected STAGE.KEY=VALUE, e.g. --set fuzzy.threshold=0.7")
    lhs, raw = item.split("=", 1)
    stage, key = lhs.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return stage.strip(), key.strip().replace("-", "_"), value


# --------------------------------------------------------------------------------------------
# Config objects


def _freeze(d: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(d))


@dataclass(frozen=True)
class StageSettings:
    """One stage of a pipeline and its resolved options.

    Attributes:
        name: a registered stage name.
        options: every option of the stage (defaults filled in), by key.
        max_drop_rate: this stage's guardrail (None = none).
    """

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    max_drop_rate: float | None = None

    def __post_init__(self) -> None:
        stage_entry(self.name)
        object.__setattr__(self, "options", _freeze(self.options))
        _check_rate(self.max_drop_rate, f"[{self.name}] max_drop_rate")


def _check_rate(v: float | None, what: str) -> None:
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0):
        raise ConfigError(f"{what} must be a number between 0 and 1, got {v!r}")


@dataclass(frozen=True)
class PipelineConfig:
    """Everything ``dedupkit run`` needs besides the inputs and the output folder.

    Attributes:
        stages: the stages, in order; each sees only the rows the earlier ones kept.
        text_column, id_column, batch_size, on_bad_record: read options shared by every stage.
        workers, engine, ray_address: how the per-shard work runs (never changes the result).
        clean: folder for the clean corpus (kept rows), or None to write manifests only.
        source: the config file the settings came from, if any (for messages and the summary).

    Raises:
        ConfigError: no stage, a stage named twice, an unknown stage, a bad value.
    """

    stages: tuple[StageSettings, ...]
    text_column: str = default_of(ReadConfig, "text_column")
    id_column: str | None = default_of(ReadConfig, "id_column")
    batch_size: int = default_of(ReadConfig, "batch_size")
    on_bad_record: str = default_of(ReadConfig, "on_bad_record")
    workers: int = default_of(RunConfig, "workers")
    engine: str = default_of(RunConfig, "engine")
    ray_address: str | None = default_of(RunConfig, "ray_address")
    clean: str | None = default_of(PipelineSettings, "clean")
    source: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        if not self.stages:
            raise ConfigError("no stage to run; set stages = [\"exact\", ...] or pass --stages")
        names = [s.name for s in self.stages]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"stage {dup[0]!r} is listed twice in stages; name each stage once")
        if not isinstance(self.text_column, str) or not self.text_column:
            raise ConfigError("text_column must be a non-empty string")
        if self.id_column is not None and (not isinstance(self.id_column, str) or not self.id_column):
            raise ConfigError("id_column must be a non-empty string (or left out)")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ConfigError(f"workers must be an integer >= 1, got {self.workers!r}")
        if self.on_bad_record not in BAD_RECORD_MODES:
            raise ConfigError(f"on_bad_record must be fail or skip, got {self.on_bad_record!r}")
        if self.engine not in ENGINES:
            raise ConfigError(f"engine must be local or ray, got {self.engine!r}")

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (recorded in summary.json)."""
        return {
            "stages": [{"name": s.name, "options": _jsonable(dict(s.options)),
                        "max_drop_rate": s.max_drop_rate} for s in self.stages],
            "text_column": self.text_column, "id_column": self.id_column,
            "batch_size": self.batch_size, "on_bad_record": self.on_bad_record,
            "workers": self.workers, "engine": self.engine, "ray_address": self.ray_address,
            "clean": self.clean, "source": self.source,
        }


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


# --------------------------------------------------------------------------------------------
# Loading


def load_toml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a TOML config file.

    Raises:
        ConfigError: the file is missing or is not valid TOML (the message names the line).
    """
    from dedupkit.io.validate import not_regular

    kind = not_regular(path)
    if kind:
        raise ConfigError(f"config file {path} is {kind}, not a regular file; pass a file to -c/--config")
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found; pass an existing file to -c/--config") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path} ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}; fix the line named") from None


def _top_specs() -> dict[str, Spec]:
    run = specs(PipelineSettings)
    return {"stages": run["stages"], **specs(ReadConfig), **specs(RunConfig), "max_drop_rate": run["max_drop_rate"],
            "clean": run["clean"]}


def _top_kind(spec: Spec) -> str:
    if spec.name == "stages":
        return "stages"
    return {"int": "int", "float": "rate"}.get(spec.kind, "str")


# Run-wide keys: (TOML type check, environment variable)
_TOP: dict[str, tuple[str, str]] = {k: (_top_kind(sp), sp.env) for k, sp in _top_specs().items()}


def _check_top(key: str, value: Any, where: str) -> Any:
    kind = _TOP[key][0]
    if kind == "stages":
        if isinstance(value, str):
            value = [s for s in value.replace(" ", "").split(",") if s]
        if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
            raise ConfigError(f"{where} = {value!r}: expected an array of stage names, e.g. [\"exact\", \"fuzzy\"]")
        return tuple(value)
    if kind == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{where} = {value!r}: expected a string, got {_type_name(value)} (quote it)")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} = {value!r}: expected an integer, got {_type_name(value)}")
        return value
    if kind == "rate":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} = {value!r}: expected a number between 0 and 1, got {_type_name(value)}")
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{where} = {value!r}: must be between 0 and 1 (a share of the input rows)")
        return float(value)
    raise AssertionError(kind)  # pragma: no cover


def _env_top(key: str, env: Mapping[str, str]) -> Any:
    var = _TOP[key][1]
    if var not in env:
        return None
    raw = env[var]
    kind = _TOP[key][0]
    if kind == "int":
        try:
            return _check_top(key, int(raw), var)
        except ValueError:
            raise ConfigError(f"{var}={raw!r}: expected an integer") from None
    if kind == "rate":
        try:
            return _check_top(key, float(raw), var)
        except ValueError:
            raise ConfigError(f"{var}={raw!r}: expected a number between 0 and 1") from None
    return _check_top(key, raw, var)


def resolve(
    config_path: str | os.PathLike | None = None,
    flags: Mapping[str, Any] | None = None,
    sets: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> PipelineConfig:
    """Merge flags, environment, config file and defaults into a :class:`PipelineConfig`.

    Args:
        config_path: a TOML file, or None.
        flags: run-wide values given on the command line (keys of the top level; None = not given).
            ``stages`` may be a comma-separated string.
        sets: ``STAGE.KEY=VALUE`` overrides of stage settings (``--set``).
        env: the environment (default ``os.environ``).

    Returns:
        The validated configuration.

    Raises:
        ConfigError: unknown key or table (naming it and the file), wrong type, value out of range,
            unknown or unavailable stage.

    Example:
        >>> from dedupkit.config import resolve
        >>> _ = (tmp / "dedupkit.toml").write_text('stages = ["exact"]')
        >>> cfg = resolve(tmp / "dedupkit.toml", flags={"workers": 2})
        >>> [s.name for s in cfg.stages], cfg.workers
        (['exact'], 2)
    """
    env = os.environ if env is None else env
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    src = str(config_path) if config_path is not None else None
    data = load_toml(config_path) if config_path is not None else {}

    # 1. Sort the file into run-wide keys and stage tables; reject anything else.
    top_file: dict[str, Any] = {}
    tables: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            if key not in _REGISTRY:
                raise ConfigError(
                    f"{src}: unknown table [{key}]{_did_you_mean(key, _REGISTRY)}; stage tables are: "
                    f"{', '.join('[' + n + ']' for n in _REGISTRY)}")
            tables[key] = value
        elif key in _TOP:
            top_file[key] = _check_top(key, value, f"{src}: {key}")
        else:
            raise ConfigError(
                f"{src}: unknown key {key!r}{_did_you_mean(key, list(_TOP))}; top-level keys are: "
                f"{', '.join(_TOP)} (stage settings go in a [stage] table)")

    # 2. Run-wide values: flag > env > file > default.
    def top(key: str, default: Any) -> Any:
        if key in flags:
            v = flags[key]
            return _check_top(key, v, f"--{key.replace('_', '-')}") if key == "stages" else v
        v = _env_top(key, env)
        if v is not None:
            return v
        return top_file.get(key, default)

    stage_names = top("stages", DEFAULT_STAGES)
    for name in stage_names:
        if name not in _REGISTRY:
            where = "--stages" if "stages" in flags else (_TOP["stages"][1] if _TOP["stages"][1] in env else
                                                        f"{src}: stages")
            raise ConfigError(f"{where}: unknown stage {name!r}{_did_you_mean(name, _REGISTRY)}; "
                              f"stages are: {', '.join(_REGISTRY)}")

    # 3. --set overrides, checked like file values.
    set_values: dict[str, dict[str, Any]] = {}
    for item in sets:
        stage, key, value = parse_set(item)
        if stage not in _REGISTRY:
            raise ConfigError(f"--set {item!r}: unknown stage {stage!r}{_did_you_mean(stage, _REGISTRY)}")
        set_values.setdefault(stage, {})[key] = value

    # 4. Stage tables: validated for every available stage (so a typo in an unused table is still
    #    reported); a table of a stage that is not installed is only an error when it is run.
    run_level_rate = top("max_drop_rate", None)
    rate_flag = "max_drop_rate" in flags
    settings = []
    for name in _REGISTRY:
        table = tables.get(name, {})
        sets_here = set_values.get(name, {})
        if name not in stage_names:
            if stage_available(name):
                params = stage_params(name)
                for key, value in {**table, **sets_here}.items():
                    _stage_value(name, params, key, value, src if key in table else "--set")
            continue
        params = stage_params(name)
        file_vals = {k: _stage_value(name, params, k, v, src) for k, v in table.items()}
        set_vals = {k: _stage_value(name, params, k, v, "--set") for k, v in sets_here.items()}
        options: dict[str, Any] = {}
        for key, param in params.items():
            if key in set_vals:
                options[key] = set_vals[key]
                continue
            env_val = _stage_env(name, key, param, env)
            if env_val is not _MISSING:
                options[key] = env_val
            elif key in file_vals:
                options[key] = file_vals[key]
            else:
                options[key] = _default(name, param)
        rate = options.pop("max_drop_rate", None)
        explicit_stage_rate = ("max_drop_rate" in set_vals or "max_drop_rate" in file_vals
                               or _stage_env(name, "max_drop_rate", params.get("max_drop_rate"), env)
                               is not _MISSING) if "max_drop_rate" in params else False
        if rate_flag or not explicit_stage_rate:
            rate = run_level_rate
        settings.append((name, options, rate))
    by_name = {n: (o, r) for n, o, r in settings}
    stages = tuple(StageSettings(n, by_name[n][0], by_name[n][1]) for n in stage_names)
    return PipelineConfig(
        stages=stages,
        **{k: top(k, sp.default) for k, sp in {**specs(ReadConfig), **specs(RunConfig)}.items()},
        clean=top("clean", default_of(PipelineSettings, "clean")),
        source=src,
    )


_MISSING = object()


def _default(stage: str, spec: Spec) -> Any:
    """The setting's default, as the schema declares it."""
    return spec.default


def _stage_value(stage: str, params: Mapping[str, Any], key: str, value: Any, src: str | None) -> Any:
    where = f"{src}: [{stage}] {key}" if src != "--set" else f"--set {stage}.{key}"
    if key in NOT_STAGE_KEYS:
        raise ConfigError(f"{where}: {key} is a run-wide setting; set it at the top level of the config "
                          f"file (or with the `dedupkit run` option), not in [{stage}]")
    if key not in params:
        raise ConfigError(f"{where}: unknown key {key!r} for stage {stage}{_did_you_mean(key, params)}; "
                          f"valid keys are: {', '.join(sorted(params))}")
    return convert_param(params[key], value, where)


def _stage_env(stage: str, key: str, spec: Spec | None, env: Mapping[str, str]) -> Any:
    if spec is None:
        return _MISSING
    for var in (f"DEDUPKIT_{stage.upper()}_{key.upper()}", spec.env):
        if var and var in env:
            return spec.parse(env[var], var)
    return _MISSING


def build_pipeline_stage(name: str, options: Mapping[str, Any]):
    """The stage of a pipeline step; a config may refuse settings that make no sense in a pipeline
    (``check_pipeline()``: semantic's analyze)."""
    from dedupkit.stages.registry import make_config

    config = make_config(name, {k: v for k, v in options.items() if k != "max_drop_rate"})
    check = getattr(config, "check_pipeline", None)
    if callable(check):
        check()
    return build_stage(name, config)


def apply_stage_checks(config: PipelineConfig) -> None:
    """Build every stage once so that its own validation (ranges the options cannot express, e.g.
    a threshold and num_perm that no band split satisfies) fails before any work starts."""
    for s in config.stages:
        try:
            build_pipeline_stage(s.name, s.options)
        except ConfigError as exc:
            where = f"{config.source}: [{s.name}]" if config.source else f"[{s.name}]"
            raise ConfigError(f"{where}: {exc}") from None



def command_defaults(config_path: str | os.PathLike, commands: Sequence[str]) -> dict[str, dict[str, Any]]:
    """A Click ``default_map`` that gives single stage commands the settings of a config file.

    ``dedupkit -c my.toml exact data -o out`` (or ``DEDUPKIT_CONFIG=my.toml``) then takes
    ``[exact]`` and the top-level read settings from the file; Click's own order makes the result
    flag > environment > config > default. ``dedupkit run`` gets the file as its ``--config``.

    Raises:
        ConfigError: as :func:`resolve`, naming the file and the key.
    """
    src = str(config_path)
    data = load_toml(config_path)
    top = {}
    for key, value in data.items():
        if isinstance(value, dict):
            if key not in _REGISTRY:
                raise ConfigError(f"{src}: unknown table [{key}]{_did_you_mean(key, _REGISTRY)}; stage tables "
                                  f"are: {', '.join('[' + n + ']' for n in _REGISTRY)}")
        elif key in _TOP:
            top[key] = _check_top(key, value, f"{src}: {key}")
        else:
            raise ConfigError(f"{src}: unknown key {key!r}{_did_you_mean(key, list(_TOP))}; top-level keys are: "
                              f"{', '.join(_TOP)} (stage settings go in a [stage] table)")
    out: dict[str, dict[str, Any]] = {"run": {"config_path": src}}
    for name in commands:
        if name not in _REGISTRY or not stage_available(name):
            continue
        params = stage_params(name)
        names = set(READ_KEYS) | set(specs(RunConfig)) | {"max_drop_rate"}
        d = {k: v for k, v in top.items() if k in names}
        for key, value in data.get(name, {}).items():
            d[key] = _stage_value(name, params, key, value, src)
        out[name] = d
    return out
