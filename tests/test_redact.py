"""Issue 15 items 8 and 9: an index password never reaches any output, and a Redis key prefix
is matched literally (``prefix=*`` must not delete other applications' keys).

A real redis-server (started on a free port by test_index's fixture) requires a password.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tests.support import free_port, make_rows, write_jsonl
from dedupkit.cli.main import cli

SECRET = "s3cr3t-Pa55word"


@pytest.fixture(scope="module")
def redis_pw(redis_server):
    """test_index's real redis-server (one per module), with a password required from now on."""
    import redis

    client = redis.Redis(port=redis_server)
    client.config_set("requirepass", SECRET)
    client = redis.Redis(port=redis_server, password=SECRET)
    yield redis_server, client
    client.config_set("requirepass", "")


def _cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _data(tmp_path):
    write_jsonl(tmp_path / "held" / "a.jsonl", make_rows(["one text here", "two text here", "three"], "h"))
    write_jsonl(tmp_path / "drop" / "b.jsonl", make_rows(["one text here", "a new text"], "n"))
    return tmp_path / "held", tmp_path / "drop"


@pytest.mark.redis
def test_prefix_star_deletes_only_its_own_keys(redis_pw, tmp_path):
    port, client = redis_pw
    client.flushdb()
    held, _ = _data(tmp_path)
    others = {"app:session:1": "x", "other": "y", "t:meta": "z", "*x:y": "w", "[x:1": "v", "?x:1": "u"}
    for k, v in others.items():
        client.set(k, v)
    for prefix in ("*", "[", "?", "t*"):
        url = f"redis://:{SECRET}@127.0.0.1:{port}/0?prefix={prefix}"
        for extra in ((), ("--overwrite",)):
            r = _cli("index", "create", url, "--from", held, "--id-column", "id", "-q", *extra)
            assert r.exit_code == 0, (prefix, r.output)
        for k, v in others.items():
            assert client.get(k) == v.encode(), (prefix, k)
        assert client.exists(f"{prefix}:meta")
    # and the indexes themselves were replaced, not merged with anything else
    r = _cli("index", "info", f"redis://:{SECRET}@127.0.0.1:{port}/0?prefix=*", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["documents"] == 3


@pytest.mark.redis
def test_password_never_printed_or_written(redis_pw, tmp_path):
    port, client = redis_pw
    client.flushdb()
    held, drop = _data(tmp_path)
    url = f"redis://:{SECRET}@127.0.0.1:{port}/0?prefix=pw"
    seen = []
    r = _cli("index", "create", url, "--from", held, "--id-column", "id")
    assert r.exit_code == 0, r.output
    seen.append(r.output)
    assert "redis://:***@127.0.0.1" in r.stdout
    for args in (("index", "info", url), ("index", "info", url, "--json"),
                 ("index", "add", url, held, "--id-column", "id", "--json")):
        r = _cli(*args)
        assert r.exit_code == 0, r.output
        seen.append(r.output)
    out = tmp_path / "out"
    r = _cli("check", drop, "--against", url, "-o", out, "--id-column", "id", "--json")
    assert r.exit_code == 0, r.output
    seen.append(r.output)
    seen.append((out / "summary.json").read_text())
    assert json.loads((out / "summary.json").read_text())["check"]["index"].startswith("redis://:***@")
    r = _cli("report", out, "-o", tmp_path / "r.html")
    assert r.exit_code == 0, r.output
    seen.append((tmp_path / "r.html").read_text())
    r = _cli("inspect", out, "--largest", "1")
    seen.append(r.output)
    # connection errors: a wrong password, and a port nobody listens on
    bad = f"redis://:wrong-{SECRET}@127.0.0.1:{port}/0?prefix=pw"
    r = _cli("index", "info", bad)
    assert r.exit_code == 1 and "Error:" in r.output and "Traceback" not in r.output, r.output
    seen.append(r.output)
    r = _cli("check", drop, "--against", f"redis://:{SECRET}@127.0.0.1:{free_port()}/0", "-o", tmp_path / "o2")
    assert r.exit_code == 1 and "cannot connect" in r.output, r.output
    seen.append(r.output)
    for text in seen:
        assert SECRET not in text


def test_redact_forms():
    from dedupkit.redact import redact

    assert redact(f"redis://user:{SECRET}@h:1/0?prefix=a") == "redis://user:***@h:1/0?prefix=a"
    assert redact(f"rediss://:{SECRET}@h") == "rediss://:***@h"
    assert redact(f"redis://u:p@{SECRET}@h/0") == "redis://u:***@h/0"  # an unencoded '@' in the password
    assert redact(f"redis://h/0?password={SECRET}&prefix=x") == "redis://h/0?password=***&prefix=x"
    assert redact("redis://h:6379/0?prefix=x") == "redis://h:6379/0?prefix=x"
    assert redact("data/a.jsonl: line 3: blank line") == "data/a.jsonl: line 3: blank line"
