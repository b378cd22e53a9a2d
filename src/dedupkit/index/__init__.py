"""Persistent indexes of a corpus you already hold, for incremental dedup (``dedupkit index``/``check``).

Example:
    >>> from dedupkit.index import IndexSettings, create_index, open_index
    >>> create_index(str(tmp / "corpus.idx"), IndexSettings(stages=("exact",))).close()
    >>> with open_index(str(tmp / "corpus.idx")) as idx:
    ...     print(idx.count, idx.settings.stages)
    0 ('exact',)
"""

from __future__ import annotations

from dedupkit.index.base import IndexSettings, IndexStore, IndexStoreError, Segment


def open_index(location: str, verify: bool = True) -> IndexStore:
    """Open an index: a local folder, or ``redis://HOST:PORT/DB[?prefix=NAME]``.

    Raises:
        IndexStoreError: missing, truncated, damaged or of another format.
    """
    from dedupkit.index.redis_store import is_redis_url

    if is_redis_url(location):
        from dedupkit.index.redis_store import RedisIndex

        return RedisIndex.open(location, verify=verify)
    from dedupkit.index.local import LocalIndex
    from dedupkit.io import fs

    if fs.is_remote(location):  # s3://...: read from a local copy (writes are refused by the api)
        return LocalIndex.open(str(fs.fetch(location)), verify=verify)
    return LocalIndex.open(fs.local(location), verify=verify)


def create_index(location: str, settings: IndexSettings, overwrite: bool = False) -> IndexStore:
    """Create an empty index with ``settings`` (``overwrite`` replaces an existing one)."""
    from dedupkit.index.redis_store import is_redis_url

    if is_redis_url(location):
        from dedupkit.index.redis_store import RedisIndex

        return RedisIndex.create(location, settings, overwrite=overwrite)
    from dedupkit.index.local import LocalIndex

    return LocalIndex.create(location, settings, overwrite=overwrite)


__all__ = ["IndexSettings", "IndexStore", "IndexStoreError", "Segment", "create_index", "open_index"]
