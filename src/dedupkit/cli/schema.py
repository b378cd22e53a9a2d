"""Click options generated from the settings schema (:mod:`dedupkit.settings`).

Each field of a config dataclass becomes one option: ``--num-perm`` for ``num_perm``, with the
field's default, help, range or choices, metavar and environment variable. Nothing about a setting
is written here, so the CLI cannot drift from the library's defaults and checks.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import click

from dedupkit.settings import Spec, specs


def click_type(spec: Spec) -> Any:
    """The Click parameter type of a setting."""
    if spec.kind == "choice":
        return click.Choice(list(spec.choices))
    if spec.kind == "path":
        return click.Path(file_okay=False)
    if spec.kind in ("int", "float"):
        if spec.lo is None and spec.hi is None:
            return click.INT if spec.kind == "int" else click.FLOAT
        cls = click.IntRange if spec.kind == "int" else click.FloatRange
        return cls(spec.lo, spec.hi, min_open=spec.min_open)
    return None  # str: Click's default STRING


def option(spec: Spec, *, help: str | None = None, default: Any = ..., env: bool = True,
           prefix: str = "") -> Callable:
    """The ``click.option`` decorator of one setting.

    Args:
        help: replaces the schema's help (a command whose wording differs, e.g. ``audit --workers``).
        default: replaces the default (``dedupkit run`` leaves every option unset: None).
        env: attach the setting's environment variable.
        prefix: put before the name (``eval_`` makes ``--eval-ngram`` of ``ngram``).
    """
    kw: dict[str, Any] = {"help": spec.help if help is None else help}
    if spec.kind == "flag":
        kw["is_flag"] = True
    else:
        kw["default"] = spec.default if default is ... else default
        kw["type"] = click_type(spec)
        if kw["default"] is not None:
            kw["show_default"] = True
    if spec.metavar:
        kw["metavar"] = spec.metavar
    if env and spec.env:
        kw["envvar"] = spec.env
    return click.option("--" + (prefix + spec.name).replace("_", "-"), **kw)


def config_options(cls: Any, *, only: Iterable[str] | None = None, exclude: Iterable[str] = (),
                   help: Mapping[str, str] | None = None, unset: bool = False,
                   env: bool = True, prefix: str = "", name_defaults: bool = True) -> Callable[[Callable], Callable]:
    """Add one option per setting of a config class, in field order.

    Args:
        cls: a config dataclass (:mod:`dedupkit.settings`, or a third-party one).
        only, exclude: which fields.
        help: per-field help replacing the schema's.
        unset: default None for every option (the caller fills in the schema's defaults later; the
            help names them).
        env: attach the settings' environment variables.
        prefix: put before every name (``--eval-ngram``).
        name_defaults: with ``unset``, append the schema's default to the help.

    Example:
        >>> import click
        >>> from dedupkit.cli.schema import config_options
        >>> from dedupkit.settings import FuzzyConfig
        >>> @click.command()
        ... @config_options(FuzzyConfig, only=["threshold"])
        ... def cmd(threshold): ...
        >>> [p.name for p in cmd.params]
        ['threshold']
    """
    chosen = [s for n, s in specs(cls).items()
              if (only is None or n in set(only)) and n not in set(exclude)]
    if only is not None:
        order = list(only)
        chosen.sort(key=lambda s: order.index(s.name))
    help = dict(help or {})
    if unset and name_defaults:  # the default is filled in later: --help names it
        help = {s.name: help[s.name] if s.name in help else s.help + (
            "" if s.default is None or s.kind == "flag" else f" [default: {s.default}]") for s in chosen}

    def decorate(f: Callable) -> Callable:
        for spec in reversed(chosen):
            f = option(spec, help=help.get(spec.name), default=None if unset else ..., env=env, prefix=prefix)(f)
        return f

    return decorate
