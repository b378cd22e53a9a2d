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
    process pool whose workers are forked from a fork server (:func:`_new_pool`), never from this
    process (a fork after pyarrow has started threads can deadlock). Results come back in task order
    whatever order the tasks finish in, so output never depends on ``workers``.

    The pool is started on the first parallel ``map`` and reused by later ones (a stage's scan,
    then its global steps); call :meth:`close` (the runner does) when the run is over.
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
            if self._pool._broken:  # a worker died while it started (killed): start a new pool
                self._abort()
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
    starter = getattr(pool, "_dedupkit_starter", None)
    if starter is not None:  # prestart()'s thread, still starting workers: let it finish first
        starter.join(timeout=60)
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


def _context() -> Any:
    """The pool's start method: a fork server where there is one (Linux, macOS), else spawn.

    A spawned worker starts a new interpreter and imports numpy, pyarrow and dedupkit (~0.3 CPU s
    each, on the cores the main process needs for its own start-up); the fork server does that once
    (:mod:`dedupkit.engine.preload`) and forks every worker from there, ready in milliseconds. It is
    itself started as a new interpreter, so it holds none of this process's threads or locks, and
    it stays single-threaded: each fork is as safe as a fork before any thread exists.
    """
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    from multiprocessing import forkserver

    # Started (once per process) with SIGINT ignored, a disposition it hands to every worker it
    # forks (see _spawning); preloading what every worker needs. A server already running (started
    # by someone else) is used as it is.
    forkserver.set_forkserver_preload([_PRELOAD])
    server = getattr(forkserver, "_forkserver", None)
    ours = server is not None and getattr(server, "_forkserver_pid", 0) is None
    with _spawning():
        forkserver.ensure_running()
    if ours and not _ENDING:
        import atexit

        atexit.register(_end_fork_server)
        _ENDING.append(True)
    return mp.get_context("forkserver")


_PRELOAD = "dedupkit.engine.preload"
_ENDING: list[bool] = []


def _end_fork_server() -> None:
    """At exit: the fork server this process started is killed and reaped.

    Left alone it would exit by itself once this process and its workers are gone, after the
    interpreter's teardown of numpy and pyarrow (~0.2 s); reaped here, no process outlives the
    command, and the CPU time of the server and of the workers it reaped counts in this process's
    (what ``time`` and the benchmarks measure). Its workers have been stopped and joined by then
    (the pool's own exit handler, which runs first).
    """
    from multiprocessing import forkserver

    server = forkserver._forkserver
    with server._lock:
        pid, server._forkserver_pid = server._forkserver_pid, None
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except OSError:  # already gone (reaped)
            pass
        try:
            os.close(server._forkserver_alive_fd)
        except (OSError, TypeError):
            pass
        server._forkserver_alive_fd = server._forkserver_address = None


def _new_pool(workers: int) -> tuple[ProcessPoolExecutor, Any]:
    ctx = _context()
    reports = ctx.Queue()
    # this process's environment now, not the fork server's from when it started (credentials a
    # library caller set since, for example), as a spawned worker would have it
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                               initargs=(os.getpid(), reports, dict(os.environ)))
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
    if pool._mp_context.get_start_method() != "forkserver":
        try:
            with _spawning():  # spawned workers take SIGINT's disposition from this process
                _start_workers(pool, workers)
        except BrokenProcessPool:  # a worker already died (killed): the engine starts a new pool
            discard_prestarted()
        return
    # The fork server answers a worker's start only once it has imported what workers need
    # (~0.3 s): a thread waits for that, while this process goes on with its own imports and
    # planning. (Workers forked by the server ignore SIGINT as it does: no _spawning here.)
    import threading

    pool._dedupkit_starter = threading.Thread(target=_start_workers, args=(pool, workers, True),
                                              name="dedupkit-prestart", daemon=True)
    pool._dedupkit_starter.start()


def _start_workers(pool: ProcessPoolExecutor, workers: int, quiet: bool = False) -> None:
    """Start the pool's workers (a process starts per submitted call while none is idle), each
    importing what a scan task needs. ``quiet``: a pool that broke or was stopped meanwhile is
    left as it is (the engine's next map reports it, or starts a new pool)."""
    try:
        for _ in range(workers):
            pool.submit(_warm_up)
    except (BrokenProcessPool, RuntimeError, OSError, EOFError):
        if not quiet:
            raise


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


def _init_worker(parent_pid: int, reports: Any = None, environ: dict[str, str] | None = None) -> None:
    from dedupkit.fastart import skip_pandas_probe

    if environ is not None and environ != os.environ:
        os.environ.clear()
        os.environ.update(environ)

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

    parent = mp.parent_process()

    def watch() -> None:
        if parent is not None and parent.pid == parent_pid:
            # A pipe from the main process, at EOF once it is gone: the one way to see its end from
            # a worker forked by the fork server, whose parent process is that server.
            parent.join()
        else:
            while os.getppid() == parent_pid:
                time.sleep(interval)
        os._exit(70)

    threading.Thread(target=watch, name="dedupkit-exit-with-parent", daemon=True).start()
