"""Executors that run per-shard stage functions: local processes, or Ray (``dedupkit-corpus[ray]``)."""

from dedupkit.engine.local import LocalEngine, get_engine

__all__ = ["LocalEngine", "get_engine"]
