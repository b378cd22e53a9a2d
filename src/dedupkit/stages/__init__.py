"""Deduplication stages. Each decides keep/drop for every document; :mod:`dedupkit.apply` removes."""

from dedupkit.stages.base import Decisions, Mapper, Stage

__all__ = ["Decisions", "Mapper", "Stage"]
