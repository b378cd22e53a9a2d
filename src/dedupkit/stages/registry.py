"""The stage registry: ``{name: (Stage class, Config class)}``.

A stage is a :class:`dedupkit.stages.base.Stage` subclass and a frozen config dataclass whose
fields are its settings (see :mod:`dedupkit.settings`). ``dedupkit run`` and config files find
stages here; the keys of a ``[name]`` table are the config's fields, checked against their
metadata (or, for a plain field, against the type of its default).

Built-in stages are named by ``"module:attr"`` strings, imported only when used, so reading the
registry (``dedupkit --help``, resolving a config) imports no stage code.

Example:
    >>> from dataclasses import dataclass
    >>> from dedupkit.stages.registry import known_stages, register_stage, unregister_stage
    >>> @dataclass(frozen=True)
    ... class UpperConfig:
    ...     min_length: int = 10
    >>> register_stage("upper", "mypkg.stage:UpperStage", UpperConfig)
    >>> "upper" in known_stages()
    True
    >>> unregister_stage("upper")
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, is_dataclass
from typing import Any, Mapping

from dedupkit.errors import ConfigError

# Run-wide keys: a stage may not be named like them.
RESERVED = ("stages", "text_column", "id_column", "batch_size", "on_bad_record", "workers", "engine",
            "ray_address", "max_drop_rate", "clean")


@dataclass(frozen=True)
class StageEntry:
    """A registered stage.

    Attributes:
        name: the stage name (config table name, ``--stages`` item, manifest ``stage`` value).
        stage: the Stage class, or its ``"module:attr"``.
        config: the config dataclass, or its ``"module:attr"``.
    """

    name: str
    stage: Any
    config: Any

    def stage_class(self) -> Any:
        return _load(self.stage)

    def config_class(self) -> Any:
        return _load(self.config)


_REGISTRY: dict[str, StageEntry] = {}


def _load(ref: Any) -> Any:
    if not isinstance(ref, str):
        return ref
    mod, _, attr = ref.partition(":")
    return getattr(importlib.import_module(mod), attr)


def register_stage(name: str, stage: Any, config: Any) -> None:
    """Make a stage available to ``dedupkit run`` and config files.

    Args:
        name: letters, digits and underscores.
        stage: a :class:`dedupkit.stages.base.Stage` subclass (or ``"module:attr"``), built as
            ``stage(config)``; a built-in config (or a subclass) is built by its builder in
            :mod:`dedupkit.stages.builders` instead (``register_stage("exact2", MyExact, ExactConfig)``
            runs a subclass of ExactStage with the exact settings), and a config with a
            ``make_stage(stage)`` method by that method.
        config: a frozen dataclass whose fields (with defaults) are the stage's settings; fields
            made with :func:`dedupkit.settings.setting` carry help, range, choices and env name.

    Raises:
        ConfigError: a bad name, or a config that is not a dataclass.
    """
    if not name or not name.replace("_", "").isalnum():
        raise ConfigError(f"stage name must be letters, digits and underscores, got {name!r}")
    if name in RESERVED:
        raise ConfigError(f"{name!r} cannot name a stage: it is a run-wide config key")
    if not isinstance(config, str) and not is_dataclass(config):
        raise ConfigError(f"the config of stage {name!r} must be a dataclass, got {config!r}")
    _REGISTRY[name] = StageEntry(name, stage, config)


def unregister_stage(name: str) -> None:
    """Remove a stage added with :func:`register_stage` (tests use this)."""
    _REGISTRY.pop(name, None)


register_stage("exact", "dedupkit.stages.exact:ExactStage", "dedupkit.settings:ExactConfig")
register_stage("fuzzy", "dedupkit.stages.fuzzy:FuzzyStage", "dedupkit.settings:FuzzyConfig")
register_stage("semantic", "dedupkit.stages.semantic:SemanticStage", "dedupkit.settings:SemanticConfig")
register_stage("substring", "dedupkit.stages.substring:SubstringStage", "dedupkit.settings:SubstringConfig")


def known_stages() -> tuple[str, ...]:
    """The registered stage names, in registration order."""
    return tuple(_REGISTRY)


def did_you_mean(key: str, choices) -> str:
    close = difflib.get_close_matches(key, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def stage_entry(name: str) -> StageEntry:
    """The entry of a registered stage.

    Raises:
        ConfigError: an unknown stage, naming the known ones.
    """
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ConfigError(f"unknown stage {name!r}; stages are: {', '.join(_REGISTRY)}"
                          f"{did_you_mean(name, _REGISTRY)}")
    return entry


def make_config(name: str, options: Mapping[str, Any]) -> Any:
    """The stage's config object from checked options."""
    return stage_entry(name).config_class()(**options)


def build_stage(name: str, options: Mapping[str, Any] | Any):
    """Construct a stage from its config object or its options (``max_drop_rate`` is left out)."""
    entry = stage_entry(name)
    if isinstance(options, Mapping):
        config = make_config(name, {k: v for k, v in options.items() if k != "max_drop_rate"})
    else:
        config = options
    from dedupkit.stages.builders import builder_of

    build = builder_of(config)
    if build is not None:  # a built-in config: its builder makes the entry's stage class
        return build(config, entry.stage_class())
    make = getattr(config, "make_stage", None)
    return make(entry.stage_class()) if callable(make) else entry.stage_class()(config)
