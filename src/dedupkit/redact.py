"""One place that hides secrets (passwords in URLs) before anything is printed or written.

Every output path goes through it: ``summary.json`` (``write_summary``), ``--json`` and the
error line of every command, the HTML report, the index commands' stdout, and the location an
index store reports. A ``redis://user:PASSWORD@host`` URL becomes ``redis://user:***@host``, and
``password=``/``token=``-style query parameters become ``password=***``.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
# scheme://[user]:password@  (greedy up to the last '@' before the host: an unencoded '@' in the
# password is how urlparse and redis-py read it too)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s:/@]*:)[^\s/]+@")
# scheme://password@ with no user (redis://SECRET@host is how redis-py reads a bare password)
_BARE = re.compile(r"(?i)\b((?:redis|rediss|valkey|valkeys)://)(?![^\s@/]*:)[^\s/]+@")
_QUERY = re.compile(r"(?i)([?&;](?:password|passwd|pass|pwd|secret|token|auth|api[_-]?key|access[_-]?key|"
                    r"sig|signature|x-amz-signature|x-amz-credential|x-amz-security-token|access_token|"
                    r"sas[_-]?token|account[_-]?key|secret[_-]?access[_-]?key|x-goog-signature|x-goog-credential)=)[^&\s;#]*")


def redact(text: str) -> str:
    """``text`` with URL passwords and secret query parameters replaced by ``***``.

    Example:
        >>> redact("redis://app:hunter2@db:6379/0?prefix=x")
        'redis://app:***@db:6379/0?prefix=x'
    """
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: m.group(1) + MASK + "@", text)
    text = _BARE.sub(lambda m: m.group(1) + MASK + "@", text)
    return _QUERY.sub(lambda m: m.group(1) + MASK, text)


def redact_obj(obj: Any) -> Any:
    """A copy of a JSON-like value (dicts, lists, strings) with :func:`redact` applied to every string."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {redact_obj(k) if isinstance(k, str) else k: redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_obj(v) for v in obj]
    return obj
