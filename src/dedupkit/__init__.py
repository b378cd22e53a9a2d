"""dedupkit: exact, fuzzy and semantic deduplication of text corpora with keep/drop manifests."""

__version__ = "0.1.0"

from dedupkit.errors import (  # noqa: E402
    CheckFailed,
    ConfigError,
    DedupkitError,
    GuardrailError,
    InputError,
    ManifestError,
)

__all__ = [
    "__version__",
    "DedupkitError",
    "InputError",
    "ConfigError",
    "ManifestError",
    "GuardrailError",
    "CheckFailed",
]
