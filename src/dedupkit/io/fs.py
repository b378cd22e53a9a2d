"""Any filesystem: local paths, ``file://``, ``s3://``, ``gs://``, ``az://``/``abfs://``, ``hf://``.

dedupkit reads inputs and writes outputs through `fsspec <https://filesystem-spec.readthedocs.io>`_
when a path is a URL, and through the operating system otherwise (so the local-disk guarantees of
``docs/reliability.md``: locks, renames, fsync, are exactly what they were). Why fsspec and not
``pyarrow.fs``: pyarrow's filesystems cover S3, GCS, Azure and HDFS but not the Hugging Face hub
(``hf://``), and they do not read the usual config files the same way for every store; fsspec has
one implementation per store maintained by the store's own community (s3fs, gcsfs, adlfs,
huggingface_hub's ``HfFileSystem``), they all take credentials from the store's usual environment
variables and config files (``AWS_*`` and ``~/.aws``, ``GOOGLE_APPLICATION_CREDENTIALS``,
``AZURE_STORAGE_*``, ``HF_TOKEN``), and pyarrow reads from fsspec file objects directly. Install the
store's package: ``pip install 'dedupkit-corpus[s3]'`` (s3fs), ``[gcs]`` (gcsfs), ``[azure]``
(adlfs); ``hf://`` needs ``huggingface_hub``.

What happens where:

- **Inputs** (``INPUT`` arguments): a URL names a file, a folder (walked recursively, names
  starting with ``.`` or ``_`` skipped, dedupkit output folders skipped) or a glob (``*``, ``**``),
  as on disk (:func:`expand`). Readers open shards through :func:`open_input`; the shard's name in
  the manifest is the URL *without* credentials (:func:`clean`).
- **Outputs** (``-o``, ``apply -o``, ``index create``): a remote output folder is built in a local
  staging folder under the cache root (``remote/<hash of the URL>``) with every local guarantee,
  then published by :class:`RemoteFolder`: the old completion marker (``summary.json``,
  ``_dedupkit_apply.json``) is deleted first, then every part file is uploaded, stale part files
  removed, and the completion marker uploaded last. Object stores have no rename, so this order is
  what keeps an interrupted run from ever looking complete. A rerun on the same machine resumes
  from the staging folder; on another machine, the finished run is pulled back first so that the
  rerun rule (reuse, refuse, ``--overwrite``) is the same as on disk.
- **Manifests, indexes and summaries read back** (``--skip``, ``apply --manifest``, ``report``,
  ``check --against``): :func:`fetch` copies the folder into the staging area; the usual
  validation (recorded part checksums) then runs on the copy.

Credentials are never recorded: a ``s3://KEY:SECRET@bucket/...`` URL is split into its clean
form, which is what manifests, summaries, logs and errors show, and credentials that are passed to
fsspec (and to worker processes through ``FSSPEC_<PROTOCOL>_<OPTION>`` environment variables,
which fsspec reads at import). :func:`dedupkit.redact.redact` masks any that still reach a message.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
from pathlib import Path
from typing import IO, Any, Iterable, Sequence
from urllib.parse import unquote, urlsplit, urlunsplit

from dedupkit.errors import DedupkitError, InputError, MissingExtraError, OutputError

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*)://")
# The package that provides each store's fsspec implementation, for the "pip install" hint.
_EXTRAS = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs"),
           "az": ("adlfs", "azure"), "abfs": ("adlfs", "azure"), "abfss": ("adlfs", "azure"),
           "hf": ("huggingface_hub", "hf")}
# URL credentials -> fsspec option names (s3fs takes key/secret; others username/password).
_CRED_OPTS = {"s3": ("key", "secret"), "s3a": ("key", "secret")}
# Completion markers: written last when publishing, deleted first.
MARKERS = ("summary.json", "_dedupkit_apply.json")
# Never published: the lock and the work files of the staging folder.
_LOCAL_ONLY = (".dedupkit.lock", ".lock", ".work", ".work.trash", ".manifest.tmp", ".manifest.old", ".spans.old")


def scheme(path: str | os.PathLike) -> str | None:
    """The URL scheme of ``path`` (``"s3"``), or None for a plain path."""
    m = _SCHEME.match(os.fspath(path)) if isinstance(path, (str, os.PathLike)) else None
    return m.group(1).lower() if m else None


def is_remote(path: str | os.PathLike) -> bool:
    """True when ``path`` is a URL of a store other than the local disk (``file://`` is local).

    Example:
        >>> is_remote("s3://bucket/data"), is_remote("data/a.parquet"), is_remote("file:///tmp/a")
        (True, False, False)
    """
    s = scheme(path)
    return s is not None and s not in ("file", "local")


def local(path: str | os.PathLike) -> str:
    """A plain path for ``file://`` URLs; other paths unchanged."""
    p = os.fspath(path)
    if scheme(p) in ("file", "local"):
        return unquote(urlsplit(p).path) or "/"
    return p


def _split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """``(url without user:secret@, fsspec options holding them)``."""
    parts = urlsplit(url)
    if "@" not in parts.netloc or ":" not in parts.netloc.rsplit("@", 1)[0]:
        return url, {}
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, secret = userinfo.split(":", 1)
    names = _CRED_OPTS.get(parts.scheme.lower(), ("username", "password"))
    return urlunsplit(parts._replace(netloc=host)), {names[0]: unquote(user), names[1]: unquote(secret)}


def clean(url: str | os.PathLike) -> str:
    """``url`` without credentials (``s3://KEY:SECRET@b/k`` -> ``s3://b/k``): what gets recorded.

    Plain paths are returned unchanged.

    Example:
        >>> clean("s3://AKIA:s3cr3t@bucket/data/a.parquet")
        's3://bucket/data/a.parquet'
    """
    p = os.fspath(url)
    if not is_remote(p):
        return p
    return _split_credentials(p)[0]


def _register(protocol: str, options: dict[str, str]) -> None:
    """Make URL credentials known to fsspec here and in worker processes started later.

    fsspec reads ``FSSPEC_<PROTOCOL>_<OPTION>`` environment variables when it is imported, so
    spawned workers (and a local Ray instance started by this process) see them too; they are
    never written anywhere dedupkit records.
    """
    if not options:
        return
    import fsspec.config

    conf = fsspec.config.conf.setdefault(protocol, {})
    for k, v in options.items():
        conf[k] = v
        os.environ[f"FSSPEC_{protocol.upper()}_{k.upper()}"] = v


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path within it.

    Credentials in the URL are registered (:func:`_register`), not passed around in the path.

    Raises:
        MissingExtraError: the store's fsspec package is not installed.
        InputError: the URL cannot be understood.
    """
    proto = scheme(url) or "file"
    bare, creds = _split_credentials(url) if is_remote(url) else (url, {})
    _register(proto, creds)
    try:
        from fsspec.core import url_to_fs
    except ImportError as exc:  # pragma: no cover - fsspec comes with the store packages
        raise MissingExtraError("reading URLs needs fsspec: pip install 'dedupkit-corpus[s3]' (or [gcs], [azure])") from exc
    try:
        # No listings cache: another process (a Ray worker, a rerun, the user) changes the store
        # between two listings of this one, and a cached listing would hide what it wrote.
        return url_to_fs(bare, use_listings_cache=False) if is_remote(url) else url_to_fs(bare)
    except ImportError as exc:
        pkg, extra = _EXTRAS.get(proto, (proto, None))
        hint = f"pip install 'dedupkit-corpus[{extra}]'" if extra else f"install fsspec's {proto!r} implementation"
        raise MissingExtraError(f"{proto}:// paths need the {pkg} package: {hint}") from exc
    except ValueError as exc:
        raise InputError(f"{clean(url)}: not a URL dedupkit can open ({exc}); check the scheme") from exc


def _join(url: str, fs: Any, path: str) -> str:
    """A full clean URL for ``path`` of ``fs`` (fsspec returns paths without the protocol)."""
    proto = scheme(url) or "file"
    return f"{proto}://{path.lstrip('/')}" if proto not in ("file", "local") else path


def _io_error(what: str, url: str, exc: BaseException) -> DedupkitError:
    from dedupkit.redact import redact

    return InputError(f"{clean(url)}: cannot {what} ({redact(type(exc).__name__ + ': ' + str(exc))}); check the URL "
                      "and the store's credentials (environment variables or config files)")


def size(path: str) -> int:
    """The size in bytes of a local file or an object."""
    if not is_remote(path):
        return os.path.getsize(local(path))
    fs, p = filesystem(path)
    try:
        return int(fs.size(p))
    except (OSError, ValueError) as exc:
        raise _io_error("read", path, exc) from exc


def change_token(path: str) -> str | int:
    """Something that changes when the file changes: mtime in ns locally, the ETag (else the
    modification time and size) for an object."""
    if not is_remote(path):
        return os.stat(local(path)).st_mtime_ns
    fs, p = filesystem(path)
    try:
        info = fs.info(p)
    except (OSError, ValueError) as exc:
        raise _io_error("read", path, exc) from exc
    for key in ("ETag", "etag", "md5_hash", "blob_id", "content_settings", "mtime", "LastModified", "last_modified"):
        if info.get(key) is not None:
            return f"{key}:{info[key]}:{info.get('size')}"
    return f"size:{info.get('size')}"


def open_input(path: str, mode: str = "rb") -> IO[bytes]:
    """Open a shard for reading: the local file, or a buffered fsspec file of the object."""
    if not is_remote(path):
        return open(local(path), mode)
    fs, p = filesystem(path)
    try:
        fh = fs.open(p, mode, block_size=8 << 20)
    except (OSError, ValueError) as exc:
        raise _io_error("open", path, exc) from exc
    # a standard buffered reader around it: readline(size), peek, as the local file's
    return io.BufferedReader(fh, buffer_size=1 << 20) if mode == "rb" else fh


def abspath(path: str) -> str:
    """``os.path.abspath`` for local paths; a URL's clean form for remote ones."""
    return clean(path) if is_remote(path) else os.path.abspath(local(path))


def _is_output(fs: Any, folder: str, names: set[str]) -> bool:
    if ".dedupkit.json" in names or "_dedupkit_apply.json" in names:
        return True
    if "summary.json" in names:
        try:
            import json

            with fs.open(f"{folder.rstrip('/')}/summary.json", "rb") as fh:
                s = json.loads(fh.read(1 << 20))
            return isinstance(s, dict) and "dedupkit" in s
        except (OSError, ValueError):
            return False
    return False


def expand(raw: str, exclude: Sequence[str] = (), supported=lambda name: True) -> list[tuple[str, str]]:
    """The files a remote INPUT names, as ``(url, name)`` pairs sorted by name.

    A folder is walked recursively (names starting with ``.`` or ``_`` skipped, folders holding
    dedupkit output skipped, as on disk); a glob is matched (``**`` crosses folders); a file is
    itself. ``url`` keeps the credentials the user typed (they are registered, never recorded);
    ``name`` is the clean URL.

    Raises:
        InputError: nothing there, or nothing supported.
    """
    fs, root = filesystem(raw)
    base = clean(raw)
    ex = [clean(e).rstrip("/") for e in exclude if is_remote(e)]

    def excluded(url: str) -> bool:
        return any(url == e or url.startswith(e + "/") for e in ex)

    try:
        if any(c in root for c in "*?["):
            # as Python's glob: wildcards never match names starting with "."
            paths = [p for p in fs.glob(root) if fs.isfile(p)
                     and not any(part.startswith(".") for part in p[len(root.split("*")[0]):].split("/"))]
            found = [_join(base, fs, p) for p in sorted(paths)]
            found = [u for u in found if supported(u) and not excluded(u)]
            if not found:
                raise InputError(f"glob {base!r} matches no supported shard")
            return [(u, u) for u in found]
        if fs.isdir(root):
            out: list[str] = []
            stack = [root.rstrip("/")]
            while stack:
                folder = stack.pop()
                entries = fs.ls(folder, detail=True)
                names = {e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries}
                if _is_output(fs, folder, names) or excluded(_join(base, fs, folder)):
                    continue
                for e in sorted(entries, key=lambda e: e["name"]):
                    name = e["name"].rstrip("/").rsplit("/", 1)[-1]
                    if name.startswith((".", "_")):
                        continue
                    if e.get("type") == "directory":
                        stack.append(e["name"].rstrip("/"))
                    else:
                        u = _join(base, fs, e["name"])
                        if supported(u):
                            out.append(u)
            if not out:
                raise InputError(f"folder {base} holds no supported shard")
            return [(u, u) for u in sorted(out)]
        if fs.isfile(root):
            return [(base, base)]
    except (OSError, ValueError) as exc:
        raise _io_error("list", raw, exc) from exc
    raise InputError(f"{base}: no such file or folder")


# -- remote output folders -------------------------------------------------------------------------


def staging_dir(url: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The local folder a remote output is built in (and resumed from): ``CACHE/remote/<hash>``."""
    from dedupkit.embed import cache_root

    digest = hashlib.sha256(clean(url).rstrip("/").encode()).hexdigest()[:20]
    return cache_root(cache_dir) / "remote" / digest


def _rel_files(folder: Path) -> list[str]:
    """Files below ``folder`` (relative, '/'-separated) that are published: not locks or work files."""
    out = []
    for dirpath, dirs, files in os.walk(folder):
        rel = os.path.relpath(dirpath, folder)
        dirs[:] = sorted(d for d in dirs if d not in _LOCAL_ONLY)
        for f in sorted(files):
            if f in _LOCAL_ONLY or ".tmp" in f:
                continue
            out.append(f if rel == "." else f"{rel.replace(os.sep, '/')}/{f}")
    return out


class RemoteFolder:
    """A folder on an object store that dedupkit writes as a whole: pull, then publish.

    Args:
        url: the folder's URL (credentials in it are registered, never recorded).

    Example:
        >>> rf = RemoteFolder("s3://bucket/out/exact")  # doctest: +SKIP
        >>> rf.publish(local_folder)  # doctest: +SKIP
    """

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.name = clean(self.url)
        self.fs, self.root = filesystem(self.url)
        self.root = self.root.rstrip("/")

    def _remote_files(self) -> list[str]:
        try:
            if not self.fs.exists(self.root):
                return []
            return sorted(os.path.relpath(p, self.root).replace(os.sep, "/")
                          for p in self.fs.find(self.root) if p.rstrip("/") != self.root)
        except (OSError, ValueError) as exc:
            raise _io_error("list", self.url, exc) from exc

    def finished(self, markers: Sequence[str] = MARKERS) -> bool:
        """True when the remote folder holds its top completion marker."""
        try:
            return any(self.fs.exists(f"{self.root}/{m}") for m in markers)
        except (OSError, ValueError) as exc:
            raise _io_error("reach", self.url, exc) from exc

    def check_ours(self, allowed_top: Iterable[str] | None, markers: Sequence[str] = MARKERS) -> list[str]:
        """The folder's files; raises OutputError when it holds files dedupkit did not write.

        ``allowed_top``: the top-level names dedupkit writes there (None: any, in a folder that
        holds dedupkit's record or one of ``markers``).
        """
        files = self._remote_files()
        tops = {f.split("/", 1)[0] for f in files}
        foreign: list[str] = []
        if allowed_top is not None:
            foreign = sorted(tops - (set(allowed_top) | set(markers) | {".dedupkit.json"}))
        if files and not tops & ({".dedupkit.json"} | set(markers)):
            foreign = foreign or sorted(tops)
        if foreign:
            raise OutputError(f"{self.name} holds files dedupkit did not write ({', '.join(foreign[:3])}); they "
                              "are never deleted or overwritten: choose another -o")
        return files

    def download(self, dest: Path, files: Sequence[str]) -> None:
        """Copy ``files`` (paths relative to the folder) into ``dest``, keeping their layout."""
        for rel in files:
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.fs.get_file(f"{self.root}/{rel}", str(target))
            except (OSError, ValueError) as exc:
                raise _io_error("read", f"{self.url}/{rel}", exc) from exc

    def pull(self, dest: Path, files: Sequence[str]) -> None:
        """Copy a finished remote folder's files into ``dest`` (only when ``dest`` has no run)."""
        if not files or not any(f.rsplit("/", 1)[-1] in MARKERS for f in files):
            return
        self.download(dest, files)

    def unfinish(self, markers: Sequence[str] = MARKERS) -> None:
        """Delete the remote completion markers, the top folder's first: the folder looks unfinished.

        Called before tasks upload parts of a new run themselves (:meth:`upload`); :meth:`publish`
        then writes the rest, the markers last.
        """
        try:
            self._delete_markers(self._remote_files(), markers)
        except (OSError, ValueError) as exc:
            raise self._write_error(exc) from exc

    def _delete_markers(self, remote_files: Iterable[str], markers: Sequence[str]) -> None:
        """Delete the completion markers among ``remote_files``, the top folder's first."""
        for rel in sorted((f for f in remote_files if f.rsplit("/", 1)[-1] in markers), key=lambda rel: rel.count("/")):
            self.fs.rm_file(f"{self.root}/{rel}")

    def upload(self, local_file: str | os.PathLike, rel: str) -> None:
        """Write one file of an unfinished folder (``rel``: its path in the folder, '/'-separated)."""
        try:
            self.fs.put_file(str(local_file), f"{self.root}/{rel}")
        except (OSError, ValueError) as exc:
            raise self._write_error(exc) from exc

    def _write_error(self, exc: BaseException) -> OutputError:
        from dedupkit.redact import redact

        return OutputError(f"cannot write {self.name} ({redact(type(exc).__name__ + ': ' + str(exc))}); "
                           "nothing there looks finished: rerun the same command to resume")

    def publish(self, src: Path, markers: Sequence[str] = MARKERS, done: Iterable[str] = ()) -> None:
        """Make the remote folder equal to the finished local folder ``src``, marker last.

        1. delete the remote completion markers that will change (the folder looks unfinished);
        2. upload every other file, except ``done`` (uploaded by tasks after :meth:`unfinish`,
           possibly from other machines: ``src`` need not hold them); delete remote part files
           that neither ``src`` nor ``done`` has;
        3. upload the completion markers, deepest first, the top folder's last.
        """
        local_files = _rel_files(src)
        remote_files = self._remote_files()
        done = set(done)
        order = lambda rel: (0, -rel.count("/")) if rel.rsplit("/", 1)[-1] in markers else (1, 0)  # noqa: E731
        local_markers = sorted((f for f in local_files if f.rsplit("/", 1)[-1] in markers), key=order)
        try:
            self._delete_markers(remote_files, markers)
            for rel in local_files:
                if rel not in local_markers and rel not in done:
                    self.fs.put_file(str(src / rel), f"{self.root}/{rel}")
            keep = set(local_files) | done
            for rel in remote_files:
                if rel not in keep and rel.rsplit("/", 1)[-1] not in markers:
                    self.fs.rm_file(f"{self.root}/{rel}")
            for rel in local_markers:
                self.fs.put_file(str(src / rel), f"{self.root}/{rel}")
        except (OSError, ValueError) as exc:
            raise self._write_error(exc) from exc


def remote_output(url: str, allowed_top: Iterable[str] | None, build, cache_dir: str | os.PathLike | None = None,
                  markers: Sequence[str] = MARKERS, pull: bool = True, overwrite: bool = True):
    """Build remote output ``url`` locally with ``build(staging)``, then publish it (marker last).

    ``build`` runs on the local staging folder exactly as on a local ``-o`` (locks, resume, rerun
    rule, atomic swaps); a failure there publishes nothing. Its result is returned, with an
    ``out`` attribute (if any) set to the clean URL. A reused finished run that the store already
    holds is not uploaded again. ``pull=False`` (a clean corpus, an index: too big to copy back,
    never reused) builds from an empty staging folder and, unless ``overwrite``, refuses a store
    folder that already holds a finished one.
    """
    staging, remote = prepare_output(url, allowed_top, cache_dir, markers, pull, overwrite)
    result = build(staging)
    if not (getattr(result, "reused", False) and remote.finished(markers)):
        remote.publish(staging, markers, done=getattr(result, "uploaded", ()))
    for attr in ("out", "location"):  # what the caller shows is the store's URL, not the staging folder
        if hasattr(result, attr):
            try:
                setattr(result, attr, remote.name)
            except AttributeError:  # a frozen dataclass
                import dataclasses

                result = dataclasses.replace(result, **{attr: remote.name})
    return result


def prepare_output(url: str, allowed_top: Iterable[str] | None, cache_dir: str | os.PathLike | None = None,
                   markers: Sequence[str] = MARKERS, pull: bool = True,
                   overwrite: bool = True) -> tuple[Path, RemoteFolder]:
    """The local staging folder for remote output ``url``, with a finished remote run pulled in.

    Returns ``(staging, remote)``: run the command on ``staging`` as on any local folder, then
    ``remote.publish(staging)`` on success.

    Raises:
        OutputError: the remote folder holds files dedupkit did not write.
    """
    remote = RemoteFolder(url)
    files = remote.check_ours(allowed_top, markers)
    staging = staging_dir(url, cache_dir)
    if not pull:
        if files and not overwrite and any(f.rsplit("/", 1)[-1] in markers for f in files):
            raise OutputError(f"{remote.name} already holds a finished output; pass --overwrite to replace it, "
                              "or choose another location")
        if staging.exists():
            shutil.rmtree(staging)
        staging.parent.mkdir(parents=True, exist_ok=True)
        return staging, remote
    has_run = staging.is_dir() and any((staging / m).exists() for m in MARKERS)
    if files and not has_run:
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        remote.pull(staging, files)
    elif not files and has_run:
        # the remote run was deleted: a stale staging folder must not be "reused" unseen
        shutil.rmtree(staging)
    staging.parent.mkdir(parents=True, exist_ok=True)
    return staging, remote


def fetch(url: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """A local copy of a remote folder (a finished run, a manifest, an index) to read from.

    The copy is refreshed from the store once per process (files the store no longer has are
    removed from it), so a command reads what the store holds when it starts.

    Raises:
        InputError / ManifestError come from the reader of the copy; here only when the store
        cannot be listed.
    """
    key = clean(url).rstrip("/")
    if key in _FETCHED:
        return _FETCHED[key]
    src = RemoteFolder(url)
    dest = staging_dir(url, cache_dir).with_name(staging_dir(url, cache_dir).name + ".read")
    files = src._remote_files()
    if not files:
        raise InputError(f"{src.name}: no such folder (or it is empty)")
    wanted = set(files)
    if dest.exists():
        for rel in _rel_files(dest):
            if rel not in wanted:
                (dest / rel).unlink()
    src.download(dest, files)
    _FETCHED[key] = dest
    return dest


# Folders fetched by this process: read once per command (a manifest is opened several times).
_FETCHED: dict[str, Path] = {}


def parquet_source(path: str) -> Any:
    """What ``pyarrow.parquet.ParquetFile`` should open: the path itself, or a remote file object."""
    return open_input(path) if is_remote(path) else local(path)
