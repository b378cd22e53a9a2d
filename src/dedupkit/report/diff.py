"""Word-level diff of a representative and one of its duplicates, shared by the HTML report and
``dedupkit inspect``.

A diff is a list of ``(tag, text)`` segments that, read in order, spell out the duplicate with the
representative's words that it lacks interleaved: ``"="`` words both share, ``"-"`` words only the
representative has, ``"+"`` words only the duplicate has. Whitespace travels with the word before it,
so joining the ``"="`` and ``"+"`` segments gives back the duplicate's text.
"""

from __future__ import annotations

import difflib
import re

_TOKEN = re.compile(r"\s*\S+\s*|\s+")

# SequenceMatcher is quadratic in the worst case; texts are truncated before diffing, and this
# bound keeps one diff well under a second even for pathological inputs.
MAX_DIFF_WORDS = 3000


def tokens(text: str) -> list[str]:
    """Split ``text`` into words with their surrounding whitespace attached."""
    return _TOKEN.findall(text)


def word_diff(rep: str, dup: str) -> list[tuple[str, str]]:
    """Diff two texts word by word.

    Args:
        rep: the representative (kept) text.
        dup: the duplicate's text.

    Returns:
        Coalesced ``(tag, text)`` segments, tags ``"="``, ``"-"`` (only in ``rep``) and ``"+"``
        (only in ``dup``). Words compare without their whitespace, so re-wrapped copies diff as equal.

    Example:
        >>> word_diff("the quick fox", "the slow fox")
        [('=', 'the '), ('-', 'quick '), ('+', 'slow '), ('=', 'fox')]
    """
    a_tok, b_tok = tokens(rep), tokens(dup)
    if len(a_tok) > MAX_DIFF_WORDS or len(b_tok) > MAX_DIFF_WORDS:
        a_tok, b_tok = a_tok[:MAX_DIFF_WORDS], b_tok[:MAX_DIFF_WORDS]
    a_key = [t.strip() for t in a_tok]
    b_key = [t.strip() for t in b_tok]
    sm = difflib.SequenceMatcher(None, a_key, b_key, autojunk=False)
    out: list[tuple[str, str]] = []

    def add(tag: str, text: str) -> None:
        if not text:
            return
        if out and out[-1][0] == tag:
            out[-1] = (tag, out[-1][1] + text)
        else:
            out.append((tag, text))

    for op, i1, i2, j1, j2 in sm.get_opcodes():
        if op == "equal":
            add("=", "".join(b_tok[j1:j2]))
        else:
            if i2 > i1:
                add("-", "".join(a_tok[i1:i2]))
            if j2 > j1:
                add("+", "".join(b_tok[j1:j2]))
    return out


def diff_stats(segments: list[tuple[str, str]]) -> dict[str, int]:
    """Count the words in each kind of segment: ``{"same": n, "removed": n, "added": n}``."""
    counts = {"same": 0, "removed": 0, "added": 0}
    name = {"=": "same", "-": "removed", "+": "added"}
    for tag, text in segments:
        counts[name[tag]] += len(text.split())
    return counts


def plain(segments: list[tuple[str, str]]) -> str:
    """Render a diff as plain text, wdiff style: ``[-removed-]`` and ``{+added+}``."""
    parts = []
    for tag, text in segments:
        if tag == "=":
            parts.append(text)
        else:
            core = text.strip()
            lead = text[: len(text) - len(text.lstrip())]
            trail = text[len(text.rstrip()):]
            mark = f"[-{core}-]" if tag == "-" else f"{{+{core}+}}"
            parts.append(lead + mark + trail if core else text)
    return "".join(parts)
