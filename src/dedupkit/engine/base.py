"""The engine interface every executor implements, and the progress types engines report to.

A stage never asks which engine it got: it calls :meth:`Engine.map` with top-level functions over
small task objects, and reads :attr:`Engine.distributed` and :attr:`Engine.workers` when a
decision depends on where tasks run (a distributed engine keeps pair-sized data off the driver).
The runner owns the engine's lifetime (``with engine: ...``, or :meth:`Engine.close`).

This module imports neither engine, so :mod:`dedupkit.engine.local` and
:mod:`dedupkit.engine.ray` both depend on it and never on each other.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Protocol, Sequence


class Progress(Protocol):
    """One progress bar: ``update(n)`` adds ``n`` done units, ``close()`` ends it."""

    def update(self, n: int = 1) -> None: ...

    def close(self) -> None: ...


class ProgressFactory(Protocol):
    """Makes a :class:`Progress` for ``total`` units (``None``: not known in advance) of a step.

    ``unit`` names what is counted: ``"doc"`` when the tasks know how many documents they hold
    (the scan, embedding), else ``"task"``. The CLI passes a tqdm factory; the library default is
    :func:`no_progress`.
    """

    def __call__(self, total: int | None, desc: str, unit: str = "task") -> Progress: ...


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def no_progress(total: int | None, desc: str, unit: str = "task") -> Progress:
    """A progress factory that shows nothing (the library's default)."""
    return _NoProgress()


class Engine(ABC):
    """Runs ``fn(task)`` for every task and returns the results in task order.

    Subclasses set :attr:`name` and :attr:`distributed` and implement :meth:`map` and
    :meth:`close`. The results never depend on the engine or on ``workers``; tasks are top-level
    functions over picklable task objects that talk through files (STYLE.md).

    Attributes:
        name: what ``--engine`` calls it (for logs and summaries only, never for decisions).
        distributed: tasks may run on other machines, and the driver should hold no more than
            per-document arrays (no pair-sized data).
        workers: the most tasks that run at once.
        progress: the progress-bar factory :meth:`map` reports to.

    Example:
        >>> from dedupkit.engine import get_engine
        >>> with get_engine("local", workers=1) as engine:
        ...     engine.map(abs, [-1, 2, -3])
        [1, 2, 3]
    """

    name: str = ""
    distributed: bool = False
    workers: int = 1
    progress: ProgressFactory = no_progress

    @abstractmethod
    def map(self, fn: Callable[[Any], Any], tasks: Sequence[Any], desc: str = "") -> list[Any]:
        """``[fn(t) for t in tasks]``, run by this engine; the first task error is raised."""

    @abstractmethod
    def close(self, wait: bool = True) -> None:
        """Release the workers this engine started; a later :meth:`map` starts them again.

        ``wait=False`` returns at once and lets idle workers go in the background. Closing twice is
        harmless.
        """

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
