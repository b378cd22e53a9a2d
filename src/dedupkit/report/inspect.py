"""``dedupkit inspect``: look up clusters of a finished run (by cluster id, doc_id, or size)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from dedupkit import settings as _S
from dedupkit.errors import ConfigError, InputError
from dedupkit.report.model import (
    Cluster, StageRun, attach_texts, build_cluster, find_doc, load_run, require_stage, select_clusters,
    stage_table,
)


@dataclass
class Finding:
    """One answer of ``inspect``: a cluster, or a note about a document that is in none."""

    stage: StageRun
    cluster: Cluster | None = None
    note: str | None = None
    highlight: str | None = None


@dataclass
class InspectResult:
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def inspect_run(out: str | os.PathLike, *, cluster: int | None = None, doc: str | None = None,
                largest: int | None = None, stage: str | None = None,
                max_members: int = _S.InspectConfig.max_members,
                max_chars: int = _S.InspectConfig.max_chars) -> InspectResult:
    """Find clusters of the run in ``out`` and load their texts and diffs.

    Exactly one of ``cluster``, ``doc`` and ``largest`` is given.

    Args:
        out: a stage output folder or a ``dedupkit run`` folder.
        cluster: a cluster_id (looked up in every stage, or in ``stage``).
        doc: a doc_id: the cluster it belongs to in each stage.
        largest: the N largest clusters of each stage.
        stage: only this stage (name, or sub-folder name of a pipeline run).
        max_members: duplicates listed per cluster (the least similar first).
        max_chars: characters of each text shown (the diff looks at up to 20,000 of each).

    Raises:
        ConfigError: not exactly one of cluster/doc/largest, or a bad number.
        InputError: the cluster or document is not in the run.
        ManifestError: ``out`` is not a finished run.

    Example:
        >>> import dedupkit
        >>> from dedupkit.report.inspect import inspect_run
        >>> res = dedupkit.exact([str(data)], str(tmp / "exact"), id_column="id")
        >>> cluster = inspect_run(res.out, largest=3).findings[0].cluster
        >>> cluster.representative.doc_id, [m.doc_id for m in cluster.duplicates]
        ('d1', ['d2'])
    """
    given = [x is not None for x in (cluster, doc, largest)]
    if sum(given) != 1:
        raise ConfigError("pass exactly one of --cluster ID, --doc DOC_ID, --largest N")
    if largest is not None and largest < 1:
        raise ConfigError(f"--largest must be at least 1, got {largest}")
    if max_members < 1:
        raise ConfigError(f"--max-members must be at least 1, got {max_members}")
    run = load_run(out)
    stages = require_stage(run, stage)
    res = InspectResult()
    for sr in stages:
        st = stage_table(sr)
        found: list[Finding] = []
        if largest is not None:
            ids, _, _ = select_clusters(st, largest, 0)
            for cid in ids[:largest]:
                c = build_cluster(st, cid, max_members)
                if c:
                    found.append(Finding(sr, c))
        elif cluster is not None:
            c = build_cluster(st, cluster, max_members)
            if c:
                found.append(Finding(sr, c))
        else:
            pos = find_doc(st, doc)  # type: ignore[arg-type]
            if pos is not None:
                cid = int(st.cid[pos])
                if cid < 0:
                    what = "kept: it has no duplicate" if st.keep[pos] else "dropped without a cluster"
                    found.append(Finding(sr, note=f"{doc}: {what} in {sr.label}"))
                else:
                    # Make sure the asked-for document is listed even in a huge cluster.
                    c = build_cluster(st, cid, int(max(max_members, st.members(cid).size)))
                    if c:
                        _focus(c, doc, max_members)  # type: ignore[arg-type]
                        found.append(Finding(sr, c, highlight=doc))
        res.findings.extend(found)
    for sr in stages:
        listed = [f.cluster for f in res.findings if f.stage is sr and f.cluster is not None]
        if listed:
            res.notes.extend(attach_texts(listed, sr.summary, max_chars))
    if not res.findings:
        where = f"stage {stage}" if stage else str(run.root)
        if cluster is not None:
            raise InputError(f"no cluster {cluster} in {where}; list clusters with --largest 10")
        if doc is not None:
            raise InputError(f"doc_id {doc!r} is not in {where}; doc_ids are the --id-column values "
                             "(or 'shard:row' when the run had no --id-column)")
    return res


def _focus(c: Cluster, doc: str, max_members: int) -> None:
    """Trim a cluster's listed duplicates to ``max_members``, keeping ``doc`` among them."""
    if len(c.duplicates) <= max_members:
        return
    keep = c.duplicates[:max_members]
    if doc != c.representative.doc_id and all(m.doc_id != doc for m in keep):
        keep[-1] = next(m for m in c.duplicates if m.doc_id == doc)
    c.hidden += len(c.duplicates) - len(keep)
    c.duplicates = keep


__all__ = ["Finding", "InspectResult", "inspect_run"]
