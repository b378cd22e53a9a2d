"""What dedupkit keeps in its cache folder, and removing it (``dedupkit cache info|clear``).

Everything dedupkit caches lives under one root (:func:`dedupkit.embed.cache_root`: ``--cache-dir``,
else ``$DEDUPKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/dedupkit``, else ``~/.cache/dedupkit``):

- ``embeddings/<model key>/``: the semantic stage's per-shard embeddings (float32, 4 bytes x
  dimension per document: 1.5 KB a document for MiniLM), named by the shard's content
  fingerprint; reused by any later run on the same shard and model.
- ``static/<model>/``: static embedders distilled by ``--model static`` (about 30 MB each).
- ``onnx/<model>/``: int8 ONNX exports of sentence-transformers models made by ``--backend onnx``
  (about 150 MB for MiniLM: the float and the int8 model).

Nothing else writes there; exact and fuzzy keep their work files under ``OUT/.work``.

Example:
    >>> from dedupkit.cache import cache_info
    >>> info = cache_info(tmp / "cache")  # default: the cache root above
    >>> info["bytes"], sorted(info["parts"])
    (0, ['embeddings', 'onnx', 'remote', 'static'])
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

#: The cache's parts: folder name -> what it holds.
KINDS = {
    "embeddings": "per-shard embeddings of the semantic stage",
    "static": "static embedders distilled by --model static",
    "remote": "staging and read copies of s3://, gs://, az:// outputs and manifests (docs/storage.md)",
    "onnx": "int8 ONNX exports made by --backend onnx",
}


def _root(cache_dir: str | os.PathLike | None) -> Path:
    from dedupkit.embed import cache_root

    return cache_root(cache_dir)


def _size(path: Path) -> tuple[int, int]:
    files = size = 0
    for dirpath, _, names in os.walk(path):
        for n in names:
            try:
                size += os.lstat(os.path.join(dirpath, n)).st_size
                files += 1
            except OSError:  # removed meanwhile
                pass
    return files, size


def cache_info(cache_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The cache root, and per part its entries (models), files and bytes.

    Args:
        cache_dir: the cache root (default: see the module doc).

    Returns:
        ``{"path", "exists", "bytes", "files", "parts": {kind: {"what", "entries", "files", "bytes"}}}``.
    """
    root = _root(cache_dir)
    parts = {}
    for kind, what in KINDS.items():
        d = root / kind
        entries = sorted(p.name for p in d.iterdir()) if d.is_dir() else []
        files, size = _size(d) if d.is_dir() else (0, 0)
        parts[kind] = {"what": what, "entries": len(entries), "files": files, "bytes": size}
    return {"path": str(root), "exists": root.is_dir(), "bytes": sum(p["bytes"] for p in parts.values()),
            "files": sum(p["files"] for p in parts.values()), "parts": parts}


def clear_cache(cache_dir: str | os.PathLike | None = None, kinds: tuple[str, ...] = tuple(KINDS)) -> dict[str, Any]:
    """Remove the named parts of the cache (default all); other files in the folder stay.

    A run that needs a removed entry recomputes it (embeddings) or distills it again (static).

    Args:
        cache_dir: the cache root (default: see the module doc).
        kinds: parts to remove, from :data:`KINDS`.

    Returns:
        :func:`cache_info` as it was before, with ``removed_bytes``.

    Raises:
        ConfigError: an unknown part.
        OutputError: a part could not be removed.
    """
    from dedupkit.errors import ConfigError, OutputError

    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ConfigError(f"unknown cache part {unknown[0]!r}; parts are: {', '.join(KINDS)}")
    before = cache_info(cache_dir)
    root = Path(before["path"])
    removed = 0
    for kind in kinds:
        d = root / kind
        if not d.exists():
            continue
        # Rename first: a run reading the cache meanwhile sees an entry or nothing, never half of one.
        trash = root / f".{kind}.removing{os.getpid()}"
        try:
            os.replace(d, trash)
            shutil.rmtree(trash)
        except OSError as exc:
            raise OutputError(f"cannot remove {d} ({exc.strerror or exc}); check its permissions") from exc
        removed += before["parts"][kind]["bytes"]
    return {**before, "removed_bytes": removed}
