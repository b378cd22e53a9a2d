"""Deduplication stages. Each decides keep/drop for every document; :mod:`dedupkit.apply` removes.

The registry of stages (:mod:`dedupkit.stages.registry`) is importable without numpy or pyarrow;
``Stage``, ``Mapper`` and ``Decisions`` are loaded on first use.
"""

from dedupkit.stages.registry import build_stage, known_stages, register_stage, unregister_stage

__all__ = ["Decisions", "Mapper", "Stage", "build_stage", "known_stages", "register_stage", "unregister_stage"]


def __getattr__(name: str):
    if name in ("Decisions", "Mapper", "Stage"):
        from dedupkit.stages import base

        return getattr(base, name)
    raise AttributeError(f"module 'dedupkit.stages' has no attribute {name!r}")
