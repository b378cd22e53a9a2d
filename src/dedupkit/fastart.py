"""Process start-up costs of the CLI and of the local engine's worker processes.

pyarrow probes for pandas the first time it converts a numpy array (``pa.array(ndarray)`` asks
"is this a pandas Series?"), and that probe imports pandas when it is installed: about 0.2 CPU
seconds, in the CLI process and again in every worker process, for a library dedupkit never uses.
On a 1.5-second ``dedupkit exact`` that is an eighth of the run, paid once more per worker.

:func:`skip_pandas_probe` installs an import hook that answers pyarrow's probes with "pandas is not
installed". Only an import of pandas made while dedupkit's own code is the nearest Python caller
(pyarrow's Python modules passed over) is refused (dedupkit never imports pandas, so that is a probe
of pyarrow's, called from dedupkit); anything else importing pandas gets it as usual, and pyarrow's
explicit conversions (``Table.to_pandas``, ``Table.from_pandas``) still work once pandas is
imported. Library callers are not affected: only the CLI entry point and the engine's worker
processes install the hook.
"""

from __future__ import annotations

import sys

_HIDDEN = "pandas"
_PASS = ("importlib", "_frozen_importlib", "pyarrow")


class _PandasProbe:
    """A meta-path finder that refuses ``import pandas`` when dedupkit code asks (pyarrow's probe)."""

    def find_spec(self, name, path=None, target=None):  # noqa: D401 - the importlib protocol
        if name != _HIDDEN:
            return None
        frame = sys._getframe(1)
        # past the import machinery and pyarrow's own Python layer (pyarrow.compute, ...)
        while frame is not None and frame.f_globals.get("__name__", "").startswith(_PASS):
            frame = frame.f_back
        caller = frame.f_globals.get("__name__", "") if frame is not None else ""
        if caller == "dedupkit" or caller.startswith("dedupkit."):
            raise ModuleNotFoundError("pandas is not used by dedupkit", name=_HIDDEN)
        return None  # someone else wants pandas: import it as usual


def skip_pandas_probe() -> None:
    """Answer pyarrow's "is pandas there?" probes from dedupkit code with no (see the module docstring)."""
    if _HIDDEN in sys.modules or any(isinstance(f, _PandasProbe) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _PandasProbe())


# OpenBLAS (numpy's BLAS) starts one thread per core when numpy is imported, and each of them
# spins for 2**28 cycles (its default THREAD_TIMEOUT, ~0.1 s) waiting for a first job before it
# sleeps: 0.06 CPU seconds per process here, on the cores the command's workers need, in a CLI
# process that usually makes no BLAS call at all. 2**4 cycles: the threads sleep at once, and a
# BLAS call wakes them as it would after any pause (its results do not change).
_BLAS_TIMEOUT = ("OPENBLAS_THREAD_TIMEOUT", "4")


def quiet_blas_threads() -> None:
    """Before numpy is imported: OpenBLAS's threads sleep instead of spinning for their first job
    (see ``_BLAS_TIMEOUT``). A value the user set is kept; once numpy is loaded, it is too late."""
    import os

    if "numpy" not in sys.modules:
        os.environ.setdefault(*_BLAS_TIMEOUT)
