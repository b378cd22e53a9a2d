"""The Stage interface.

A stage has one required method, :meth:`Stage.identify`, which takes the scanned corpus and returns
exactly one decision per active document. Per-document features (hashes, signatures, embeddings)
are computed shard by shard, in worker processes, by the stage's optional :class:`Mapper`; the
runner (:func:`dedupkit.runner.run_stage`) handles reading, skipping, bad records, the manifest,
the summary, locking and resuming, so a third-party stage only writes these two pieces.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from dedupkit.io.read import Batch


class Mapper(abc.ABC):
    """Per-batch feature computation; must be picklable (it runs in worker processes).

    Attributes:
        batch_rows: at most this many rows per batch the scan reads for it (None: ``--batch-size``
            alone decides); a cheap mapper whose batches stream through the caches sets it.
    """

    batch_rows: int | None = None

    @abc.abstractmethod
    def map_batch(self, batch: Batch) -> dict[str, np.ndarray]:
        """Return arrays with one entry (row) per document of the batch."""

    def empty(self) -> dict[str, np.ndarray]:
        """Zero-length arrays of the right dtype and shape, for a shard with no good rows."""
        return {}


@dataclass
class Decisions:
    """One decision per active document, as arrays indexed by global index.

    Attributes:
        representative: global index of the document's kept representative; itself for a kept
            document or one with no duplicate.
        labels: cluster label (any int64, -1 = no duplicate); members of one cluster share it.
        score: similarity to the representative (NaN = none).
        extra: more manifest columns (pa.Array per column, one value per active document).
        spans: folder of span parts written by the stage, or None (see :mod:`dedupkit.spans`).
    """

    representative: np.ndarray
    labels: np.ndarray
    score: np.ndarray
    extra: dict[str, pa.Array] = field(default_factory=dict)
    keep: np.ndarray | None = None  # default: representative == index
    stats: dict[str, Any] = field(default_factory=dict)
    #: A folder of span Parquet parts (:class:`dedupkit.spans.SpanWriter`) for a stage that cuts
    #: passages out of documents; the runner validates it and moves it to ``OUT/spans``.
    spans: str | None = None

    @classmethod
    def of_centres(cls, n: int, docs: np.ndarray, centre: np.ndarray, score: Any, **fields: Any) -> "Decisions":
        """The decisions of a greedy-centre clustering of ``n`` documents: each of ``docs`` is
        dropped for its ``centre`` (with that pair's ``score``), a centre labels its cluster with its
        own index and scores 1.0, every other document is kept alone (label -1, score NaN).
        ``fields``: ``extra``, ``stats``, ..."""
        rep = np.arange(n, dtype=np.int64)
        labels = np.full(n, -1, dtype=np.int64)
        sc = np.full(n, np.nan, dtype=np.float32)
        if len(docs):
            rep[docs] = centre
            labels[docs] = centre
            labels[centre] = centre
            sc[centre] = 1.0
            sc[docs] = score
        return cls(representative=rep, labels=labels, score=sc, **fields)

    def keep_mask(self) -> np.ndarray:
        if self.keep is not None:
            return self.keep
        return self.representative == np.arange(len(self.representative), dtype=np.int64)


class Stage(abc.ABC):
    """A deduplication stage.

    Attributes:
        name: written to the manifest's ``stage`` column.
    """

    name: str = "stage"
    #: Set by the runner before :meth:`identify`: the engine (local processes or Ray) whose
    #: ``map(fn, tasks, desc)`` a stage uses to spread its global step over partitions.
    engine: Any = None
    #: False for a stage whose :meth:`identify` never uses :attr:`engine`: the runner then stops
    #: the local worker pool right after the scan, so idle workers (and the memory their
    #: allocators keep from reading shards) are gone before the global step.
    uses_engine: bool = True
    #: True when the manifest depends only on the inputs, the read options and
    #: :meth:`config_dict` / :meth:`key`: a rerun on a finished folder then reuses it
    #: (:func:`dedupkit.runner.reusable_run`). False for a stage that reads other state (an index).
    reusable: bool = True

    def mapper(self) -> Mapper | None:
        """The per-shard feature computation, or None if the stage needs none."""
        return None

    def before_publish(self, summary: dict[str, Any]) -> None:
        """Called by the runner after the manifest is written and before the output is published
        (summary.json written last). A stage that also changes something outside the output (``check
        --update``: the index) commits here, so a published output means a committed change; it may
        add to ``summary``."""

    def read_columns(self) -> tuple[str, ...]:
        """Extra columns the stage needs besides text and id (e.g. the keep-by column)."""
        return ()

    def key(self) -> str:
        """A string that changes whenever the mapper's output would change (for resuming)."""
        return self.name

    def config_dict(self) -> dict[str, Any]:
        """The resolved settings, recorded in summary.json."""
        return {}

    @abc.abstractmethod
    def identify(self, corpus, workdir: str) -> Decisions:
        """Decide for every active document of ``corpus`` (a :class:`dedupkit.scan.Corpus`)."""
