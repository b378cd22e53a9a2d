"""The manifest layer: one row per input row saying keep or drop, and why.

Layout of a finished stage output folder ``OUT/``::

    OUT/manifest/part-00000.parquet ...   one file per input shard, rows in row order
    OUT/summary.json                      written last: its presence marks the run complete

Columns (see README, "The manifest contract"): shard, row, doc_id, keep, cluster_id,
duplicate_of, score, stage, plus ``reason`` (why a bad record was dropped) and any stage extras.

The layer owns every manifest read (:mod:`dedupkit.manifest.read`: open and validate, ``--skip``),
write (:mod:`dedupkit.manifest.write`: a shard's rows, the parts, ``summary.json``), the combining
of chained stages (:mod:`dedupkit.manifest.combine`) and the per-stage counts
(:mod:`dedupkit.manifest.stats`). This module holds the layout's names and what needs no pyarrow;
the rest is imported on first use (``from dedupkit.manifest import open_manifest`` works), so that
the output-folder code and ``dedupkit run`` with nothing to do stay light.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dedupkit.errors import ManifestError

CORE_COLUMNS = ("shard", "row", "doc_id", "keep", "cluster_id", "duplicate_of", "score", "stage")
SUMMARY = "summary.json"
MANIFEST_DIR = "manifest"
PARTS_KEY = "manifest_parts"
"""The summary key listing every manifest part: ``[{"file", "rows", "checksum"}]`` (xxh3-128)."""


def output_root(path: str | os.PathLike) -> Path:
    """Accept ``OUT`` or ``OUT/manifest`` and return ``OUT``.

    A URL (``s3://bucket/out``) is fetched into a local read copy first (:func:`dedupkit.io.fs.fetch`),
    and that copy is returned: every reader then validates it as a local folder.
    """
    from dedupkit.io import fs

    if fs.is_remote(path):
        url = str(path).rstrip("/")
        if url.rsplit("/", 1)[-1] == MANIFEST_DIR:
            url = url.rsplit("/", 1)[0]
        return fs.fetch(url)
    p = Path(fs.local(path))
    if p.name == MANIFEST_DIR and (p.parent / SUMMARY).exists():
        return p.parent
    return p


def load_summary(path: str | os.PathLike) -> dict[str, Any]:
    """Read ``OUT/summary.json`` of a finished run.

    Raises:
        ManifestError: the folder is not a finished dedupkit output (no summary: the run was
            interrupted, or the path is wrong).
    """
    root = output_root(path)
    sp = root / SUMMARY
    if not root.exists():
        raise ManifestError(f"{root}: no such manifest folder; pass the -o folder of a finished stage run")
    if not sp.exists():
        raise ManifestError(
            f"{root} holds no finished run (no {SUMMARY}): the run was interrupted or is still going; "
            "rerun the stage with the same -o to finish it"
        )
    from dedupkit.io.validate import not_regular

    kind = not_regular(sp)
    if kind:
        raise ManifestError(f"{sp} is {kind}, not a regular file; rerun the stage with --overwrite")
    try:
        summary = json.loads(sp.read_text())
    except ValueError as exc:
        raise ManifestError(f"{sp} is not valid JSON ({exc}); rerun the stage with --overwrite") from exc
    except OSError as exc:
        raise ManifestError(f"{sp}: cannot read ({exc.strerror}); rerun the stage with --overwrite") from exc
    if not isinstance(summary, dict):
        raise ManifestError(f"{sp} is not the summary of a finished dedupkit run (a JSON object with "
                            f"\"complete\": true and its \"inputs\"); rerun the stage with --overwrite")
    if not (root / MANIFEST_DIR).is_dir():
        raise ManifestError(f"{root} has a summary but no {MANIFEST_DIR}/ folder; rerun the stage with --overwrite")
    return summary


_LAZY = {
    "read": ("Manifest", "open_manifest", "read_manifest", "part_records", "part_record", "load_prior", "check_prior_fingerprints"),
    "write": ("SCHEMA", "LOW_CARDINALITY", "shard_table", "write_table_atomic", "write_summary", "summary_header",
              "versions"),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'dedupkit.manifest' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"dedupkit.manifest.{module}"), name)
