"""Runs the docstring examples of src/dedupkit (``pytest --doctest-modules src/dedupkit``, which
tests/test_doctests.py runs) on a real corpus: every example sees ``data``, a folder holding the
four-row JSONL corpus of :data:`tests.support.DOC_ROWS`, and ``tmp``, a fresh temporary folder that
is also the working directory, so what an example writes lands there."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _doctest_corpus(request):
    from _pytest.doctest import DoctestItem

    if not isinstance(request.node, DoctestItem):
        return
    from tests.support import write_doc_corpus

    tmp = request.getfixturevalue("tmp_path")
    request.getfixturevalue("monkeypatch").chdir(tmp)
    request.getfixturevalue("doctest_namespace").update(data=write_doc_corpus(tmp / "data"), tmp=tmp)
