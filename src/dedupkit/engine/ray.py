"""The Ray engine: the same per-shard and per-partition stage functions, run as Ray tasks.

``--engine ray`` runs exactly the functions the local engine runs (``run_scan_task``, a stage's
per-partition steps); they read their inputs from and write their outputs to files under
``OUT/.work``, and return only small results (counts, file names) to the driver. On one machine
the Ray workers share the driver's filesystem; on a cluster ``OUT`` and the inputs must be on a
filesystem every node mounts at the same path (NFS, Lustre, a FUSE-mounted bucket), see
``docs/scaling.md``.

Fault tolerance: a task whose worker process dies (killed, out of memory, node lost) is retried by
Ray up to ``max_retries`` times; the task functions are idempotent (they write to temporary files
and rename, and a finished task leaves a completion marker), so a retry gives the same result. An
exception raised by the task itself (bad input, say) is not retried: the original dedupkit error
comes back to the caller with its message and exit code.

Ray is an optional extra (``pip install 'dedupkit-corpus[ray]'``), imported only when this engine is built.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

from dedupkit import settings as _S
from dedupkit.engine.base import Engine, ProgressFactory, ProgressTracker, no_progress
from dedupkit.errors import ConfigError, DedupkitError, require

log = logging.getLogger(__name__)

# The folder that holds the ``dedupkit`` package this driver imported: workers of a Ray instance we
# start ourselves get it on PYTHONPATH, so that a source checkout (not pip-installed) works too.
_PKG_PARENT = str(Path(__file__).resolve().parents[2])


class RayEngineError(DedupkitError):
    """A Ray task could not be completed (its worker died more often than retries allow, or Ray
    itself failed). The work finished so far stays on disk; rerunning the same command resumes."""


@contextlib.contextmanager
def _worker_environ():
    """While a local instance starts: this driver's dedupkit on ``PYTHONPATH`` of its environment.

    Ray's processes (and the workers the raylet starts) inherit the environment of the process
    that starts them, so a source checkout (not pip-installed) works on workers too, and they see
    the driver's ``DEDUPKIT_*`` settings (``DEDUPKIT_KERNELS``: the same kernels). This is instead
    of a ``runtime_env``: workers of a job with its own runtime_env cannot be the ones Ray prestarts
    at ``ray.init``, so every first task waited ~2.5 s for new worker processes.
    """
    old = os.environ.get("PYTHONPATH")
    parts = [_PKG_PARENT] + [p for p in (old or "").split(os.pathsep) if p and p != _PKG_PARENT]
    os.environ["PYTHONPATH"] = os.pathsep.join(parts)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def init_local(num_cpus: int, **kwargs: Any) -> None:
    """Start a local Ray instance the way ``--engine ray`` does without ``--ray-address``.

    The instance is this process's: :func:`stop` (also run at the process's exit, before Ray's
    own exit handler) shuts it down quickly.

    Args:
        num_cpus: CPUs Ray may use (the number of tasks that run at once).
        **kwargs: more ``ray.init`` arguments.

    Raises:
        MissingExtraError: Ray is not installed.

    Example:
        >>> init_local(2)  # doctest: +SKIP
    """
    global _ours
    ray = require("ray", "ray")
    # address="local": a new instance even if `ray start` left one on this machine.
    opts: dict[str, Any] = dict(address="local", num_cpus=num_cpus, include_dashboard=False,
                                log_to_driver=False)
    opts.update(kwargs)
    with _worker_environ():
        ray.init(**opts)
    _stop_at_exit()
    _ours = True
    _warm_workers(ray, num_cpus)


def connect_cluster(address: str, workers: int, **kwargs: Any) -> None:
    """Connect this process to the running Ray cluster at ``address`` (``--ray-address``).

    The cluster is not this process's: :func:`stop` (also run at the process's exit) only
    disconnects from it.

    Args:
        address: the cluster's address.
        workers: the most tasks the engine runs at once (this many workers are started now).
        **kwargs: more ``ray.init`` arguments.

    Raises:
        ConfigError: the cluster cannot be reached.

    Example:
        >>> connect_cluster("auto", 64)  # doctest: +SKIP
    """
    ray = require("ray", "ray")
    try:
        # Workers of an existing cluster must have dedupkit installed (same version as here).
        ray.init(address=address, **{"log_to_driver": False, **kwargs})
    except ConnectionError as exc:
        raise ConfigError(
            f"cannot reach the Ray cluster at {address!r} ({exc}); check --ray-address (e.g. "
            "'auto' on a cluster node, or ray://HEAD:10001), or leave it out to start a local "
            "Ray instance"
        ) from exc
    _stop_at_exit()
    total = int(ray.cluster_resources().get("CPU", 0))
    log.info("connected to Ray at %s (%d CPUs); running up to %d tasks at once", address, total, workers)
    if total > workers:
        log.warning("the Ray cluster has %d CPUs but --workers is %d: pass --workers %d "
                    "to use them all", total, workers, total)
    # a new job's workers start (and import) only when its first tasks come: start them now
    _warm_workers(ray, min(workers, max(total, 1)))


def _warm_workers(ray: Any, n: int) -> None:
    """``n`` tasks that import the modules every task needs: Ray's worker processes start (or,
    for a local instance, the ones Ray prestarts finish) and import them while the driver plans.
    Their results are never fetched."""
    warm = ray.remote(num_cpus=1, max_retries=0)(_warm_up)
    for _ in range(n):
        warm.remote()


def _warm_up() -> None:
    _worker_setup()
    import importlib

    importlib.import_module("dedupkit.scan")


_set_up = False


def _worker_setup() -> None:
    """Once per worker process: the start-up savings the local engine's workers get."""
    global _set_up
    if not _set_up:
        from dedupkit.fastart import skip_pandas_probe

        skip_pandas_probe()
        _set_up = True


# --- stopping ----------------------------------------------------------------------------------
_ours = False  # the running Ray instance was started by this process (init_local)

# Ray's autoscaler monitor, which a local instance runs too: on SIGTERM it reports its own
# "failure" to the GCS, which ray.shutdown() has already stopped, and is killed after its 1 s
# grace; it holds no state, so an instance of ours kills it at once
_MONITOR = os.path.join("autoscaler", "_private", "monitor.py").encode()


def _kill_monitor() -> None:
    """SIGKILL this process's own children that are Ray's autoscaler monitor (Linux ``/proc``;
    elsewhere nothing is done and ``ray.shutdown()`` takes its second)."""
    import signal

    me = os.getpid()
    try:
        pids = [int(d) for d in os.listdir("/proc") if d.isdigit()]
    except OSError:
        return
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                if int(fh.read().rsplit(b")", 1)[1].split()[1]) != me:
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if _MONITOR not in fh.read():
                    continue
            os.kill(pid, signal.SIGKILL)  # reaped by ray.shutdown() (its Popen's poll)
        except (OSError, ValueError, IndexError):
            continue


def _stop_at_exit() -> None:
    """:func:`stop` at this process's exit, registered after Ray's own exit handler so that it
    runs first: Ray's sleeps 0.5 s before it disconnects, and waits for the autoscaler monitor."""
    global _exit_registered
    if not _exit_registered:
        import atexit

        atexit.register(stop)
        _exit_registered = True


_exit_registered = False


def stop() -> None:
    """Stop Ray in this process: ``ray.shutdown()``, which stops a local instance this process
    started and only disconnects from a cluster. Ours stops ~1 s sooner: its autoscaler monitor,
    which would wait that long, is killed first. Safe to call twice.

    Example:
        >>> stop()  # doctest: +SKIP
    """
    global _ours
    import ray

    if _ours and ray.is_initialized():
        _kill_monitor()
    _ours = False
    ray.shutdown()


# --- an instance started (or a cluster connected to) while the command plans -----------------
_starting: tuple[tuple[str, int], threading.Thread, dict] | None = None


def _target(address: str | None, workers: int) -> tuple[str, int]:
    """What an engine with this address runs on: ``("local", workers)`` for a local instance of
    ``workers`` CPUs, ``(address, 0)`` for a cluster (whatever ``workers`` is)."""
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    return (address, 0) if address != "local" else ("local", workers)


def prestart(workers: int, stop_with_engine: bool = False, address: str | None = None,
             quiet: bool = False) -> None:
    """Start the local Ray instance of the next ``RayEngine(workers, address=address)`` now, in a
    background thread; or, for a cluster ``address`` (or ``RAY_ADDRESS``), connect to it.

    ``ray.init`` (a local instance's GCS, raylet, agents and worker processes: seconds; a
    cluster's new job workers: about a second) then overlaps the command's own imports,
    discovery and task planning; the engine waits for it. The CLI calls this for ``--engine
    ray``. The thread stays alive (idle) until the process exits: Ray's processes are bound to
    the thread that started them (Linux's parent-death signal).

    ``stop_with_engine``: the command runs one engine (a stage command), so Ray stops (a local
    instance) or disconnects (a cluster) when that engine closes, in the background while the
    command writes its summary, instead of at the process's exit. ``quiet``: Ray logs errors
    only (not its "Started a local Ray instance" notice).
    """
    global _starting
    if _starting is not None:
        return
    target = _target(address, workers)
    box: dict[str, Any] = {"ready": threading.Event(), "stop_with_engine": stop_with_engine}

    def start() -> None:
        try:
            opts = {"logging_level": logging.ERROR} if quiet else {}
            if target[0] == "local":
                init_local(workers, **opts)
            else:
                connect_cluster(target[0], workers, **opts)
        except BaseException as exc:  # noqa: BLE001 - handed to the engine's thread
            box["error"] = exc
        box["ready"].set()
        threading.Event().wait()  # keep Ray's processes' parent thread alive

    logging.getLogger("ray._private.worker").addFilter(_NoSigtermNote())
    th = threading.Thread(target=start, name="dedupkit-ray-start", daemon=True)
    th.start()
    _starting = (target, th, box)


class _NoSigtermNote(logging.Filter):
    """Drop Ray's note that a ``ray.init`` outside the main thread sets no SIGTERM handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler" not in record.getMessage()


def discard_prestarted() -> None:
    """Stop the instance :func:`prestart` began (or leave its cluster) when no engine took it
    (the command failed first)."""
    global _starting
    if _starting is None:
        return
    box = _starting[2]
    _starting = None
    box["ready"].wait()
    if "error" not in box:
        stop()


def _adopt_prestarted(target: tuple[str, int]) -> dict | None:
    """Wait for :func:`prestart`'s instance; its record if it is ``target``. Its error is raised."""
    global _starting
    if _starting is None:
        return None
    started, _, box = _starting
    box["ready"].wait()
    _starting = None
    if "error" in box:
        raise box["error"]
    return box if started == target else None


def _stop_in_background() -> None:
    """:func:`stop` in a thread (Ray's processes take a few tenths of a second to exit); joined
    at exit."""
    import atexit

    th = threading.Thread(target=stop, name="dedupkit-ray-stop", daemon=True)
    th.start()
    atexit.register(th.join)  # after Ray's (and init_local's) exit handlers: runs before them


def _call(fn: Callable[[Any], Any], task: Any) -> Any:
    _worker_setup()
    return fn(task)


class _TaskActor:
    """A long-lived worker for tasks that hold a costly resource (a model on a GPU)."""

    def run(self, fn: Callable[[Any], Any], task: Any) -> Any:
        return fn(task)


def _task_resources(tasks: Sequence[Any]) -> dict[str, Any]:
    """Ray resources the tasks ask for: ``task.ray_resources`` or ``task.mapper.ray_resources``."""
    if not tasks:
        return {}
    t = tasks[0]
    res = getattr(t, "ray_resources", None)
    if res is None:
        res = getattr(getattr(t, "mapper", None), "ray_resources", None)
    return dict(res or {})


class RayEngine(Engine):
    """Run ``fn(task)`` for every task as a Ray task; results come back in task order.

    Args:
        workers: the most tasks in flight at once (and, for a local instance that this engine
            starts, its number of CPUs). The manifest does not depend on it.
        progress: a progress-bar factory, as for :class:`~dedupkit.engine.local.LocalEngine`.
        address: a Ray cluster address (``auto``, ``ray://head:10001``, ``host:6379``). ``None``
            uses ``RAY_ADDRESS`` if set, an already initialised Ray in this process if any, and
            otherwise starts a local instance with ``workers`` CPUs. ``local`` always starts one.
        max_retries: how often Ray reruns a task whose worker process died (default: the
            ``DEDUPKIT_RAY_MAX_RETRIES`` environment variable, else 3).

    Raises:
        MissingExtraError: Ray is not installed (``pip install 'dedupkit-corpus[ray]'``).
        ConfigError: bad settings, or the cluster cannot be reached.

    Example:
        >>> eng = RayEngine(workers=2)  # doctest: +SKIP
        >>> eng.map(abs, [-1, -2, 3])  # doctest: +SKIP
        [1, 2, 3]
    """

    name = "ray"
    distributed = True

    def __init__(self, workers: int = _S.RunConfig.workers, progress: ProgressFactory = no_progress,
                 address: str | None = None, max_retries: int | None = None) -> None:
        if max_retries is None:
            env = os.environ.get("DEDUPKIT_RAY_MAX_RETRIES", "3")
            try:
                max_retries = int(env)
            except ValueError:
                raise ConfigError(f"DEDUPKIT_RAY_MAX_RETRIES must be a whole number, got {env!r}") from None
        if workers < 1:
            raise ConfigError(f"workers must be at least 1, got {workers}")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be 0 or more, got {max_retries}")
        self.workers = workers
        self.progress = progress
        self.address = address
        self.max_retries = max_retries
        self._ray = require("ray", "ray")
        self._remote = None
        self._stop_on_close = False
        self._connect()

    def _connect(self) -> None:
        ray = self._ray
        target = _target(self.address, self.workers)
        warm = _adopt_prestarted(target)
        if warm is not None and ray.is_initialized():
            log.info("using the Ray %s made ready while the command planned",
                     "instance" if target[0] == "local" else "connection")
            self._stop_on_close = bool(warm.get("stop_with_engine"))
            return
        if ray.is_initialized():
            return  # the caller's Ray (a notebook, a test fixture, a Ray job): use it as it is
        if target[0] == "local":
            init_local(self.workers)
            log.info("started a local Ray instance with %d CPUs", self.workers)
        else:
            connect_cluster(target[0], self.workers)

    def _remote_fn(self):
        if self._remote is None:
            self._remote = self._ray.remote(max_retries=self.max_retries)(_call)
        return self._remote

    def map(self, fn: Callable[[Any], Any], tasks: Sequence[Any], desc: str = "",
            sizes: Sequence[int | None] | None = None) -> list[Any]:
        """Run ``fn`` over ``tasks`` on Ray, at most ``workers`` at a time; results in task order.

        A task (or its ``mapper``) with a ``ray_resources`` dict (e.g. ``{"num_gpus": 1}`` from an
        embedding mapper on a GPU) gets those resources; tasks that ask for GPUs run on
        long-lived actors, one per GPU slot, so a model loads once per actor, not once per shard.

        Raises:
            DedupkitError: the task's own dedupkit error (e.g. InputError), unchanged.
            RayEngineError: a task's worker died more than ``max_retries`` times, or Ray failed.
            ConfigError: tasks ask for GPUs and the cluster has none.
        """
        ray = self._ray
        res = _task_resources(tasks)
        fn_ref = ray.put(fn) if len(tasks) > 1 else fn
        if res.get("num_gpus"):
            return self._map_on_actors(fn_ref, tasks, desc, res, sizes)
        remote = self._remote_fn()
        if res:
            remote = remote.options(**res)
        return self._drive(tasks, desc, self.workers, lambda i: remote.remote(fn_ref, tasks[i]),
                           lambda ref: None, sizes)

    def _map_on_actors(self, fn_ref: Any, tasks: Sequence[Any], desc: str, res: dict,
                       sizes: Sequence[int | None] | None = None) -> list[Any]:
        ray = self._ray
        gpus = float(ray.cluster_resources().get("GPU", 0))
        per = float(res["num_gpus"])
        if gpus < per:
            raise ConfigError(
                f"{desc or 'the tasks'} ask for {per:g} GPU each but the Ray cluster has {gpus:g}; "
                "add GPU nodes, or run the stage on CPU (e.g. --device cpu)"
            )
        n_actors = max(1, min(self.workers, len(tasks), int(gpus // per)))
        cls = ray.remote(max_restarts=self.max_retries, max_task_retries=self.max_retries)(_TaskActor)
        actors = [cls.options(**res).remote() for _ in range(n_actors)]
        idle = list(actors)
        busy: dict[Any, Any] = {}

        def submit(i: int):
            actor = idle.pop()
            ref = actor.run.remote(fn_ref, tasks[i])
            busy[ref] = actor
            return ref

        def release(ref) -> None:
            idle.append(busy.pop(ref))

        try:
            return self._drive(tasks, desc, n_actors, submit, release, sizes)
        finally:
            for a in actors:
                try:
                    ray.kill(a)
                except Exception:  # pragma: no cover - best effort
                    pass

    def _drive(self, tasks: Sequence[Any], desc: str, slots: int, submit: Callable[[int], Any],
               release: Callable[[Any], None], sizes: Sequence[int | None] | None = None) -> list[Any]:
        """Keep up to ``slots`` tasks in flight; gather results by task index.

        The bar moves as tasks finish (a task's documents at once: Ray workers do not relay
        in-task progress)."""
        ray = self._ray
        from ray import exceptions as rex

        tracker = ProgressTracker(self.progress, len(tasks), desc, sizes)
        results: list[Any] = [None] * len(tasks)
        pending: dict[Any, int] = {}
        next_i = 0
        try:
            while next_i < len(tasks) or pending:
                while next_i < len(tasks) and len(pending) < slots:
                    pending[submit(next_i)] = next_i
                    next_i += 1
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    i = pending.pop(ref)
                    release(ref)
                    try:
                        results[i] = ray.get(ref)
                    except rex.RayTaskError as exc:
                        cause = exc.cause
                        if isinstance(cause, BaseException):
                            raise cause from None
                        raise RayEngineError(f"{desc or 'task'} {i} failed on a Ray worker: {exc}") from exc
                    except rex.RayError as exc:  # worker or node died (retries spent), OOM kill, ...
                        first = str(exc).splitlines()[0] if str(exc) else ""
                        raise RayEngineError(
                            f"{desc or 'task'} {i} of {len(tasks)} could not finish on Ray: "
                            f"{type(exc).__name__}: {first} (after {self.max_retries} retries). "
                            "Finished tasks are kept on disk: rerun the same command to resume; if "
                            "workers run out of memory, lower --batch-size or --workers"
                        ) from exc
                    tracker.finish(i)
            return results
        except BaseException:
            for ref in pending:
                try:
                    ray.cancel(ref, force=False)
                except Exception:  # pragma: no cover - best effort
                    pass
            raise
        finally:
            tracker.close()

    def close(self, wait: bool = True) -> None:
        """Release this engine's Ray resources (its remote function; actors go after each map).

        The Ray instance stays up, whoever started it: a local one started here serves the next
        engine of this process (``dedupkit run``'s later stages) and stops when the process exits;
        call :func:`stop` to stop it sooner. The exception: the instance a stage command
        prestarted for its one engine (:func:`prestart` with ``stop_with_engine``) stops now, in
        the background (a cluster's connection closes; the cluster itself stays up).
        """
        self._remote = None
        if self._stop_on_close:
            self._stop_on_close = False
            _stop_in_background()
