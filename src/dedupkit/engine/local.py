"""The local engine: per-shard tasks in worker processes, results in task order."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Sequence

from dedupkit.engine.base import Engine, Progress, ProgressFactory, no_progress
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

    def __init__(self, workers: int = 1, progress: ProgressFactory = no_progress) -> None:
        if workers < 1:
            raise ConfigError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self.progress = progress
        self._pool: ProcessPoolExecutor | None = None

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=mp.get_context("spawn"),
                                             initializer=_init_worker, initargs=(os.getpid(),))
        return self._pool

    def close(self, wait: bool = True) -> None:
        """Stop the worker processes (a later ``map`` starts new ones).

        ``wait=False`` returns at once while idle workers exit in the background (the executor's
        threads still join them before the interpreter exits).
        """
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)
            self._pool = None

    def _abort(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                proc.terminate()

    def map(self, fn: Callable[[Any], Any], tasks: Sequence[Any], desc: str = "") -> list[Any]:
        bar = self.progress(len(tasks), desc)
        try:
            if self.workers == 1 or len(tasks) <= 1:
                out = []
                for t in tasks:
                    out.append(fn(t))
                    bar.update()
                return out
            results: list[Any] = [None] * len(tasks)
            pool = self._get_pool()
            # Workers start (on submit) with SIGINT ignored, a disposition that survives exec:
            # Ctrl-C reaches the whole process group, and only the main process should react
            # (no worker tracebacks); the main process then stops the workers itself.
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                pending = {pool.submit(fn, t): i for i, t in enumerate(tasks)}
            finally:
                signal.signal(signal.SIGINT, previous)
            try:
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        i = pending.pop(fut)
                        results[i] = fut.result()
                        bar.update()
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
            bar.close()


def _init_worker(parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # already ignored since exec; keep it so
    exit_with_parent(parent_pid)


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
