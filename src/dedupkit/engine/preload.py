"""What the local engine's fork server imports once, before it forks any worker process.

Importing it is the fork server's whole start-up (:func:`dedupkit.engine.local._new_pool`): Python,
numpy, pyarrow and the scan modules, ~0.3 CPU seconds that a spawned worker paid again each. Every
worker is then forked from that process in a few milliseconds, with those modules already loaded.

A fork is safe only from a process with one thread (another thread may hold a lock, of malloc or of a
library, that the child inherits held for ever). numpy's OpenBLAS starts its thread pool when it is
imported, and pyarrow's jemalloc a background purging thread, so both are told not to, here, before
anything imports them: the fork server stays single-threaded (tests/engine/test_local.py checks it).
The workers inherit the settings: one BLAS thread each (``--workers`` processes already use the
cores; dedupkit's worker tasks do no BLAS work) and jemalloc without its purging thread (dedupkit
uses Arrow's default pool, mimalloc, not jemalloc).

Nothing imported here may import fsspec: it reads credentials from ``FSSPEC_*`` environment
variables when it is imported (:func:`dedupkit.io.fs._register`), and a worker takes the main
process's environment only after the fork (:func:`dedupkit.engine.local._init_worker`).
"""

from __future__ import annotations

import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"
_JE = "background_thread:false"
os.environ["JE_ARROW_MALLOC_CONF"] = ",".join(filter(None, [os.environ.get("JE_ARROW_MALLOC_CONF"), _JE]))

import numpy.ma  # noqa: E402,F401 - pa.array(ndarray) checks for masked arrays: 0.02 s at its first call
import dedupkit.scan  # noqa: E402,F401 - numpy, pyarrow, the readers: every scan task's modules
import dedupkit.stages.exact  # noqa: E402,F401 - the mappers of the two stages most runs scan with
import dedupkit.stages.fuzzy.tasks  # noqa: E402,F401
