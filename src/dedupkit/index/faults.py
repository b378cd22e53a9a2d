"""Crash points in the index write paths, for the fault tests (no effect unless asked for).

Every step of an index write that leaves a different state on disk or in Redis calls
:func:`point`. Two environment variables drive them, read at each call:

- ``DEDUPKIT_FAULT=kill:N`` makes the process kill itself (SIGKILL, as an OOM killer or a
  cancelled CI job would) at the Nth point it passes; ``sleep:N:SECONDS`` pauses there instead
  (a test restarts the Redis server meanwhile).
- ``DEDUPKIT_FAULT_TRACE=FILE`` appends ``N name`` for every point passed, so a test learns how
  many points a run has and kills it at each.

Example:
    DEDUPKIT_FAULT=kill:7 dedupkit check drop/ --against corpus.idx -o out --update
"""

from __future__ import annotations

import os
import signal
import time

_passed = 0


def point(name: str) -> None:
    """Mark a crash point named ``name`` (see the module docstring)."""
    spec = os.environ.get("DEDUPKIT_FAULT")
    trace = os.environ.get("DEDUPKIT_FAULT_TRACE")
    if not spec and not trace:
        return
    global _passed
    _passed += 1
    if trace:
        with open(trace, "a") as fh:
            fh.write(f"{_passed} {name}\n")
    if not spec:
        return
    parts = spec.split(":")
    if len(parts) < 2 or not parts[1].isdigit() or int(parts[1]) != _passed:
        return
    if parts[0] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif parts[0] == "sleep":
        time.sleep(float(parts[2]) if len(parts) > 2 else 1.0)
