"""dedupkit.archaic: archaic English forms -> modern ones, for what the embedder reads."""

from __future__ import annotations

import pytest

from dedupkit.archaic import modernise


@pytest.mark.parametrize("old,new", [
    ("Thou art my son", "You are my son"),
    ("art thou he?", "are you he?"),
    ("He maketh me to lie down", "He makes me to lie down"),
    ("he keepeth and goeth and washeth and knoweth", "he keeps and goes and washes and knows"),
    ("unto thee and thy house; ye hath", "to you and your house; you has"),
    ("Thy will be done", "Your will be done"),
])
def test_archaic_forms_become_modern(old, new):
    assert modernise([old]) == [new]


@pytest.mark.parametrize("text", [
    "Modern art is beneath the teeth of death.",  # art without thou, -eth nouns
    "Elizabeth and Japheth met in Nazareth at Bhartiya Vidyapeth.",  # capitalised: names
    "How do I learn Python in 2 weeks?",
    "",
])
def test_modern_text_is_unchanged(text):
    assert modernise([text]) == [text]
