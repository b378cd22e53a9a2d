"""Make data safe to print on a terminal.

Document texts, doc_ids, shard names and column names come from the data, and data can hold
terminal control sequences: clear-screen (CSI), window titles, clipboard writes (OSC 52) and
hyperlinks (OSC 8). Printed raw they act on the user's terminal, whether or not colors are on and
even through a pipe into ``less -R``. Every control character (C0 other than newline and tab,
DEL, C1) and the bidirectional overrides are shown as visible ``\\xNN`` / ``\\uNNNN`` escapes; with
no raw ESC or C1 byte left, no escape sequence can start.
"""

from __future__ import annotations

import re

# C0 controls except \t and \n, DEL, C1 controls (0x80-0x9f: 8-bit CSI, OSC, DCS ...), and the
# bidi embedding/override/isolate characters that reorder what the terminal shows.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CONTROL_KEEP_NL = _CONTROL
_CONTROL_ONE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match) -> str:
    c = ord(m.group(0))
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def safe_text(text: str, one_line: bool = False) -> str:
    """``text`` with every control character shown as a visible escape (newlines and tabs kept,
    unless ``one_line``).

    Example:
        >>> safe_text("ok\\x1b]52;c;aGk=\\x07 done")
        'ok\\\\x1b]52;c;aGk=\\\\x07 done'
    """
    pattern = _CONTROL_ONE_LINE if one_line else _CONTROL_KEEP_NL
    return pattern.sub(_escape, text) if pattern.search(text) else text


def safe_json(text: str) -> str:
    """JSON text (from ``json.dumps(..., ensure_ascii=False)``) with C1 and bidi characters escaped
    as ``\\uNNNN`` (JSON already escapes C0; C1 is left raw, and 0x9b is an 8-bit CSI)."""
    return re.sub("[\x7f-\x9f\u202a-\u202e\u2066-\u2069]", lambda m: f"\\u{ord(m.group(0)):04x}", text)
