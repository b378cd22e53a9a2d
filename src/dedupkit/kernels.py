"""The C kernels, chosen once: every module that has a C fast path asks here, never imports them.

dedupkit ships three optional C extensions, built by ``setup.py`` when a C compiler is there:
``_speedups`` (shingling, MinHash, hashing, whitespace, set kernels, greedy centres), ``_substring``
(substring dedup's tokenizer and window hashes) and ``_decon`` (decontamination's n-gram scan).
Each has a pure Python/numpy twin that gives the same results (tests compare them), only slower.

Which ones run is decided when this module is first imported, from the ``DEDUPKIT_KERNELS``
environment variable:

- ``auto`` (default): every extension that was built; the others fall back to Python;
- ``python``: no C at all (to rule the C code out when hunting a bug; CI runs the suite this way);
- ``c``: every extension, or a :class:`~dedupkit.errors.ConfigError` naming those missing.

Worker processes (the local engine's, and those of a Ray instance dedupkit starts) inherit the
variable, so a run uses one choice throughout. ``dedupkit --version`` and every ``summary.json``
(key ``kernels``) say what ran.

Example:
    >>> from dedupkit import kernels
    >>> kernels.describe()["mode"] in ("c", "python", "mixed")
    True
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from types import ModuleType
from typing import Iterator

from dedupkit.errors import ConfigError

#: The environment variable that chooses the kernels: auto, c or python.
ENV = "DEDUPKIT_KERNELS"
#: The extensions, by the attribute of this module that holds each (None: the Python twin runs).
EXTENSIONS = {"speedups": "_speedups", "substring": "_substring", "decon": "_decon"}

speedups: ModuleType | None = None
substring: ModuleType | None = None
decon: ModuleType | None = None
_requested = "auto"


def _load(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"dedupkit.{name}")
    except ImportError:
        return None


def use(mode: str | None = None) -> dict[str, object]:
    """Choose the kernels again (``None``: from ``DEDUPKIT_KERNELS``); returns :func:`describe`.

    Only this process changes: workers choose from the environment variable when they start.

    Raises:
        ConfigError: an unknown mode, or ``c`` while some extension was not built.
    """
    global speedups, substring, decon, _requested
    raw = os.environ.get(ENV, "") if mode is None else mode
    requested = (raw or "auto").strip().lower()
    if requested not in ("auto", "c", "python"):
        raise ConfigError(f"{ENV}={raw!r}: expected auto, c or python")
    loaded = {attr: (None if requested == "python" else _load(mod)) for attr, mod in EXTENSIONS.items()}
    missing = [EXTENSIONS[a] for a, m in loaded.items() if m is None]
    if requested == "c" and missing:
        raise ConfigError(
            f"{ENV}=c but the C extension(s) {', '.join(missing)} were not built in this install; "
            "reinstall with a C compiler (pip install -v shows the build error), or unset "
            f"{ENV} to use the Python fallbacks")
    if requested == "auto" and missing and mode is None:
        # not silent: a build without a C compiler runs several times slower
        logging.getLogger(__name__).warning(
            "the C kernels %s were not built in this install; using the Python fallbacks (same "
            "results, slower). Reinstall with a C compiler, or set %s=python to silence this",
            ", ".join(missing), ENV)
    speedups, substring, decon = loaded["speedups"], loaded["substring"], loaded["decon"]
    _requested = requested
    return describe()


def describe() -> dict[str, object]:
    """Which kernels run in this process.

    Returns:
        ``{"mode": "c" | "python" | "mixed", "requested": auto|c|python, "c": [extensions in C],
        "python": [extensions on their Python fallback]}``.
    """
    state = {"speedups": speedups, "substring": substring, "decon": decon}
    c = [EXTENSIONS[a] for a, m in state.items() if m is not None]
    py = [EXTENSIONS[a] for a, m in state.items() if m is None]
    mode = "c" if not py else "python" if not c else "mixed"
    return {"mode": mode, "requested": _requested, "c": c, "python": py}


def summary_line() -> str:
    """One line for ``dedupkit --version``: ``kernels: c`` or, e.g., ``kernels: mixed (python: _decon)``."""
    d = describe()
    if d["mode"] == "mixed":
        return f"kernels: mixed (c: {', '.join(d['c'])}; python: {', '.join(d['python'])})"
    forced = " (forced by DEDUPKIT_KERNELS)" if d["requested"] != "auto" else ""
    return f"kernels: {d['mode']}{forced}"


@contextlib.contextmanager
def forced(mode: str) -> Iterator[dict[str, object]]:
    """Run a block with other kernels in this process (tests compare C and Python this way).

    Example:
        >>> with forced("python"):
        ...     describe()["mode"]
        'python'
    """
    before = {"speedups": speedups, "substring": substring, "decon": decon, "requested": _requested}
    try:
        yield use(mode)
    finally:
        globals().update(speedups=before["speedups"], substring=before["substring"], decon=before["decon"],
                         _requested=before["requested"])


def call_python(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with the Python kernels (tests compare it with the C result).

    Example:
        >>> from dedupkit.normalize import char_lengths
        >>> import pyarrow as pa
        >>> call_python(char_lengths, pa.array(["añb"])).tolist()
        [3]
    """
    with forced("python"):
        return fn(*args, **kwargs)


use()
