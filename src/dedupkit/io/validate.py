"""Refuse, before any work starts, a shard that would hang a run or fail only after the whole scan.

The class of input this catches: paths that are not regular files (a FIFO blocks the first read
for ever; ``/dev/zero`` or ``/dev/urandom`` never ends), files that cannot be opened (permissions),
and files whose first bytes say they are not what their suffix says (a Parquet or gzip file named
``.jsonl`` reads as millions of "malformed JSON" lines, and with ``--on-bad-record skip`` used to
"succeed" with every row dropped). Each check costs one ``stat`` and one read of a few bytes.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

from dedupkit.errors import InputError
from dedupkit.io import fs

if TYPE_CHECKING:
    from dedupkit.io.shards import Shard

PARQUET_MAGIC = b"PAR1"
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ARROW_MAGIC = b"ARROW1"

# first bytes -> what the file probably is, and the suffix that reads it
_SNIFF = (
    (PARQUET_MAGIC, "a Parquet file", ".parquet"),
    (GZIP_MAGIC, "gzip-compressed", ".jsonl.gz"),
    (ZSTD_MAGIC, "zstd-compressed", ".jsonl.zst"),
    (ARROW_MAGIC, "an Arrow IPC file", ".arrow"),
    (b"BZh", "bzip2-compressed", None),
    (b"\xfd7zXZ\x00", "xz-compressed", None),
    (b"PK\x03\x04", "a zip archive", None),
    (b"\xff\xfe", "UTF-16 text", None),
    (b"\xfe\xff", "UTF-16 text", None),
)


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


def not_regular(path: str | os.PathLike) -> str | None:
    """What ``path`` is when it exists but is not a regular file (after symlinks), else None.

    Opening a FIFO blocks until a writer appears and a device may never end, so every file
    dedupkit reads (shards, summaries, config files, texts for a report) is checked first.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # missing or unreadable: the caller's open() says so
    return None if stat.S_ISREG(mode) else _kind(mode)


def _sniff(head: bytes) -> tuple[str, str | None] | None:
    for magic, what, suffix in _SNIFF:
        if head.startswith(magic):
            return what, suffix
    if b"\x00" in head:
        return "binary data (it holds NUL bytes)", None
    return None


def _misnamed(name: str, label: str, sniffed: tuple[str, str | None] | None, what: str, fix: str) -> None:
    """Refuse a file whose first bytes are not what its suffix says: what it is, and the rename."""
    if sniffed:
        what = f"it is {sniffed[0]}"
        fix = f"rename it to end in {sniffed[1]}" if sniffed[1] else fix
    raise InputError(f"{name}: named as {label} but {what}; {fix}, or leave it out")


def check_shard(shard: Shard) -> None:
    """Check that ``shard`` is a readable regular file whose content matches its suffix.

    Raises:
        InputError: naming the file, what it is, and the fix.
    """
    name = shard.name
    if fs.is_remote(shard.path):
        return _check_content(shard, fs.size(shard.path))
    try:
        st = os.stat(shard.path)
    except FileNotFoundError:
        raise InputError(f"{name}: no such file (a broken symbolic link?); fix the link or leave it out") from None
    except OSError as exc:
        raise InputError(f"{name}: cannot read ({exc.strerror}); fix the permissions or leave it out") from exc
    if not stat.S_ISREG(st.st_mode):
        raise InputError(
            f"{name}: {_kind(st.st_mode)}, not a regular file; dedupkit reads every shard more than once "
            "(scan, fingerprint, apply), so a pipe or device can never be a shard: write the data to a file "
            "and name that file"
        )
    _check_content(shard, st.st_size)


def _check_content(shard: Shard, size: int) -> None:
    name = shard.name
    try:
        with fs.open_input(shard.path) as fh:
            head = fh.read(16)
            tail = b""
            if shard.format == "parquet" and size >= 8:
                fh.seek(-4, os.SEEK_END)
                tail = fh.read(4)
    except OSError as exc:
        raise InputError(f"{name}: cannot read ({exc.strerror}); fix the permissions (chmod a+r) or leave "
                         "it out") from exc
    if size == 0:
        return  # the readers say "the file is empty" with their own fix
    if shard.format == "parquet":
        if head.startswith(PARQUET_MAGIC) and tail != PARQUET_MAGIC:
            raise InputError(f"{name}: not a readable Parquet file (no PAR1 mark at its end): the file is "
                             "truncated or corrupt: regenerate it or remove it from the input")
        if not head.startswith(PARQUET_MAGIC):
            sniffed = _sniff(head) or (("JSON text", ".jsonl") if head.lstrip()[:1] in (b"{", b"[") else None)
            _misnamed(name, "Parquet", sniffed, "it does not start with the PAR1 mark", "regenerate it")
        return
    if shard.format == "arrow":
        # an IPC file starts with ARROW1, a stream with a message (0xFFFFFFFF continuation)
        if not (head.startswith(ARROW_MAGIC) or head.startswith(b"\xff\xff\xff\xff")):
            _misnamed(name, "Arrow/Feather", _sniff(head), "it is not an Arrow IPC file or stream", "regenerate it")
        return
    if shard.format in ("csv", "tsv"):
        sniffed = _sniff(head[3:] if head.startswith(b"\xef\xbb\xbf") else head)
        if sniffed:
            _misnamed(name, shard.format.upper(), sniffed, "", "convert it to UTF-8 text")
        return
    if shard.compression == "gzip":
        expected, label = GZIP_MAGIC, "gzip"
    elif shard.compression == "zstd":
        expected, label = ZSTD_MAGIC, "zstd"
        if len(head) >= 4 and head[1:4] == b"\x2a\x4d\x18" and head[0] & 0xF0 == 0x50:
            return  # a zstd skippable frame comes first
    else:
        sniffed = _sniff(head[3:] if head.startswith(b"\xef\xbb\xbf") else head)
        if sniffed:
            _misnamed(name, "JSON Lines", sniffed, "", "convert it to UTF-8 JSON Lines")
        return
    if not head.startswith(expected):
        sniffed = _sniff(head)
        what = f"it is {sniffed[0]}" if sniffed else "its first bytes are not a " + label + " header"
        raise InputError(f"{name}: named as {label}-compressed but {what}; rename it to its real format "
                         "(.jsonl, .jsonl.gz, .jsonl.zst, .parquet) or leave it out")
