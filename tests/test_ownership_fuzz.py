"""Every writing command against random existing trees: nothing dedupkit did not write changes.

Hypothesis builds a tree of files, folders, symbolic links (inside the tree, to a folder outside
it, dangling), stale lock files, files with dedupkit's own names but other content, and genuine
dedupkit outputs (a stage folder, a clean corpus, a report page, an index) with files of the user's
added inside them. Then it runs one writing command (exact, fuzzy, substring, decontaminate, check,
run [--clean], apply, report, index create), with or without --overwrite, aimed at an existing path or a new one, reading the
tree or a fixed corpus. After it:

- every file, link and folder that dedupkit did not write is still there, unchanged (bytes, link
  target), inside the tree and outside it (the one exception: the file `report -o FILE --overwrite`
  names, which the user asked to replace; an input, summary or manifest is refused even then);
- a command that failed or was refused left the whole tree exactly as it was: no lock file, no
  folder, no half-written output, and dedupkit's own earlier outputs untouched.

``DEDUPKIT_FUZZ_EXAMPLES`` raises the number of trees (default 60).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.support import write_jsonl, write_parquet
from dedupkit.cli.main import cli

EXAMPLES = int(os.environ.get("DEDUPKIT_FUZZ_EXAMPLES", "60"))
pytestmark = pytest.mark.slow  # hypothesis builds and runs every writing command on many trees

NAMES = ["a", "b", "docs", "2025", "out", "clean", "x.jsonl", "y.parquet", "notes.txt", "report.html",
         "summary.json", "manifest", ".work", ".dedupkit.lock", ".dedupkit.json", "_dedupkit_apply.json",
         "part-00000.parquet", "01-exact", "pipeline.json", "index.json", "segments"]
CONTENT = [b"", b"precious", b'{"text": "hello world"}\n', b"{not json", b"pid 1",
           b'{"dedupkit": "0.1", "stage": "exact"}', b"PAR1garbage"]


def _invoke(*args, cwd: Path) -> int:
    old = os.getcwd()
    os.chdir(cwd)  # relative INPUT names, so that a copy of the corpus matches the manifests
    try:
        return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False).exit_code
    finally:
        os.chdir(old)


def _snapshot(*roots: Path) -> dict[str, tuple]:
    """Every entry below the roots: ('file', bytes), ('link', target) or ('dir',)."""
    out: dict[str, tuple] = {}
    for root in roots:
        for dirpath, dirs, files in os.walk(root):
            for name in dirs + files:
                p = Path(dirpath) / name
                if p.is_symlink():
                    out[str(p)] = ("link", os.readlink(p))
                elif p.is_dir():
                    out[str(p)] = ("dir",)
                else:
                    out[str(p)] = ("file", p.read_bytes())
    return out


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A corpus and the dedupkit outputs the trees reuse: a stage folder, a clean corpus, a page."""
    base = tmp_path_factory.mktemp("template")
    texts = [f"the record number {i % 5} with a few more words in it" for i in range(12)]
    write_jsonl(base / "data" / "a.jsonl", [{"id": f"a{i}", "text": t} for i, t in enumerate(texts)])
    write_parquet(base / "data" / "sub" / "b.parquet", [{"id": f"b{i}", "text": t.upper()} for i, t in enumerate(texts)])
    assert _invoke("exact", "data", "-o", "stage", "-q", cwd=base) == 0
    assert _invoke("apply", "data", "--manifest", "stage", "-o", "applied", cwd=base) == 0
    assert _invoke("report", "stage", "-o", "page.html", cwd=base) == 0
    assert _invoke("index", "create", "index", "--from", "data", "-q", cwd=base) == 0
    return base


_step = st.tuples(
    st.sampled_from(["file", "dir", "link-in", "link-out", "link-dangling", "ours"]),
    st.lists(st.sampled_from(NAMES), min_size=1, max_size=3),
    st.sampled_from(CONTENT),
    st.sampled_from(["stage", "applied", "page.html", "index"]),
)


def _build(root: Path, outside: Path, template: Path, steps) -> set[str]:
    """Make the tree; return the paths dedupkit wrote (copies of genuine outputs)."""
    ours: set[str] = set()
    for kind, parts, content, what in steps:
        p = root.joinpath(*parts)
        if p.exists() or p.is_symlink():
            continue
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            where = p.parent.resolve()
        except (OSError, RuntimeError):
            continue  # a parent is a file, a dangling link or a link loop
        if not where.is_relative_to(root.resolve()) and not where.is_relative_to(outside.resolve()):
            continue
        if kind == "file":
            p.write_bytes(content)
        elif kind == "dir":
            p.mkdir()
        elif kind == "link-in":
            p.symlink_to(root / parts[0] if len(parts) > 1 else root / "x.jsonl")
        elif kind == "link-out":
            p.symlink_to(outside)
        elif kind == "link-dangling":
            p.symlink_to(root / "no-such-thing")
        else:  # a genuine dedupkit output (made from the template corpus)
            src = template / what
            before = set(_snapshot(root))
            if src.is_dir():
                shutil.copytree(src, p, symlinks=True)
            else:
                shutil.copy2(src, p)
                ours.add(str(p))
            ours |= set(_snapshot(root)) - before
            if src.is_dir() and content:  # the user added a file of their own inside it
                (p / "mine.txt").write_bytes(content)
                ours.discard(str(p / "mine.txt"))
    return ours


def _target(root: Path, snap: dict, choice: int, new: str) -> Path:
    existing = sorted(snap)
    if choice == 0 or not existing:
        return root / new
    if choice == 1:
        return root
    p = Path(existing[choice % len(existing)])
    return p if choice % 3 else p / new


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          phases=[Phase.explicit, Phase.generate, Phase.shrink],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(steps=st.lists(_step, max_size=8),
       command=st.sampled_from(["exact", "fuzzy", "substring", "decontaminate", "check", "run", "run-clean",
                                "apply", "report", "index"]),
       choice=st.integers(0, 40), new=st.sampled_from(["new", "out", "fresh/deeper"]),
       overwrite=st.booleans(), read_tree=st.booleans(), skip=st.booleans())
def test_no_command_changes_what_it_did_not_write(template, steps, command, choice, new, overwrite, read_tree, skip):
    base = Path(tempfile.mkdtemp(prefix="dedupkit-fuzz-"))
    try:
        data = base / "data"
        shutil.copytree(template / "data", data)
        m = base / "m"
        shutil.copytree(template / "stage", m)
        shutil.copytree(template / "index", base / "index")
        root, outside = base / "tree", base / "outside"
        root.mkdir()
        outside.mkdir()
        (outside / "keep.txt").write_bytes(b"outside the tree")
        ours = _build(root, outside, template, steps)
        ours |= set(_snapshot(m))
        # a stale lock file is a killed dedupkit run's: the next run in that folder may remove it
        ours |= {p for p in _snapshot(root) if p.endswith("/.dedupkit.lock")}
        before = _snapshot(base)
        target = _target(root, _snapshot(root), choice, new)
        inputs = [root] if read_tree else ["data"]
        ow = ["--overwrite"] if overwrite else []
        if command in ("exact", "fuzzy"):
            args = [command, *inputs, "-o", target, "-q", *ow] + (["--skip", "m"] if skip and not read_tree else [])
        elif command == "substring":
            args = ["substring", *inputs, "-o", target, "-q", "--min-tokens", "5", *ow]
        elif command == "decontaminate":
            args = ["decontaminate", *inputs, "--against", "data/a.jsonl", "--mode", "cut", "-o", target, "-q", *ow]
        elif command == "check":
            args = ["check", *inputs, "--against", "index", "-o", target, "-q", *ow]
        elif command == "run":
            args = ["run", *inputs, "--stages", "exact", "-o", target, "-q", *ow]
        elif command == "run-clean":
            args = ["run", *inputs, "--stages", "exact", "-o", base / "runout", "--clean", target, "-q", *ow]
        elif command == "apply":
            args = ["apply", *inputs, "--manifest", "m", "-o", target, *ow]
        elif command == "report":
            args = ["report", "m", "-o", target, *ow]
        else:
            args = ["index", "create", target, "--from", *inputs, "-q", *ow]
        code = _invoke(*args, cwd=base)
        after = _snapshot(base)
        if code != 0:
            assert after == before, (args, _diff(before, after))
        else:
            if command == "report" and overwrite:
                ours.add(str(target))  # the one file named with --overwrite (never an input or summary)
            changed = {p for p, v in before.items() if after.get(p) != v and p not in ours}
            assert not changed, (args, sorted(changed))
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _diff(before: dict, after: dict) -> dict:
    return {"removed": sorted(set(before) - set(after)), "added": sorted(set(after) - set(before)),
            "changed": sorted(p for p in before if p in after and before[p] != after[p])}
