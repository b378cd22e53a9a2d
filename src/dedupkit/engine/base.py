"""The engine interface every executor implements, and the progress types engines report to.

A stage never asks which engine it got: it calls :meth:`Engine.map` with top-level functions over
small task objects, and reads :attr:`Engine.distributed` and :attr:`Engine.workers` when a
decision depends on where tasks run (a distributed engine keeps pair-sized data off the driver).
The runner owns the engine's lifetime (``with engine: ...``, or :meth:`Engine.close`).

This module imports neither engine, so :mod:`dedupkit.engine.local` and
:mod:`dedupkit.engine.ray` both depend on it and never on each other.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import Any, Callable, Protocol, Sequence

from dedupkit import settings as _S


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


# The running task's progress hook: set by the engine around each task (in this process, or in a
# worker process by its initializer); None where nobody listens (a Ray worker, a direct call).
_reporter: Callable[[int], None] | None = None


def report_progress(n: int) -> None:
    """Tell the progress bar that the running task has done ``n`` more units (documents).

    Tasks call this as they go (the scan after each batch), so a run of one big shard shows
    documents moving, not ``0/1 task``. A no-op outside :meth:`Engine.map` and on engines that do
    not relay it (Ray: its bars move when a task finishes).
    """
    hook = _reporter
    if hook is not None and n > 0:
        hook(n)


def _make_bar(factory: ProgressFactory, total: int | None, desc: str, unit: str) -> Progress:
    """``factory(total, desc, unit)``; a factory of the older ``(total, desc)`` form still works."""
    try:
        inspect.signature(factory).bind(total, desc, unit)
    except TypeError:
        return factory(total, desc)  # type: ignore[call-arg]
    except ValueError:  # no signature to read: assume the current form
        pass
    return factory(total, desc, unit)


class ProgressTracker:
    """One :meth:`Engine.map`'s bar: counts documents when the tasks' ``sizes`` are given, else tasks.

    ``sizes[i]`` is how many documents task ``i`` holds (``None``: not known before it runs; the
    bar then has no total, and no ETA, but still counts and shows the rate). In-task reports
    (:func:`report_progress`) move the bar while a task runs; when it finishes, the bar gets the
    rest of its size, so it never counts a task twice or past its size.
    """

    def __init__(self, factory: ProgressFactory, n_tasks: int, desc: str,
                 sizes: Sequence[int | None] | None = None) -> None:
        self.sizes = list(sizes) if sizes is not None else None
        if self.sizes is None:
            self.bar = _make_bar(factory, n_tasks, desc, "task")
        else:
            known = all(s is not None for s in self.sizes)
            total = int(sum(s for s in self.sizes if s is not None)) if known else None
            self.bar = _make_bar(factory, total, desc, "doc")
        self._reported: dict[int, int] = {}
        self._done: set[int] = set()

    def report(self, i: int, n: int) -> None:
        """Task ``i`` did ``n`` more documents (ignored once it finished, or when counting tasks)."""
        if self.sizes is None or i in self._done:
            return
        have = self._reported.get(i, 0)
        size = self.sizes[i]
        if size is not None:
            n = min(n, size - have)
        if n > 0:
            self._reported[i] = have + n
            self.bar.update(n)

    def finish(self, i: int) -> None:
        """Task ``i`` is done."""
        self._done.add(i)
        if self.sizes is None:
            self.bar.update(1)
            return
        size, have = self.sizes[i], self._reported.pop(i, 0)
        if size is not None and size > have:
            self.bar.update(size - have)

    def close(self) -> None:
        self.bar.close()


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
    workers: int = _S.RunConfig.workers
    progress: ProgressFactory = no_progress

    @abstractmethod
    def map(self, fn: Callable[[Any], Any], tasks: Sequence[Any], desc: str = "",
            sizes: Sequence[int | None] | None = None) -> list[Any]:
        """``[fn(t) for t in tasks]``, run by this engine; the first task error is raised.

        Args:
            fn: a top-level (picklable) function of one task.
            tasks: the tasks.
            desc: the progress bar's label.
            sizes: documents per task, when known: the bar then counts documents (see
                :class:`ProgressTracker`), else tasks.
        """

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
