"""dedupkit: exact, fuzzy and semantic deduplication of text corpora with keep/drop manifests.

Each stage reads Parquet / JSONL shards and writes a manifest (one row per input row: keep or
drop, and the document it duplicates); :func:`apply` writes the rows every manifest keeps.
Settings are frozen config objects (:mod:`dedupkit.settings`); any setting may also be passed as
a keyword.

Example:
    >>> import dedupkit
    >>> res = dedupkit.fuzzy([str(data)], str(tmp / "fuzzy"), dedupkit.FuzzyConfig(threshold=0.7),
    ...                      id_column="id")
    >>> res.counts["rows"], res.counts["dropped"]
    (4, 1)
    >>> dedupkit.apply([str(data)], [str(res.out)], str(tmp / "clean")).summary["kept"]
    3

The stage functions and config classes are imported on first use, so ``import dedupkit`` (and
``dedupkit --help``) stay fast.
"""

from __future__ import annotations

import sys as _sys
import types as _types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from dedupkit.errors import (  # noqa: E402
    CheckFailed,
    ConfigError,
    DedupkitError,
    GuardrailError,
    InputError,
    ManifestError,
)

if TYPE_CHECKING:  # pragma: no cover
    from dedupkit.api import (
        AuditResult, StageResult, apply, audit, check, decontaminate, exact, fuzzy, index_add, index_create, index_info, inspect,
        run, semantic, stats, substring,
    )
    from dedupkit.settings import (
        AuditConfig, DecontaminateConfig, ExactConfig, FuzzyConfig, IndexConfig, InspectConfig, KeepConfig,
        ReadConfig, ReportConfig, RunConfig, SemanticConfig, SubstringConfig,
    )
    from dedupkit.stages.registry import register_stage

_API = ("exact", "fuzzy", "semantic", "substring", "audit", "decontaminate", "run", "apply", "check",
        "index_create", "index_add", "index_info", "inspect", "stats", "StageResult",
        "AuditResult")
_SETTINGS = ("ExactConfig", "FuzzyConfig", "SemanticConfig", "SubstringConfig", "AuditConfig",
             "DecontaminateConfig", "IndexConfig", "KeepConfig", "ReadConfig", "RunConfig", "ReportConfig",
             "InspectConfig")

__all__ = [
    "__version__",
    *_API,
    *_SETTINGS,
    "register_stage",
    "DedupkitError",
    "InputError",
    "ConfigError",
    "ManifestError",
    "GuardrailError",
    "CheckFailed",
]


def __getattr__(name: str) -> Any:
    if name in _API:
        from dedupkit import api

        return getattr(api, name)
    if name in _SETTINGS:
        from dedupkit import settings

        return getattr(settings, name)
    if name == "register_stage":
        from dedupkit.stages.registry import register_stage

        return register_stage
    raise AttributeError(f"module 'dedupkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(_types.ModuleType):
    """``dedupkit.apply`` and ``dedupkit.decontaminate`` are both functions of the API and
    submodules: importing a submodule must not replace the function on the package. Import from
    the submodules with ``from dedupkit.apply import apply_manifests`` (``import dedupkit.apply as
    m`` gives the function). The HTML report is ``dedupkit.api.report`` (``dedupkit.report`` is the
    package)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _API and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
