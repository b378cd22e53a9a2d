"""The index interface: what an index holds, how it is grown and how a new drop is looked up.

An index records, for every indexed document, its doc_id, its source shard, the xxh3-128 hash of
its normalized text (the exact stage's hash) and, when the index has the fuzzy stage, its MinHash
LSH band keys. Documents are numbered 0, 1, 2, ... in the order they were added; a lookup that
finds several indexed matches reports the lowest number (the first-indexed copy), so results never
depend on how the index was split into appends.

Two stores implement :class:`IndexStore`: :class:`dedupkit.index.local.LocalIndex` (a folder of
immutable, checksummed segment files plus a generation file) and
:class:`dedupkit.index.redis_store.RedisIndex` (the same index in a Redis database, shared by CI jobs).
"""

from __future__ import annotations

import abc
import logging
import os
import random
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from dedupkit import settings as _S
from dedupkit.errors import ConfigError, DedupkitError
from dedupkit.normalize import DEFAULT, parse_steps

FORMAT = "dedupkit-index"
FORMAT_VERSION = 1
STAGES = ("exact", "fuzzy")
#: At most this many indexed documents are taken per (query, band) bucket. A band key shared by
#: thousands of indexed documents is boilerplate; the first CAP (lowest numbers) are enough to
#: name a match, and the cap bounds the work and memory of a lookup whatever the index holds.
BAND_CAP = 32
#: How long a writer waits for another writer's lock before giving up (seconds); the environment
#: variable DEDUPKIT_INDEX_LOCK_WAIT overrides it (a CI queue of many drops may need more).
LOCK_WAIT_S = 600.0

log = logging.getLogger("dedupkit.index")


class IndexStoreError(DedupkitError):
    """An index is missing, truncated, corrupt, of another format, or locked by another writer."""


@dataclass(frozen=True)
class IndexSettings:
    """The settings that made an index's keys; a drop is checked with exactly these.

    Attributes:
        stages: ``("exact",)``, ``("fuzzy",)`` or ``("exact", "fuzzy")``.
        normalize: normalization steps before the exact hash (see :mod:`dedupkit.normalize`).
        minhash: the resolved :class:`dedupkit.minhash.MinHashConfig` as a dict (with ``bands``
            and ``rows``), or None without the fuzzy stage.
    """

    stages: tuple[str, ...] = tuple(_S.IndexConfig.stages.split(","))
    normalize: tuple[str, ...] = DEFAULT
    minhash: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        stages = tuple(s.strip().lower() for s in self.stages if s and s.strip())
        bad = [s for s in stages if s not in STAGES]
        if bad or not stages:
            raise ConfigError(f"unknown index stage {bad[0] if bad else ''!r}; --stages takes exact, fuzzy or "
                              "exact,fuzzy")
        object.__setattr__(self, "stages", tuple(s for s in STAGES if s in stages))
        object.__setattr__(self, "normalize", parse_steps(self.normalize))
        if "fuzzy" in self.stages and not self.minhash:
            raise ConfigError("an index with the fuzzy stage needs MinHash settings")
        if "fuzzy" not in self.stages:
            object.__setattr__(self, "minhash", None)

    @property
    def exact(self) -> bool:
        return "exact" in self.stages

    @property
    def fuzzy(self) -> bool:
        return "fuzzy" in self.stages

    @property
    def bands(self) -> int:
        return int(self.minhash["bands"]) if self.minhash else 0

    @property
    def rows(self) -> int:
        return int(self.minhash["rows"]) if self.minhash else 0

    def to_dict(self) -> dict[str, Any]:
        return {"stages": list(self.stages), "normalize": list(self.normalize), "hash": "xxh3_128",
                "minhash": dict(self.minhash) if self.minhash else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "IndexSettings":
        if d.get("hash", "xxh3_128") != "xxh3_128":
            raise IndexStoreError(f"index uses hash {d.get('hash')!r}; this dedupkit only reads xxh3_128 indexes")
        return cls(stages=tuple(d["stages"]), normalize=tuple(d["normalize"]), minhash=d.get("minhash"))

    def differences(self, other: "IndexSettings") -> list[str]:
        """Human-readable differences between two settings (empty when they agree)."""
        a, b = self.to_dict(), other.to_dict()
        out = []
        for k in ("stages", "normalize"):
            if a[k] != b[k]:
                out.append(f"{k}: index has {','.join(a[k]) or 'none'}, asked for {','.join(b[k]) or 'none'}")
        ma, mb = a["minhash"] or {}, b["minhash"] or {}
        for k in sorted(set(ma) | set(mb)):
            if ma.get(k) != mb.get(k):
                out.append(f"minhash {k}: index has {ma.get(k)!r}, asked for {mb.get(k)!r}")
        return out


@dataclass
class Segment:
    """A batch of documents to add to an index, in their order.

    Attributes:
        doc_ids: doc_id of every document (pa string array).
        shard_names: the distinct source shard names.
        shard_index: int32 position in ``shard_names`` of every document.
        exact: (n, 2) uint64 xxh3-128 hashes (hi, lo), or None without the exact stage.
        bands: (n, bands) uint64 LSH band keys, or None without the fuzzy stage.
    """

    doc_ids: pa.Array
    shard_names: list[str]
    shard_index: np.ndarray
    exact: np.ndarray | None = None
    bands: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.doc_ids)

    def validate(self, settings: IndexSettings) -> None:
        n = len(self)
        if len(self.shard_index) != n:
            raise ValueError("shard_index length differs from doc_ids")
        if settings.exact and (self.exact is None or self.exact.shape != (n, 2)):
            raise ValueError("segment lacks exact hashes of shape (n, 2)")
        if settings.fuzzy and (self.bands is None or self.bands.shape != (n, settings.bands)):
            raise ValueError(f"segment lacks band keys of shape (n, {settings.bands})")


@dataclass
class BandMatches:
    """Best fuzzy match per query: indexed doc number (-1 none) and how many bands it shares."""

    doc: np.ndarray
    n_bands: np.ndarray


@dataclass
class IndexInfo:
    location: str
    kind: str
    settings: IndexSettings
    documents: int
    segments: int
    bytes: int | None = None
    shards: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"location": self.location, "kind": self.kind, "settings": self.settings.to_dict(),
                "documents": self.documents, "segments": self.segments, "bytes": self.bytes,
                "bytes_per_doc": (self.bytes / self.documents) if self.bytes and self.documents else None,
                "shards": self.shards, **self.extra}


def lock_wait_s() -> float:
    """The writer-lock wait: DEDUPKIT_INDEX_LOCK_WAIT seconds, else :data:`LOCK_WAIT_S`."""
    raw = os.environ.get("DEDUPKIT_INDEX_LOCK_WAIT")
    try:
        return float(raw) if raw else LOCK_WAIT_S
    except ValueError:
        raise ConfigError(f"DEDUPKIT_INDEX_LOCK_WAIT={raw!r} is not a number of seconds") from None


def _host_id() -> str:
    """This machine and pid namespace: two lock holders with the same host id share process ids."""
    try:
        boot = open("/proc/sys/kernel/random/boot_id").read().strip()
        ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        boot, ns = "", 0
    return f"{socket.gethostname()}/{boot}/{ns}"


def holder_record(command: str) -> dict[str, Any]:
    """Who holds a writer lock: pid, host id, start time and the command (written into the lock)."""
    return {"pid": os.getpid(), "host": _host_id(), "since": time.time(), "command": command}


def holder_text(rec: dict[str, Any] | None) -> str:
    if not rec:
        return "an unknown process"
    since = time.strftime("%H:%M:%S", time.localtime(rec.get("since", 0)))
    return f"pid {rec.get('pid')} ({rec.get('command', 'dedupkit')}) since {since}"


def holder_is_dead(rec: dict[str, Any] | None) -> bool:
    """True when the holder ran on this machine (same pid namespace) and its process is gone."""
    if not rec or rec.get("host") != _host_id():
        return False
    try:
        os.kill(int(rec["pid"]), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return False


class WriterLock(abc.ABC):
    """The one writer lock of an index.

    A writer (``index add``, ``check --update``) holds it from before its lookups until its commit,
    so writers run one after the other: the decisions of concurrent checks are those of the order
    in which they got the lock. Subclasses say how to try, who holds it and how to let go; the
    waiting (with one message on the ``dedupkit.index`` logger, which the CLI prints on stderr) is
    here, shared by the local and the Redis index.
    """

    what: str = "the index"

    @abc.abstractmethod
    def try_acquire(self) -> bool:
        """Take the lock if free (or held by a dead process); never blocks."""

    @abc.abstractmethod
    def holder(self) -> dict[str, Any] | None:
        """The current holder's record, if readable."""

    @abc.abstractmethod
    def release(self) -> None:
        """Let go (a no-op if the lock was lost)."""

    def acquire(self, wait_s: float | None = None) -> "WriterLock":
        """Wait for the lock, up to ``wait_s`` (default :func:`lock_wait_s`).

        Raises:
            IndexStoreError: still held by another writer after ``wait_s``.
        """
        wait_s = lock_wait_s() if wait_s is None else wait_s
        t0 = time.monotonic()
        told = False
        delay = 0.02
        while not self.try_acquire():
            waited = time.monotonic() - t0
            if not told:
                log.warning("%s is being written by %s; waiting (up to %.0f s) for it to finish",
                            self.what, holder_text(self.holder()), wait_s)
                told = True
            if waited > wait_s:
                raise IndexStoreError(
                    f"{self.what} has been written by {holder_text(self.holder())} for more than {wait_s:.0f} s; "
                    "retry when it has finished, or wait longer with DEDUPKIT_INDEX_LOCK_WAIT=SECONDS")
            time.sleep(delay * (0.5 + random.random()))  # jitter: waiters do not retry in lockstep
            delay = min(delay * 2, 0.5)
        if told:
            log.warning("%s: got the lock after %.1f s", self.what, time.monotonic() - t0)
        from dedupkit.index.faults import point

        point("writer: locked")
        return self


class IndexStore(abc.ABC):
    """A persistent index of a corpus; see the module docstring.

    A store is opened for reading a consistent snapshot: documents appended by another process
    after opening are not seen (and never half-seen). :meth:`append` adds one segment atomically.

    Writers: :meth:`acquire_writer` takes the index's :class:`WriterLock`, rolls back what an
    interrupted writer left, and moves the snapshot to the latest commit; lookups made while it
    is held, and the :meth:`append` that follows, form one atomic step with respect to other
    writers. A segment may carry a ``key`` (what was appended: the inputs' fingerprints and
    options); :meth:`find_commit` finds it again, so a rerun of an interrupted command that had
    already committed does not add its documents twice.
    """

    location: str
    settings: IndexSettings
    _writer: WriterLock | None = None
    _command: str = "dedupkit"

    def acquire_writer(self, command: str = "dedupkit") -> None:
        """Take the writer lock (waiting for another writer), recover, refresh the snapshot."""
        if self._writer is not None:
            return
        self._command = command
        lock = self._make_lock()
        lock.acquire()
        self._writer = lock
        try:
            self._recover()
            self.refresh()
        except BaseException:
            self.release_writer()
            raise

    def release_writer(self) -> None:
        """Let go of the writer lock (no-op if not held)."""
        lock, self._writer = self._writer, None
        if lock is not None:
            lock.release()

    def _make_lock(self) -> WriterLock:
        raise NotImplementedError

    def _recover(self) -> None:
        """Roll back what an interrupted writer left (called with the writer lock held)."""

    def refresh(self) -> None:
        """Move the snapshot to the latest commit."""

    def commits(self) -> list[dict[str, Any]]:
        """The committed segments in commit order: dicts with ``base``, ``n`` and ``key`` (or None)."""
        raise NotImplementedError

    def find_commit(self, key: str) -> dict[str, Any] | None:
        """The committed segment appended with ``key``, or None."""
        for c in self.commits():
            if c.get("key") == key:
                return c
        return None

    def view_before(self, commit: dict[str, Any]) -> None:
        """Restrict the snapshot to the segments committed before ``commit`` (a rerun re-decides
        exactly as the interrupted run did)."""
        raise NotImplementedError

    @property
    @abc.abstractmethod
    def count(self) -> int:
        """Documents in the snapshot."""

    def append(self, segment: Segment, key: str | None = None) -> int:
        """Add the documents of ``segment`` atomically; returns the number of the first one.

        Takes the writer lock for the call unless :meth:`acquire_writer` holds it. ``key`` names
        what was appended (see :meth:`find_commit`).
        """
        segment.validate(self.settings)
        own = self._writer is None
        if own:
            self.acquire_writer("dedupkit index add")
        try:
            return self._append(segment, key)
        finally:
            if own:
                self.release_writer()

    @abc.abstractmethod
    def _append(self, segment: Segment, key: str | None) -> int:
        """:meth:`append` with the writer lock held and the segment validated."""

    @abc.abstractmethod
    def lookup_exact(self, hashes: np.ndarray) -> np.ndarray:
        """For (n, 2) uint64 hashes: the lowest indexed doc number with the same hash, else -1."""

    @abc.abstractmethod
    def lookup_bands(self, keys: np.ndarray) -> BandMatches:
        """For (n, bands) uint64 keys: the indexed doc sharing the most bands (ties: lowest number)."""

    @abc.abstractmethod
    def resolve(self, docs: np.ndarray) -> tuple[list[str], list[str]]:
        """doc_id and shard name of indexed doc numbers (all must be >= 0)."""

    @abc.abstractmethod
    def info(self) -> IndexInfo:
        """Counts, settings and size."""

    def discard(self) -> None:
        """Delete the whole index (used when ``index create --from`` fails half-way)."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def best_band_matches(n_queries: int, q: np.ndarray, d: np.ndarray) -> BandMatches:
    """Reduce (query, indexed doc) band-hit pairs to the best doc per query.

    Each pair occurs once per shared band; the best doc shares the most bands, ties going to the
    lowest doc number (the first-indexed copy).
    """
    doc = np.full(n_queries, -1, dtype=np.int64)
    nb = np.zeros(n_queries, dtype=np.int32)
    if len(q) == 0:
        return BandMatches(doc, nb)
    q = q.astype(np.int64, copy=False)
    d = d.astype(np.int64, copy=False)
    order = np.lexsort((d, q))
    q, d = q[order], d[order]
    new = np.r_[True, (q[1:] != q[:-1]) | (d[1:] != d[:-1])]
    starts = np.flatnonzero(new)
    counts = np.diff(np.r_[starts, len(q)])
    pq_, pd_ = q[starts], d[starts]
    # Per query: most bands first, then lowest doc number.
    order = np.lexsort((pd_, -counts, pq_))
    pq_, pd_, counts = pq_[order], pd_[order], counts[order]
    first = np.r_[True, pq_[1:] != pq_[:-1]]
    doc[pq_[first]] = pd_[first]
    nb[pq_[first]] = counts[first]
    return BandMatches(doc, nb)
