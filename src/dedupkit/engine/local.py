"""The local engine: per-shard tasks in worker processes, results in task order."""

from __future__ import annotations

import contextlib
import functools
import multiprocessing as mp
import os
import signal
import sys
import queue as queue_mod
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Sequence

from dedupkit import settings as _S
from dedupkit.engine import base
from dedupkit.engine.base import Engine, Progress, ProgressFactory, ProgressTracker, no_progress
from dedupkit.errors import ConfigError, DedupkitError

__all__ = ["LocalEngine", "exit_with_parent", "Progress", "ProgressFactory", "no_progress"]


class LocalEngine(Engine):
    """Run ``fn(task)`` for every task on this machine.

    ``workers=1`` runs in the calling process (no pickling, easiest to debug); more workers use a
    spawn-context process pool (fork after pyarrow has started threads can deadlock). Results come
    back in task order whatever order the tasks finish in, so output never depends on ``workers``.

    The pool is started on the first parallel ``map`` and reused by later ones (a stage's scan,
    then its global steps), because each spawn re-imports numpy and pyarrow in every worker; call
    :meth:`close` (the runner does) when the run is over.
    """

    name = "local"
    distributed = False

    def __init__(self, workers: int = _S.RunConfig.workers, progress: ProgressFactory = no_progress) -> None:
        if workers < 1:
            raise ConfigError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self.progress = progress
        self._pool: ProcessPoolExecutor | None = None
        self._reports: Any = None  # the pool's queue of (task index, documents done) from workers

    def _get_pool(self) -> ProcessPoolExecutor:
        global _warm
        if self._pool is None and _warm is not None and _warm[0] == self.workers:
            _, self._pool, self._reports = _warm  # started by prestart() while the command planned
            _warm = None
        if self._pool is None:
            self._pool, self._reports = _new_pool(self.workers)
        return self._pool

    def _drain(self, tracker: ProgressTracker) -> None:
        """Apply the workers' in-task progress reports that have arrived."""
        while True:
            try:
                i, n = self._reports.get_nowait()
            except (queue_mod.Empty, OSError, ValueError):
                return
            tracker.report(i, n)

    def close(self, wait: bool = True) -> None:
        """Stop the worker processes (a later ``map`` starts new ones).

        ``wait=False`` returns at once while idle workers exit in the background (the executor's
        threads still join them before the interpreter exits).

        The workers are idle here (every task's result is in), and they are terminated rather than
        sent the executor's stop sentinels: a worker killed from outside while idle (the OOM
        killer) dies holding the task queue's read lock, the other workers then never read their
        sentinel, and the interpreter's exit, which joins them, would hang for ever.
        """
        pool, self._pool = self._pool, None
        if pool is not None:
            _stop(pool, join=wait)

    def _abort(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            _stop(pool)

    def map(self, fn: Callable[[Any], Any], tasks: Sequence[Any], desc: str = "",
            sizes: Sequence[int | None] | None = None) -> list[Any]:
        tracker = ProgressTracker(self.progress, len(tasks), desc, sizes)
        try:
            if self.workers == 1 or len(tasks) <= 1:
                out = []
                previous_hook = base._reporter
                try:
                    for i, t in enumerate(tasks):
                        base._reporter = lambda n, i=i: tracker.report(i, n)
                        out.append(fn(t))
                        tracker.finish(i)
                finally:
                    base._reporter = previous_hook
                return out
            results: list[Any] = [None] * len(tasks)
            pool = self._get_pool()
            # Workers start (on submit) with SIGINT ignored, a disposition that survives exec:
            # Ctrl-C reaches the whole process group, and only the main process should react
            # (no worker tracebacks); the main process then stops the workers itself.
            pending: dict[Any, int] = {}
            try:
                # inside the try: a worker that died since the last map (or while these are
                # submitted) has broken the pool, and submit() itself raises BrokenProcessPool
                with _spawning():
                    for i, t in enumerate(tasks):
                        pending[pool.submit(_run_task, fn, i, t)] = i
                while pending:
                    # wake up now and then for the workers' in-task reports
                    done, _ = wait(pending, timeout=0.5 if sizes is not None else None,
                                   return_when=FIRST_COMPLETED)
                    if sizes is not None:
                        self._drain(tracker)
                    for fut in done:
                        i = pending.pop(fut)
                        results[i] = fut.result()
                        tracker.finish(i)
            except BrokenProcessPool as exc:
                self._abort()
                raise DedupkitError(
                    "a worker process died unexpectedly (killed by a signal or the out-of-memory "
                    "killer); finished tasks are kept: rerun the same command to resume, with fewer "
                    "--workers or a smaller --batch-size if memory ran out"
                ) from exc
            except BaseException:
                # An error in one task, or Ctrl-C: stop now. Stopped tasks leave no completion
                # marker, so a rerun redoes exactly them.
                self._abort()
                raise
            return results
        finally:
            tracker.close()


def _stop(pool: ProcessPoolExecutor, join: bool = True) -> None:
    """Stop a pool now: its workers terminated and (with ``join``) waited for, killed if one
    outlives a short wait."""
    # Take the workers before shutdown(), which forgets them (it sets _processes to None).
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        # SIGKILL when nothing waits: the executor's exit-time join must find them dead, even one
        # that is stopped (SIGTERM would wait until it is continued). A worker has no SIGTERM
        # handler, so the two end it the same way.
        if join:
            proc.terminate()
        else:
            proc.kill()
    if not join:
        return  # the executor's thread reaps them
    # Wait (briefly) until they are gone: a worker still starting up would otherwise unpickle
    # the pool's queues after this process has exited and removed their semaphores, and print
    # a traceback after the one-line message.
    for proc in procs:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)


def _new_pool(workers: int) -> tuple[ProcessPoolExecutor, Any]:
    ctx = mp.get_context("spawn")
    reports = ctx.Queue()
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                               initargs=(os.getpid(), reports))
    return pool, reports


_warm: tuple[int, ProcessPoolExecutor, Any] | None = None  # a pool prestart() began, not yet used


def prestart(workers: int) -> None:
    """Start the worker processes of the next ``LocalEngine(workers)`` now, in the background.

    A spawned worker spends ~0.3 CPU s importing Python, numpy, pyarrow and dedupkit before its
    first task; the CLI calls this as soon as it has parsed ``--workers`` (for an input big enough
    to be split), so that start-up overlaps the main process's own imports, discovery and task
    planning instead of following them. The first engine of that size adopts the pool; an unused
    one stops when the process exits.
    """
    global _warm
    if workers < 2 or _warm is not None:
        return
    pool, reports = _new_pool(workers)
    _warm = (workers, pool, reports)
    try:
        with _spawning():
            for _ in range(workers):  # a process starts per submitted call while none is idle
                pool.submit(_warm_up)
    except BrokenProcessPool:  # a worker already died (killed): the engine starts a new pool
        discard_prestarted()


def discard_prestarted() -> None:
    """Stop a pool that :func:`prestart` began and no engine took (the command failed or was
    interrupted first): its workers terminated and joined before this process exits."""
    global _warm
    warm, _warm = _warm, None
    if warm is not None:
        _stop(warm[1])


@contextlib.contextmanager
def _spawning():
    """Around submits that may start worker processes: they start with SIGINT ignored, a
    disposition that survives exec (a Ctrl-C in this short window is not seen by this process
    either: the run goes on, as if it came a moment before the command started)."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _warm_up() -> None:
    """A warm-up call: the modules every scan task needs, imported before the first task."""
    import importlib

    importlib.import_module("dedupkit.scan")  # numpy, pyarrow, the readers


def _init_worker(parent_pid: int, reports: Any = None) -> None:
    from dedupkit.fastart import skip_pandas_probe

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # already ignored since exec; keep it so
    skip_pandas_probe()  # 0.2 s less per worker (dedupkit.fastart)
    keep_freed_memory()
    exit_with_parent(parent_pid)
    if reports is not None:
        base._reporter = lambda n: reports.put((_current_task, n))


_current_task = -1  # the index (in its map) of the task this worker runs


def _run_task(fn: Callable[[Any], Any], i: int, task: Any) -> Any:
    """A pool worker's call: ``fn(task)``, with ``i`` tagging its progress reports."""
    global _current_task
    _current_task = i
    try:
        return fn(task)
    finally:
        release_memory()


def release_memory() -> None:
    """Give the memory a finished task freed back to the system: Arrow's pool keeps freed blocks,
    glibc's malloc keeps its heap top, so a worker that ran a big scan task held ~200 MB it no
    longer used through every later step (the fuzzy stage's verification at 1M documents)."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    lib = _libc()
    if lib is not None:
        lib.malloc_trim(0)


def keep_freed_memory() -> None:
    """Worker start: glibc's malloc keeps what a task frees for the task's next allocations.

    By default blocks above a (dynamic) threshold are mapped afresh and the heap's top is given back
    above 128 KiB, so the per-batch arrays of a scan (a few MB each, allocated and freed for every
    batch) came from new pages each time, which the kernel zeroes (transparent huge pages): 13% of a
    1M-document fuzzy run's CPU, ~25% of a scan task's. Blocks up to 32 MiB now come from the heap
    and its top is kept; :func:`release_memory` gives it back after each task.
    """
    lib = _libc()
    if lib is not None:
        lib.mallopt(-3, 32 * 2**20)  # M_MMAP_THRESHOLD
        lib.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD


@functools.lru_cache(maxsize=1)
def _libc():
    """glibc through ctypes, or None (not Linux with glibc: nothing to tune)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        lib = ctypes.CDLL("libc.so.6")
        lib.malloc_trim, lib.mallopt  # noqa: B018 - both exist in glibc only
        return lib
    except (OSError, AttributeError):  # musl and others
        return None


def exit_with_parent(parent_pid: int, interval: float = 0.2) -> None:
    """Worker initializer: exit as soon as the main process is gone.

    A pool worker blocks on a task queue whose write end it holds itself, so it never sees EOF:
    without this, SIGKILL of the main process (the OOM killer, a cluster scheduler) leaves every
    worker running forever, holding memory and possibly writing into an output folder that a
    rerun is using.
    """
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval)
        os._exit(70)

    threading.Thread(target=watch, name="dedupkit-exit-with-parent", daemon=True).start()
