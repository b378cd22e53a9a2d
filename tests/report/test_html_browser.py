"""The report in a real headless Chromium: summary table, plots, cluster views, search, no JS error.

Chromium runs with a fresh profile and no network features; the page's first script records every
error (and console.error) into ``#js-errors[data-count]``, which ``--dump-dom`` serialises after the
page's scripts ran. ``test_detector_sees_errors`` proves that this detector catches a thrown error
and a syntax error, so a green run means the real page had none.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from dedupkit import api
from dedupkit.report.html import build_report
from tests.support.report import near_corpus

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install -y chromium; "
                                                "CI installs it with .ci/install-chromium.sh)"),
]

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-default-apps"]


class Dom(HTMLParser):
    """Elements of a dumped DOM as (tag, attrs) with the text inside selected ids."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict]] = []
        self.text: dict[str, str] = {}
        self._stack: list[str | None] = []

    def handle_starttag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        self.elements.append((tag, a))
        if tag not in ("br", "img", "input", "meta", "link", "hr", "wbr"):
            self._stack.append(a.get("id"))

    def handle_endtag(self, tag):
        if self._stack:
            self._stack.pop()

    def handle_data(self, data):
        for i in self._stack:
            if i:
                self.text[i] = self.text.get(i, "") + data

    def find(self, tag=None, **attrs) -> list[dict]:
        out = []
        for t, a in self.elements:
            if tag and t != tag:
                continue
            ok = True
            for k, v in attrs.items():
                k = k.rstrip("_").replace("_", "-")
                if k == "class":
                    ok = ok and v in a.get("class", "").split()
                else:
                    ok = ok and a.get(k) == v
            if ok:
                out.append(a)
        return out


def render(page: Path, profile: Path, fragment: str = "") -> Dom:
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom",
           page.resolve().as_uri() + fragment]
    # Chromium keeps crash reports under ~/.config whatever --user-data-dir says: a home of its own
    home = profile.parent / f"{profile.name}-home"
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_CACHE_HOME": str(home / ".cache")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = Dom()
    dom.feed(proc.stdout)
    assert dom.find("body"), f"no DOM dumped: {proc.stderr[-2000:]}"
    return dom


@pytest.fixture(scope="module")
def report_page(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    data, rows = near_corpus(tmp / "data")
    run = tmp / "run"
    # A real `dedupkit run`: exact, then fuzzy (MinHash-LSH) on what exact kept.
    api.run([str(data)], str(run), stages="exact,fuzzy", sets=["fuzzy.threshold=0.5"], id_column="id")
    page = tmp / "report.html"
    res = build_report(run, page)
    return page, res, tmp


def test_report_renders_in_chromium_without_errors(report_page):
    page, res, tmp = report_page
    dom = render(page, tmp / "profile1")
    (body,) = dom.find("body")
    assert body["data-ready"] == "1", "the page script did not finish"
    (errs,) = dom.find(id="js-errors")
    assert errs["data-count"] == "0", dom.text.get("js-errors")
    assert dom.find("table", id="summary-table")
    rows = [a for t, a in dom.elements if t == "tr"]
    assert len(rows) == 4  # header, 01-exact, 02-fuzzy, all stages
    assert dom.find("tr", class_="total")
    plots = dom.find("canvas", class_="plot")
    assert len(plots) == 5  # size + score for both stages, LSH curve for the fuzzy stage
    assert all(p.get("data-chart-ready") == "1" for p in plots)
    assert dom.find("canvas", id="lsh-1")
    clusters = dom.find("details", class_="cluster")
    assert len(clusters) == res.clusters_listed == res.clusters_total >= 4
    assert dom.find("del") and dom.find("ins")  # the diff is highlighted
    assert dom.find("input", id="search-input")


def test_search_shows_the_cluster_of_a_doc(report_page):
    page, res, tmp = report_page
    from tests.support import read_manifest

    manifest = read_manifest(page.parent / "run" / "02-fuzzy")
    target = next(r for r in manifest if r["stage"] == "fuzzy" and not r["keep"])
    dom = render(page, tmp / "profile2", fragment=f"#doc={target['doc_id']}")
    (errs,) = dom.find(id="js-errors")
    assert errs["data-count"] == "0", dom.text.get("js-errors")
    found = [a for t, a in dom.elements if t == "details" and a.get("data-key") == f"fuzzy:{target['cluster_id']}"]
    assert len(found) == 2  # once in the cluster list, once in the search result
    assert "search-result" in dom.text and target["doc_id"] in dom.text["search-result"]
    dom = render(page, tmp / "profile3", fragment="#doc=no-such-doc")
    assert "is in no duplicate cluster" in dom.text["search-result"]


BROKEN = [
    ("<script>document.body.setAttribute('x', notDefinedAnywhere());</script>", "notDefinedAnywhere"),
    ("<script>var x = {;</script>", "SyntaxError"),
    ("<script>Promise.reject(new Error('async boom'));</script>", "async boom"),
]


def test_detector_sees_errors(report_page):
    """A thrown error, a syntax error and a rejected promise, each in its own script, are all caught."""
    page, _, tmp = report_page
    broken = tmp / "broken.html"
    inject = "\n".join(bad for bad, _ in BROKEN)
    broken.write_text(page.read_text(encoding="utf-8").replace("</body>", inject + "\n</body>"), encoding="utf-8")
    dom = render(broken, tmp / "profile-broken")
    (errs,) = dom.find(id="js-errors")
    assert int(errs["data-count"]) == len(BROKEN)
    for _, needle in BROKEN:
        assert needle in dom.text["js-errors"]


def test_run_without_duplicates_renders_cleanly(tmp_path):
    from tests.support import make_rows, write_parquet

    write_parquet(tmp_path / "d" / "a.parquet", make_rows(["one", "two", "three"], prefix="u"))
    api.exact([str(tmp_path / "d")], str(tmp_path / "out"), id_column="id")
    page = tmp_path / "r.html"
    build_report(tmp_path / "out", page)
    dom = render(page, tmp_path / "profile")
    (errs,) = dom.find(id="js-errors")
    assert errs["data-count"] == "0", dom.text.get("js-errors")
    assert dom.find("body")[0]["data-ready"] == "1"
    assert all(p.get("data-chart-ready") == "1" for p in dom.find("canvas", class_="plot"))
    assert "No duplicate clusters" in dom.text["largest-0"]
