"""Executors that run per-shard stage functions: local processes, or Ray (``dedupkit-corpus[ray]``).

:class:`~dedupkit.engine.base.Engine` is the interface; :func:`get_engine` builds one by name.
"""

from __future__ import annotations

from dedupkit import settings as _S
from dedupkit.engine.base import Engine, Progress, ProgressFactory, no_progress
from dedupkit.engine.local import LocalEngine
from dedupkit.errors import ConfigError

__all__ = ["Engine", "LocalEngine", "Progress", "ProgressFactory", "get_engine", "no_progress"]


def get_engine(name: str = _S.RunConfig.engine, workers: int = _S.RunConfig.workers,
               progress: ProgressFactory = no_progress, ray_address: str | None = None) -> Engine:
    """Build the engine named by ``--engine`` (``local`` or ``ray``).

    Raises:
        ConfigError: an unknown name or bad settings.
        MissingExtraError: ``ray`` without Ray installed.

    Example:
        >>> with get_engine("local", workers=1) as engine:
        ...     engine.map(str, [1, 2])
        ['1', '2']
    """
    if name == "local":
        return LocalEngine(workers=workers, progress=progress)
    if name == "ray":
        from dedupkit.engine.ray import RayEngine  # Ray is imported only when used

        return RayEngine(workers=workers, progress=progress, address=ray_address)
    raise ConfigError(f"unknown engine {name!r}; choose local or ray")
