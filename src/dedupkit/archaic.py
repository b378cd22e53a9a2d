"""Modern forms for archaic English words, applied to what an embedder reads (never to the data).

Sentence embedders such as all-MiniLM-L6-v2 were trained on modern English. Early Modern English
forms (``thou hast``, ``he maketh``, ``unto thee``) are rare tokens to them, so an old translation
and a modern one of the same passage land further apart than their meaning is. The semantic
stage can embed ``modernise(text)`` instead (``--embed-normalize archaic``, opt-in): a fixed
word list of unambiguous archaic forms (pronouns, auxiliaries, ``unto``) and third-person ``-eth``
verbs. Words that are also modern words (``art``, ``wilt``, ``ere``) are left alone, so modern text
is unchanged apart from those rare forms. The manifest and ``apply`` always see the original text.
"""

from __future__ import annotations

import re
from typing import Sequence

EMBED_NORMALIZE = ("none", "archaic")

_WORDS = {
    "thou": "you", "thee": "you", "ye": "you", "thy": "your", "thine": "your", "thyself": "yourself",
    "hast": "have", "hath": "has", "doth": "does", "dost": "do", "didst": "did", "shalt": "shall",
    "canst": "can", "couldst": "could", "wouldst": "would", "shouldst": "should", "mayest": "may",
    "mightest": "might", "knowest": "know", "sayest": "say", "saith": "says",
    "unto": "to", "wherefore": "why", "whither": "where", "hither": "here", "thither": "there",
    "spake": "spoke", "hearken": "listen", "verily": "truly",
}
#: words ending in -eth that are not verbs
_ETH_EXCEPT = {"beneath", "teeth", "seth", "beth", "elizabeth", "nazareth", "japheth", "macbeth",
               "underneath", "breath", "death", "heath", "sheath", "wreath", "kenneth", "gareth",
               "bequeath", "hundredth", "twentieth", "thirtieth", "fortieth", "fiftieth", "sixtieth",
               "seventieth", "eightieth", "ninetieth"}
_VOWEL_PAIRS = ("ee", "ea", "oo", "ai", "oa", "ou", "ie", "ei")
_WORD = re.compile(r"[A-Za-z]+")
_ART_THOU = re.compile(r"\b([Aa])rt(\s+)thou\b|\b([Tt])hou(\s+)art\b")


def _eth(lw: str) -> str | None:
    """``maketh`` -> ``makes``, ``keepeth`` -> ``keeps``, ``goeth`` -> ``goes`` (no dictionary: the
    stem's ending decides whether the modern form kept an ``e``)."""
    if len(lw) < 5 or not lw.endswith("eth") or lw in _ETH_EXCEPT:
        return None
    stem = lw[:-3]
    if stem.endswith(("sh", "ch", "ss", "x", "z")) or stem[-1] in "aeiou":
        return stem + "es"  # wash -> washes, go -> goes
    if stem[-1] in "wy" or stem[-2] not in "aeiou" or stem[-3:-1] in _VOWEL_PAIRS:
        return stem + "s"  # know -> knows, walk -> walks, keep -> keeps
    return stem + "es"  # mak -> makes, giv -> gives (the modern verb ends in e)


def _replace(m: re.Match) -> str:
    w = m.group(0)
    lw = w.lower()
    # -eth only on lower-case words: a capitalised one is more often a name (Japheth, Vidyapeth)
    new = _WORDS.get(lw) or (_eth(lw) if w.islower() else None)
    if new is None:
        return w
    return new.capitalize() if w[0].isupper() else new


def _are(m: re.Match) -> str:
    """``art thou`` / ``thou art``: ``art`` is the verb only next to ``thou``."""
    if m.group(1):
        return f"{m.group(1)}re{m.group(2)}thou"
    return f"{m.group(3)}hou{m.group(4)}are"


def modernise(texts: Sequence[str]) -> list[str]:
    """Each text with archaic English word forms replaced by modern ones.

    Example:
        >>> modernise(["Thou art my son; he maketh me to lie down, and keepeth me unto thee"])
        ['You are my son; he makes me to lie down, and keeps me to you']
    """
    out = []
    for t in texts:
        if t:
            t = _WORD.sub(_replace, _ART_THOU.sub(_are, t))
        out.append(t)
    return out
