"""Shard discovery, streaming readers and writers for Parquet and JSONL."""

from dedupkit.io.read import Batch, BadRecord, ReadSpec, ShardReader, count_rows
from dedupkit.io.shards import Shard, discover, fingerprint

__all__ = ["Batch", "BadRecord", "ReadSpec", "ShardReader", "Shard", "discover", "fingerprint", "count_rows"]
