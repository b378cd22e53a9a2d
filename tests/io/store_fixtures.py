"""Real Azure Blob and Google Cloud Storage servers on the loopback, for the remote-storage tests.

- Azure: Azurite (``npm install -g azurite``), reached by adlfs through
  ``AZURE_STORAGE_CONNECTION_STRING``, with an account of our own whose key is a secret the tests
  grep for. Set ``DEDUPKIT_AZURITE`` to an ``azurite-blob`` executable that is not on PATH.
- GCS: gcp-storage-emulator (PyPI, pure Python), reached by gcsfs through ``STORAGE_EMULATOR_HOST``
  with anonymous credentials. gcsfs's "extended" file system probes a bucket's type over gRPC,
  which the emulator does not speak: ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` turns it off.

Each server is a subprocess started once per session on a free port, with its data in a temporary
folder (or memory); a test gets a fresh bucket/container. A missing tool skips with the command
that installs it.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

AZ_ACCOUNT = "dkacct"
# an account key is base64; this one carries a marker the secret checks grep for
AZ_KEY = base64.b64encode(b"dedupkit-azSECRET-Vq93kLm2Zt8x").decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(cmd: list[str], port: int, name: str, env: dict | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **(env or {})})
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"{name} exited at start")
            time.sleep(0.1)
    proc.kill()
    pytest.fail(f"{name} did not start within 60 s")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def azurite_server(tmp_path_factory):
    """The blob endpoint URL of an Azurite server holding the account AZ_ACCOUNT/AZ_KEY."""
    pytest.importorskip("adlfs")
    exe = os.environ.get("DEDUPKIT_AZURITE") or shutil.which("azurite-blob")
    if not exe:
        pytest.skip("Azurite is not installed: npm install -g azurite (or set DEDUPKIT_AZURITE to azurite-blob)")
    port = _free_port()
    data = tmp_path_factory.mktemp("azurite")
    proc = _start([exe, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(data), "--silent",
                   "--skipApiVersionCheck", "--loose"], port, "azurite",
                  env={"AZURITE_ACCOUNTS": f"{AZ_ACCOUNT}:{AZ_KEY}"})
    yield f"http://127.0.0.1:{port}/{AZ_ACCOUNT}"
    _stop(proc)


@pytest.fixture(scope="session")
def gcs_server():
    """The URL of a gcp-storage-emulator server (in memory)."""
    pytest.importorskip("gcsfs")
    exe = shutil.which("gcp-storage-emulator", path=str(Path(sys.executable).parent)) \
        or shutil.which("gcp-storage-emulator")
    if exe is None:
        pytest.skip("gcp-storage-emulator is not installed (pip install 'dedupkit-corpus[dev]')")
    port = _free_port()
    proc = _start([exe, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"], port,
                  "gcp-storage-emulator")
    yield f"http://127.0.0.1:{port}"
    _stop(proc)


@dataclass
class Store:
    """A fresh bucket (container) on a store server: ``url(...)`` builds URLs in it, ``fs`` is an
    fsspec filesystem for checking what it holds, ``secrets`` must never be written anywhere."""

    scheme: str
    bucket: str
    fs: Any
    secrets: tuple[str, ...] = ()

    def url(self, *parts: str) -> str:
        return "/".join([f"{self.scheme}://{self.bucket}", *parts])

    def key(self, *parts: str) -> str:
        return "/".join([self.bucket, *parts])

    def upload(self, local: Path, *parts: str) -> None:
        for p in sorted(local.rglob("*")):
            if p.is_file():
                self.fs.put_file(str(p), self.key(*parts, p.relative_to(local).as_posix()))


def _conf(monkeypatch, protocol: str, options: dict) -> None:
    """fsspec options for ``protocol`` here (fsspec read its FSSPEC_* variables at import) and in
    subprocesses (through the environment)."""
    import fsspec.config

    monkeypatch.setitem(fsspec.config.conf, protocol, dict(options))
    for k, v in options.items():
        monkeypatch.setenv(f"FSSPEC_{protocol.upper()}_{k.upper()}", v)


@pytest.fixture
def az_store(azurite_server, monkeypatch, tmp_path):
    import adlfs

    conn = (f"DefaultEndpointsProtocol=http;AccountName={AZ_ACCOUNT};AccountKey={AZ_KEY};"
            f"BlobEndpoint={azurite_server};")
    for k in [k for k in os.environ if k.startswith(("AZURE_STORAGE_", "FSSPEC_AZ", "FSSPEC_ABFS"))]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", conn)
    monkeypatch.setenv("DEDUPKIT_CACHE_DIR", str(tmp_path / "cache"))
    fs = adlfs.AzureBlobFileSystem(connection_string=conn, skip_instance_cache=True)
    bucket = "c" + uuid.uuid4().hex[:12]
    fs.mkdir(bucket)
    return Store("az", bucket, fs, (AZ_KEY,))


@pytest.fixture
def gs_store(gcs_server, monkeypatch, tmp_path):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server)
    monkeypatch.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")  # read when gcsfs is imported
    import gcsfs.core

    # in this process gcsfs may have been imported before: its plain file system for gs://
    # (fsspec.registry is the public read-only view; the module holds the mapping it shows)
    for proto in ("gs", "gcs"):
        monkeypatch.setitem(sys.modules["fsspec.registry"]._registry, proto, gcsfs.core.GCSFileSystem)
    _conf(monkeypatch, "gs", {"token": "anon"})
    _conf(monkeypatch, "gcs", {"token": "anon"})
    monkeypatch.setenv("DEDUPKIT_CACHE_DIR", str(tmp_path / "cache"))
    fs = gcsfs.core.GCSFileSystem(token="anon", skip_instance_cache=True)
    bucket = "g" + uuid.uuid4().hex[:12]
    fs.mkdir(bucket)
    return Store("gs", bucket, fs)


@pytest.fixture(params=["az", "gs"])
def store(request):
    """Each store in turn (Azure through Azurite, GCS through gcp-storage-emulator)."""
    return request.getfixturevalue(f"{request.param}_store")
