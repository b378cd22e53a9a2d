"""The summary of a finished stage or ``dedupkit run`` folder: per-stage counts (``dedupkit run --stats``)."""

from __future__ import annotations

import os

from dedupkit.explain import stage_counts
from dedupkit.manifest import open_manifest, output_root


def stats(path: str | os.PathLike) -> dict:
    """Per-stage counts of a finished ``dedupkit run`` folder (or of a single stage's folder).

    Returns:
        ``{"path", "kind": "run"|"stage", "stages": [row...], "total": row}`` where a row holds
        stage, dir, the labelled counts of :func:`dedupkit.explain.stage_counts` (rows = every
        input row, considered = the stage's own input, dropped_by_stage = its own drops, kept,
        dropped = every drop so far), clusters, largest_cluster, drop_rate (dropped_by_stage /
        considered) and time_s (the stage's run time when it last ran). The total row is all
        stages together: considered = rows, dropped_by_stage = dropped.

    Raises:
        ManifestError: the folder holds no finished run.
    """
    root = output_root(path)
    # The counts come from the summaries, but only after the manifests they describe passed the
    # contract check: stats must never disagree with what apply would write.
    summary = open_manifest(root).summary
    rows = []
    if summary.get("pipeline"):
        for entry in summary.get("stages", []):
            s = open_manifest(root / entry["dir"]).summary
            rows.append(_stats_row(entry["name"], entry["dir"], s))
        total = _stats_row("total", str(root), summary)
        total["time_s"] = round(sum(r["time_s"] for r in rows), 3)
        return {"path": str(root), "kind": "run", "stages": rows, "total": total}
    row = _stats_row(summary.get("stage", "stage"), ".", summary)
    total = _stats_row("total", str(root), {"pipeline": True, "counts": summary.get("counts", {}),
                                            "timings": summary.get("timings", {})})
    total["largest_cluster"], total["clusters"] = row["largest_cluster"], row["clusters"]
    return {"path": str(root), "kind": "stage", "stages": [row], "total": total}


def _stats_row(name: str, d: str, s: dict) -> dict:
    return {"stage": name, "dir": d, **stage_counts(s),
            "time_s": float(s.get("timings", {}).get("total_s", 0.0))}
