"""A real S3-compatible server (moto's standalone server) on the loopback, for the remote-storage tests.

The server is a separate process started by the test run on a free port; tests reach it through
the usual AWS environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``),
as a user's dedupkit would reach a MinIO or Ceph endpoint.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

# Secrets the tests grep for in every output: they must never be written anywhere.
ENV_SECRET = "envSECRETx7Qz9wK2"
URL_SECRET = "urlSECRETp4Lm8vN3"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """The endpoint URL of a moto S3 server running for the whole session."""
    pytest.importorskip("s3fs")
    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
    if exe is None:
        pytest.skip("moto[server] is not installed (pip install 'dedupkit-corpus[dev]')")
    port = _free_port()
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if proc.poll() is not None:
                pytest.fail("moto_server exited at start")
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("moto_server did not start within 30 s")
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def s3_env(s3_server, monkeypatch, tmp_path):
    """AWS environment pointing at the moto server, a fresh bucket, and a cache folder in tmp_path.

    Returns a dict: ``bucket`` (name), ``endpoint``, ``cache`` (DEDUPKIT_CACHE_DIR), ``fs`` (an
    s3fs filesystem for checking what the store holds).
    """
    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ENV_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for k in [k for k in os.environ if k.startswith("FSSPEC_S3_")]:
        monkeypatch.delenv(k)
    cache = tmp_path / "cache"
    monkeypatch.setenv("DEDUPKIT_CACHE_DIR", str(cache))
    bucket = "b" + uuid.uuid4().hex[:12]
    # fsspec caches filesystem instances by their options, and an instance keeps the endpoint it
    # was made with: one made by an earlier test (another module's server) would be reused here.
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(key="testing-key-id", secret=ENV_SECRET, endpoint_url=s3_server,
                           skip_instance_cache=True)
    fs.mkdir(bucket)
    import fsspec.config

    saved = dict(fsspec.config.conf.get("s3", {}))
    yield {"bucket": bucket, "endpoint": s3_server, "cache": cache, "fs": fs}
    s3fs.S3FileSystem.clear_instance_cache()
    fsspec.config.conf["s3"] = saved
    if not saved:
        fsspec.config.conf.pop("s3", None)
