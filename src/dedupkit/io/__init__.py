"""Shard discovery, streaming readers and writers for Parquet and JSONL."""

from dedupkit.io.shards import Shard, discover, fingerprint

__all__ = ["Batch", "BadRecord", "ReadSpec", "ShardReader", "Shard", "discover", "fingerprint", "count_rows"]

_READ = {"Batch", "BadRecord", "ReadSpec", "ShardReader", "count_rows"}


def __getattr__(name):
    # The readers (pyarrow, numpy) load on first use, so that importing dedupkit.io.shards stays
    # cheap: `dedupkit run` with nothing to do only discovers and fingerprints shards.
    if name in _READ:
        from dedupkit.io import read

        return getattr(read, name)
    raise AttributeError(f"module 'dedupkit.io' has no attribute {name!r}")
