"""Keep policies: which member of a duplicate cluster survives.

Every policy turns into one sortable priority per document (lower wins); ties always go to the
lowest ``(shard, row)``, i.e. the lowest global index, so results never depend on worker count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dedupkit import settings as _S
from dedupkit.errors import ConfigError

KEEP_POLICIES = _S.choices(_S.KeepConfig, "keep")
ORDERS = _S.choices(_S.KeepConfig, "keep_order")


@dataclass(frozen=True)
class KeepPolicy:
    """Which document of a cluster is kept.

    Attributes:
        keep: ``first`` (lowest shard, row), ``last``, ``longest`` or ``shortest`` text (characters).
        keep_by: a column whose value ranks documents instead; ``keep`` then only breaks ties.
        order: ``asc`` keeps the smallest ``keep_by`` value, ``desc`` the largest. Nulls lose.
    """

    keep: str = _S.KeepConfig.keep
    keep_by: str | None = None
    order: str = _S.KeepConfig.keep_order

    def __post_init__(self) -> None:
        if self.keep not in KEEP_POLICIES:
            raise ConfigError(f"keep must be one of {', '.join(KEEP_POLICIES)}, got {self.keep!r}")
        if self.order not in ORDERS:
            raise ConfigError(f"keep order must be asc or desc, got {self.order!r}")

    def priority(self, n: int, lengths: np.ndarray | None = None,
                 keep_by: pa.Array | pa.ChunkedArray | None = None) -> list[np.ndarray]:
        """Sort keys, most significant first; a lower tuple wins. The global index breaks ties."""
        keys: list[np.ndarray] = []
        if self.keep_by:
            if keep_by is None:  # pragma: no cover - runner always supplies it
                raise ConfigError("keep_by column values are missing")
            keys.append(_rank(keep_by, descending=self.order == "desc"))
        if self.keep == "last":
            keys.append(-np.arange(n, dtype=np.int64))
        elif self.keep in ("longest", "shortest"):
            if lengths is None:  # pragma: no cover
                raise ConfigError("text lengths are missing")
            lengths = np.asarray(lengths, dtype=np.int64)
            keys.append(-lengths if self.keep == "longest" else lengths)
        return keys


def _rank(values: pa.Array | pa.ChunkedArray, descending: bool) -> np.ndarray:
    """Dense rank of values (0 = best); nulls rank last whatever the order."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks else pa.array([], values.type)
    try:
        # rank's default null placement is at_end: nulls lose in both orders
        ranks = pc.rank(values, sort_keys="descending" if descending else "ascending", tiebreaker="dense")
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid) as exc:
        raise ConfigError(f"cannot order by a column of type {values.type} ({exc}); "
                          "pass --keep-by naming a number, string or date column") from exc
    return np.asarray(ranks, dtype=np.int64)


def choose_representatives(labels: np.ndarray, keys: list[np.ndarray]) -> np.ndarray:
    """Pick one representative per cluster.

    Args:
        labels: cluster label per document (any int64); -1 means "no cluster".
        keys: priority keys from :meth:`KeepPolicy.priority` (lower wins).

    Returns:
        For each document, the global index of its cluster's representative (itself when it is the
        representative or has no cluster).
    """
    n = len(labels)
    idx = np.arange(n, dtype=np.int64)
    rep = idx.copy()
    member = labels >= 0
    if not member.any():
        return rep
    # lexsort: last key is primary -> (label, *keys, index)
    order = np.lexsort([idx[member]] + [k[member] for k in reversed(keys)] + [labels[member]])
    m_idx = idx[member][order]
    m_lab = labels[member][order]
    starts = np.r_[True, m_lab[1:] != m_lab[:-1]]
    group = np.cumsum(starts) - 1
    first = m_idx[starts]
    rep[m_idx] = first[group]
    return rep


def cluster_ids(labels: np.ndarray, global_rows: np.ndarray) -> np.ndarray:
    """Stable cluster ids: the smallest global row number of each cluster's members; -1 for none."""
    out = np.full(len(labels), -1, dtype=np.int64)
    member = labels >= 0
    if not member.any():
        return out
    lab = labels[member]
    uniq, inv = np.unique(lab, return_inverse=True)
    mins = np.full(len(uniq), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(mins, inv, global_rows[member])
    out[member] = mins[inv]
    return out


def priority_rank(keys: list[np.ndarray], n: int) -> np.ndarray:
    """Every document's position (0 = best) in keep-priority order: ``keys`` from
    :meth:`KeepPolicy.priority`, ties to the lowest global index. int64, a permutation of 0..n-1."""
    idx = np.arange(n, dtype=np.int64)
    if not keys:
        return idx
    order = np.lexsort([idx] + [np.asarray(k) for k in reversed(keys)])
    rank = np.empty(n, np.int64)
    rank[order] = idx
    return rank
