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

The set of valid keys of a stage table is read from the stage command's Click options, so a stage
that lands later (or a third-party one, see :func:`register_stage`) is configurable without
changes here. Unknown keys, wrong types and out-of-range values raise :class:`ConfigError` naming
the key and the file.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import tomllib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, Sequence

from dedupkit.errors import ConfigError

# Options of a stage command that are run-wide in a pipeline (set at the top level of the file or
# by `dedupkit run` itself), never in a stage table.
READ_KEYS = ("text_column", "id_column", "batch_size", "on_bad_record")
RUN_KEYS = ("stages", "workers", "engine", "ray_address", "max_drop_rate", "clean")
NOT_STAGE_KEYS = frozenset(READ_KEYS + ("inputs", "output", "overwrite", "quiet", "as_json", "skip",
                                        "workers", "engine", "ray_address", "config", "json"))
DEFAULT_STAGES = ("exact", "fuzzy")
ENGINES = ("local", "ray")
BAD_RECORD_MODES = ("fail", "skip")


# --------------------------------------------------------------------------------------------
# Stage registry


@dataclass(frozen=True)
class StageEntry:
    """How ``dedupkit run`` finds a stage.

    Attributes:
        name: the stage name (config table name, ``--stages`` item, manifest ``stage`` value).
        command: ``"module:attr"`` of the stage's Click command; its options define the keys of the
            stage's config table, their types, ranges, defaults and environment variables.
        build: a callable, or the ``"module:attr"`` of one, taking the stage options as keyword
            arguments (without ``max_drop_rate``) and returning a :class:`dedupkit.stages.base.Stage`.
    """

    name: str
    command: str
    build: Any


_REGISTRY: dict[str, StageEntry] = {}


def register_stage(name: str, command: str, build: Any) -> None:
    """Make a stage available to ``dedupkit run`` and config files.

    Modules are imported only when the stage is used, so registering costs nothing.

    Example:
        >>> register_stage("mystage", "mypkg.cli:mystage", "mypkg.stage:build")  # doctest: +SKIP
    """
    if not name or not name.replace("_", "").isalnum():
        raise ConfigError(f"stage name must be letters, digits and underscores, got {name!r}")
    if name in READ_KEYS or name in RUN_KEYS:
        raise ConfigError(f"{name!r} cannot name a stage: it is a run-wide config key")
    _REGISTRY[name] = StageEntry(name, command, build)


def unregister_stage(name: str) -> None:
    """Remove a stage added with :func:`register_stage` (tests use this)."""
    _REGISTRY.pop(name, None)


register_stage("exact", "dedupkit.cli.exact:exact", "dedupkit.pipeline:build_exact")
register_stage("fuzzy", "dedupkit.cli.fuzzy:fuzzy", "dedupkit.pipeline:build_fuzzy")
register_stage("semantic", "dedupkit.cli.semantic:semantic", "dedupkit.pipeline:build_semantic")
register_stage("substring", "dedupkit.cli.substring:substring", "dedupkit.stages.substring:build_substring")


def known_stages() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def _load(ref: str):
    mod, _, attr = ref.partition(":")
    return getattr(importlib.import_module(mod), attr)


def stage_available(name: str) -> bool:
    """True when the stage is registered and its command module is importable."""
    entry = _REGISTRY.get(name)
    if entry is None:
        return False
    try:
        return importlib.util.find_spec(entry.command.partition(":")[0]) is not None
    except (ImportError, ValueError):
        return False


def stage_entry(name: str) -> StageEntry:
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ConfigError(f"unknown stage {name!r}; stages are: {', '.join(_REGISTRY)}"
                          f"{_did_you_mean(name, _REGISTRY)}")
    if not stage_available(name):
        raise ConfigError(f"stage {name!r} is not available in this installation of dedupkit "
                          f"(module {entry.command.partition(':')[0]} is missing); choose --stages from: "
                          f"{', '.join(n for n in _REGISTRY if stage_available(n))}")
    return entry


def stage_params(name: str) -> dict[str, Any]:
    """The Click options of a stage command that a stage table may set, by key."""
    cmd = _load(stage_entry(name).command)
    return {p.name: p for p in cmd.params
            if p.name and p.name not in NOT_STAGE_KEYS and not getattr(p, "hidden", False)
            and p.param_type_name == "option"}


def build_stage(name: str, options: Mapping[str, Any]):
    """Construct the stage object from resolved options (``max_drop_rate`` is left out)."""
    build = stage_entry(name).build
    builder = build if callable(build) else _load(build)
    kwargs = {k: v for k, v in options.items() if k != "max_drop_rate"}
    return builder(**kwargs)


# --------------------------------------------------------------------------------------------
# Values


def _did_you_mean(key: str, choices) -> str:
    close = difflib.get_close_matches(key, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_name(v: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "table"}.get(type(v), type(v).__name__)


def convert_param(param, value: Any, where: str) -> Any:
    """Check a TOML / env / --set value against a Click option and convert it.

    Raises:
        ConfigError: naming ``where`` (e.g. ``"configs/web.toml: [fuzzy] threshold"``), the value,
            and what is expected.
    """
    import click

    ptype = param.type
    kind = getattr(ptype, "name", "")
    multiple = getattr(param, "multiple", False)
    is_flag = getattr(param, "is_flag", False)
    if value is None:
        return None
    if is_flag:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} = {value!r}: expected true or false, got {_type_name(value)}")
        return value
    if multiple:
        items = value if isinstance(value, list) else [value]
    else:
        if isinstance(value, list):
            # Comma-separated string options (normalize steps, ...) may be written as arrays.
            if kind in ("text", "choice") and all(isinstance(v, str) for v in value):
                value = ",".join(value)
            else:
                raise ConfigError(f"{where} = {value!r}: expected a single {kind or 'value'}, got an array")
        items = [value]
    checked = []
    for v in items:
        if isinstance(v, (dict, list)):
            raise ConfigError(f"{where} = {value!r}: expected a {kind or 'value'}, got {_type_name(v)}")
        if kind in ("integer", "integer range") and (isinstance(v, bool) or isinstance(v, float)):
            raise ConfigError(f"{where} = {v!r}: expected an integer, got {_type_name(v)}")
        if kind in ("integer", "integer range", "float", "float range") and isinstance(v, str):
            raise ConfigError(f"{where} = {v!r}: expected a number, got a string (write it without quotes)")
        if kind in ("float", "float range") and isinstance(v, bool):
            raise ConfigError(f"{where} = {v!r}: expected a number, got {_type_name(v)}")
        if kind == "text" and isinstance(v, (int, float)) and not isinstance(v, bool):
            v = str(v)  # free-text options that hold numbers (semantic's eps = 0.07) may be written bare
        if kind in ("text", "choice", "path", "directory", "file") and not isinstance(v, str):
            raise ConfigError(f"{where} = {v!r}: expected a string, got {_type_name(v)} (quote it)")
        if kind == "boolean" and not isinstance(v, bool):
            raise ConfigError(f"{where} = {v!r}: expected true or false, got {_type_name(v)}")
        try:
            checked.append(ptype.convert(v, param, None))
        except click.BadParameter as exc:
            raise ConfigError(f"{where} = {v!r}: {exc.message}") from None
    return tuple(checked) if multiple else checked[0]


def _from_env_string(param, raw: str, where: str) -> Any:
    """Environment values are strings: let the option's type parse them, with our message."""
    import click

    if getattr(param, "is_flag", False):
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{where}={raw!r}: expected true or false")
    if getattr(param, "multiple", False):
        parts = [p for p in raw.replace(",", " ").split() if p]
        return tuple(_from_env_string_one(param, p, where) for p in parts)
    try:
        return param.type.convert(raw, param, None)
    except click.BadParameter as exc:
        raise ConfigError(f"{where}={raw!r}: {exc.message}") from None


def _from_env_string_one(param, raw: str, where: str) -> Any:
    import click

    try:
        return param.type.convert(raw, param, None)
    except click.BadParameter as exc:
        raise ConfigError(f"{where}={raw!r}: {exc.message}") from None


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
    text_column: str = "text"
    id_column: str | None = None
    batch_size: int = 8192
    on_bad_record: str = "fail"
    workers: int = 1
    engine: str = "local"
    ray_address: str | None = None
    clean: str | None = None
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


# Run-wide keys: (TOML type check, environment variable)
_TOP: dict[str, tuple[str, str]] = {
    "stages": ("stages", "DEDUPKIT_STAGES"),
    "text_column": ("str", "DEDUPKIT_TEXT_COLUMN"),
    "id_column": ("str", "DEDUPKIT_ID_COLUMN"),
    "batch_size": ("int", "DEDUPKIT_BATCH_SIZE"),
    "on_bad_record": ("str", "DEDUPKIT_ON_BAD_RECORD"),
    "workers": ("int", "DEDUPKIT_WORKERS"),
    "engine": ("str", "DEDUPKIT_ENGINE"),
    "ray_address": ("str", "DEDUPKIT_RAY_ADDRESS"),
    "max_drop_rate": ("rate", "DEDUPKIT_MAX_DROP_RATE"),
    "clean": ("str", "DEDUPKIT_CLEAN"),
}


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
        >>> cfg = resolve("configs/default.toml", flags={"workers": 2})  # doctest: +SKIP
        >>> [s.name for s in cfg.stages]
        ['exact', 'fuzzy']
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
        text_column=top("text_column", "text"),
        id_column=top("id_column", None),
        batch_size=top("batch_size", 8192),
        on_bad_record=top("on_bad_record", "fail"),
        workers=top("workers", 1),
        engine=top("engine", "local"),
        ray_address=top("ray_address", None),
        clean=top("clean", None),
        source=src,
    )


_MISSING = object()


def _default(stage: str, param) -> Any:
    """The option's default as Click itself computes it (flags: False, multiple: a tuple)."""
    import click

    ctx = click.Context(_load(stage_entry(stage).command))
    value = param.get_default(ctx, call=True)
    if getattr(param, "multiple", False):
        return tuple(value or ())
    if value is not None:
        value = param.type_cast_value(ctx, value)
    return value


def _stage_value(stage: str, params: Mapping[str, Any], key: str, value: Any, src: str | None) -> Any:
    where = f"{src}: [{stage}] {key}" if src != "--set" else f"--set {stage}.{key}"
    if key in NOT_STAGE_KEYS:
        raise ConfigError(f"{where}: {key} is a run-wide setting; set it at the top level of the config "
                          f"file (or with the `dedupkit run` option), not in [{stage}]")
    if key not in params:
        raise ConfigError(f"{where}: unknown key {key!r} for stage {stage}{_did_you_mean(key, params)}; "
                          f"valid keys are: {', '.join(sorted(params))}")
    return convert_param(params[key], value, where)


def _stage_env(stage: str, key: str, param, env: Mapping[str, str]) -> Any:
    if param is None:
        return _MISSING
    var = f"DEDUPKIT_{stage.upper()}_{key.upper()}"
    if var in env:
        return _from_env_string(param, env[var], var)
    own = getattr(param, "envvar", None)
    for v in ([own] if isinstance(own, str) else list(own or [])):
        if v in env:
            return _from_env_string(param, env[v], v)
    return _MISSING


def apply_stage_checks(config: PipelineConfig) -> None:
    """Build every stage once so that its own validation (ranges the options cannot express, e.g.
    a threshold and num_perm that no band split satisfies) fails before any work starts."""
    for s in config.stages:
        try:
            build_stage(s.name, s.options)
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
        cmd = _load(stage_entry(name).command)
        names = {p.name for p in cmd.params}
        d = {k: v for k, v in top.items() if k in names and k not in ("stages", "clean")}
        for key, value in data.get(name, {}).items():
            d[key] = _stage_value(name, params, key, value, src)
        out[name] = d
    return out
