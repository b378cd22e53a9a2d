"""dedupkit's exceptions and the process exit codes they map to.

Exit codes (documented in the README and in ``dedupkit --help``):

====  =====================================================================
0     done
1     failure (bad input, bad config, I/O error, ...)
2     usage error (unknown option, missing argument) - raised by Click
3     check failed: ``dedupkit check`` found a duplicate rate above ``--max-dup-rate``
4     guardrail: a stage would drop more than ``--max-drop-rate`` of its input
====  =====================================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CHECK_FAILED = 3
EXIT_GUARDRAIL = 4


class DedupkitError(Exception):
    """Base class of every error dedupkit raises on purpose.

    The message is meant for the user: it names the file, the row or line, and the fix.
    """

    exit_code = EXIT_FAILURE


class InputError(DedupkitError):
    """A shard is missing, unreadable, of an unknown format, or holds a bad record."""


class ConfigError(DedupkitError):
    """An option or config value is invalid (unknown key, wrong type, out of range)."""


class ManifestError(DedupkitError):
    """A manifest is missing, incomplete, or does not match the shards it is applied to."""


class OutputError(DedupkitError):
    """The output folder exists, is locked by another run, or cannot be written."""


class MissingExtraError(DedupkitError):
    """An optional dependency is not installed; the message names the pip extra."""


class GuardrailError(DedupkitError):
    """A stage would drop more than the allowed share of its input (``--max-drop-rate``)."""

    exit_code = EXIT_GUARDRAIL


class CheckFailed(DedupkitError):
    """``dedupkit check`` found more duplicates than ``--max-dup-rate`` allows."""

    exit_code = EXIT_CHECK_FAILED


def require(module: str, extra: str):
    """Import an optional dependency or raise a MissingExtraError naming the extra.

    Args:
        module: the module to import, e.g. ``"faiss"``.
        extra: the dedupkit extra that installs it, e.g. ``"semantic"``.

    Returns:
        The imported module.

    Raises:
        MissingExtraError: if the import fails.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtraError(
            f"{module} is not installed ({exc}); install it with: pip install 'dedupkit-corpus[{extra}]'"
        ) from exc
