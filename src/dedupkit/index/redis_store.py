"""The shared index: the same index in a Redis database, so a team's CI jobs check against one index.

Location: ``redis://HOST:PORT/DB`` (optionally ``?prefix=NAME`` to keep several indexes in one
database; the default prefix is ``dedupkit``). Keys, all under ``PREFIX:``::

    meta              JSON: format, version, settings, bucket count
    segments          list of committed appends (JSON: base, n); the commit point of an append
    next              counter that reserves document numbers
    x:{bucket}        hash: 16-byte text hash -> packed int64 doc numbers (exact stage)
    b:{band}:{bucket} hash: 8-byte band key -> packed int64 doc numbers (fuzzy stage)
    d:{doc >> 7}      hash: doc & 127 -> shard number (4 bytes), exact hash (16 bytes), doc_id
    shards, shardidx  shard names and their numbers
    lock              the writer lock (SET NX with an expiry that its holder keeps renewing)
    pending           the append in progress: its writer, doc numbers, journal chunks, shard count
    pj:{i}            journal of the pending append: the exact hashes and band keys of its chunk i

Why small bucketed hashes: Redis stores a hash of at most 128 short fields as one compact listpack,
about 4x smaller than one key per entry; the bucket count (``2**14``) keeps about 60 entries per
bucket for a million documents.

Consistency: one writer at a time holds ``lock`` from its lookups to its commit (``check --update``
decides and appends as one step). An append first records ``pending`` and, chunk by chunk, a
journal of the keys it is about to touch, then writes its entries under document numbers above
every committed one, and commits with one Lua script that pushes its record onto ``segments`` and
deletes ``pending`` and the journal. A reader reads ``segments`` once and ignores doc numbers outside
the committed ranges, so it never sees half an append. A writer killed (or a server restarted)
before the commit leaves ``pending``: the next writer, under the lock, uses the journal to remove
exactly those entries (and the shard names it registered), so the index is as before. Every write
of a writer is a Lua script that first checks it still holds the lock (fencing: a writer stalled
past the lock's expiry cannot write after another writer took over), and every write is
idempotent, so calls repeated after a dropped connection do no harm. Integrity: opening checks the format and verifies a sample of committed documents
(their record and their exact-hash entry); a Redis that lost data (flushed, evicted, restarted
without persistence) is an error, not an empty pass. Plain Redis only (not Redis Cluster).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from urllib.parse import parse_qs, urlparse

import numpy as np

from dedupkit.errors import ConfigError, require
from dedupkit.redact import redact
from dedupkit.index.base import (
    BAND_CAP, FORMAT, FORMAT_VERSION, BandMatches, IndexInfo, IndexSettings, IndexStore,
    IndexStoreError, Segment, WriterLock, best_band_matches, holder_is_dead, holder_record, holder_text, log,
)
from dedupkit.index.faults import point

BUCKET_BITS = 14
EXACT_CAP = 8
DOC_CHUNK_BITS = 7
VERIFY_SAMPLE = 64
PIPE = 20000
#: Entries per Lua call (a call blocks the server for a few milliseconds).
LUA_BATCH = 8192
#: The writer lock's expiry; its holder renews it every third of it. A writer on this machine that
#: died is taken over at once; one elsewhere only after the expiry (DEDUPKIT_REDIS_LOCK_TTL seconds).
LOCK_TTL_S = 30.0
#: Documents per journal chunk of an append.
STAGE_CHUNK = 4096
#: How long a writer keeps retrying while the server is unreachable (restarting) before it gives up.
RETRY_S = 60.0

_FENCE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('DEDUPKIT_LOCK_LOST') end
"""
# The entry scripts take a whole batch as two binary strings: FIELDS, n fields of WIDTH bytes (a
# 16-byte text hash or an 8-byte band key, little-endian), and DOCS, n packed int64 doc numbers. The
# hash holding field i is PREFIX .. (its low 24 bits mod BUCKETS), computed here from its first bytes,
# so a batch costs Python one argument instead of three per entry.
_BUCKET = """
local function bucket(s, off, nb)
  return (string.byte(s, off + 1) + string.byte(s, off + 2) * 256 + string.byte(s, off + 3) * 65536) % nb
end
"""
# Append doc i to its field unless present or the field holds CAP docs already (idempotent: a call
# repeated after a dropped connection adds nothing). ARGV: token, cap, prefix, buckets, width, FIELDS, DOCS.
_STAGE_LUA = _FENCE + _BUCKET + """
local cap, prefix, nb, w = tonumber(ARGV[2]) * 8, ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local fields, docs = ARGV[6], ARGV[7]
for i = 0, #fields / w - 1 do
  local off = i * w
  local key, f, d = prefix .. bucket(fields, off, nb), string.sub(fields, off + 1, off + w), string.sub(docs, i * 8 + 1, i * 8 + 8)
  local cur = redis.call('HGET', key, f)
  if not cur then
    redis.call('HSET', key, f, d)
  elseif #cur < cap then
    local seen = false
    for p = 1, #cur, 8 do
      if string.sub(cur, p, p + 7) == d then seen = true break end
    end
    if not seen then redis.call('HSET', key, f, cur .. d) end
  end
end
return 1
"""
# The rollback: remove doc numbers in [lo, hi) from the fields. ARGV: token, lo, hi, prefix, buckets,
# width, FIELDS.
_STRIP_LUA = _FENCE + _BUCKET + """
local lo, hi, prefix, nb, w, fields = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
for i = 0, #fields / w - 1 do
  local off = i * w
  local key, f = prefix .. bucket(fields, off, nb), string.sub(fields, off + 1, off + w)
  local cur = redis.call('HGET', key, f)
  if cur then
    local keep = {}
    for p = 1, #cur, 8 do
      local v = 0
      for k = p + 7, p, -1 do v = v * 256 + string.byte(cur, k) end
      if v < lo or v >= hi then keep[#keep + 1] = string.sub(cur, p, p + 7) end
    end
    if #keep == 0 then redis.call('HDEL', key, f)
    elseif #keep * 8 < #cur then redis.call('HSET', key, f, table.concat(keep)) end
  end
end
return 1
"""
# The lookup: for each field, its packed doc numbers; returns only the hits, as (i, value) pairs.
# ARGV: prefix, buckets, width, FIELDS.
_LOOKUP_LUA = _BUCKET + """
local prefix, nb, w, fields = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local out = {}
for i = 0, #fields / w - 1 do
  local off = i * w
  local v = redis.call('HGET', prefix .. bucket(fields, off, nb), string.sub(fields, off + 1, off + w))
  if v then out[#out + 1] = i out[#out + 1] = v end
end
return out
"""
# One command, if we hold the lock.
_FENCED_LUA = _FENCE + """
return redis.call(ARGV[2], unpack(ARGV, 3))
"""
# Register shard names (KEYS[2] list, KEYS[3] name -> number); returns their numbers.
_SHARDS_LUA = _FENCE + """
local out = {}
for i = 2, #ARGV do
  local v = redis.call('HGET', KEYS[3], ARGV[i])
  if not v then
    v = redis.call('RPUSH', KEYS[2], ARGV[i]) - 1
    redis.call('HSET', KEYS[3], ARGV[i], v)
  end
  out[#out + 1] = tonumber(v)
end
return out
"""
# The commit: push the segment record, move `next`, delete pending and its journal, in one step.
# 0 when a repeated call finds its own commit already done.
_COMMIT_LUA = _FENCE + """
if redis.call('HGET', KEYS[2], 'writer') ~= ARGV[5] then
  local last = redis.call('LINDEX', KEYS[3], -1)
  if last and string.find(last, ARGV[5], 1, true) then return 0 end
  return redis.error_reply('DEDUPKIT_NO_PENDING')
end
redis.call('RPUSH', KEYS[3], ARGV[2])
redis.call('SET', KEYS[4], ARGV[3])
redis.call('DEL', KEYS[2])
for i = 0, tonumber(ARGV[4]) - 1 do redis.call('DEL', KEYS[5] .. i) end
return 1
"""
_TAKEOVER_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1
end
return 0
"""
_RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_UNLOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def lock_ttl_s() -> float:
    raw = os.environ.get("DEDUPKIT_REDIS_LOCK_TTL")
    try:
        return max(1.0, float(raw)) if raw else LOCK_TTL_S
    except ValueError:
        raise ConfigError(f"DEDUPKIT_REDIS_LOCK_TTL={raw!r} is not a number of seconds") from None


def is_redis_url(location: str) -> bool:
    return str(location).startswith(("redis://", "rediss://", "unix://"))


def _parse(location: str) -> tuple[str, str]:
    u = urlparse(location)
    prefix = parse_qs(u.query).get("prefix", ["dedupkit"])[0]
    if not prefix or ":" in prefix:
        raise ConfigError(f"{redact(location)}: prefix must be a non-empty name without ':'")
    clean = u._replace(query="").geturl()
    return clean, prefix


def _match_escape(prefix: str) -> str:
    """``prefix`` with Redis glob characters escaped, for ``SCAN MATCH``: a prefix of ``*`` must
    match only keys that start with a literal ``*:``, never every key of the database."""
    return re.sub(r"([*?\[\]\\^-])", r"\\\1", prefix)


def _fix(loc: str) -> str:
    return f"rebuild it with `dedupkit index create {loc} --overwrite --from DATA`"


class RedisIndex(IndexStore):
    """An index in Redis. Open with :meth:`create` or :meth:`open`.

    Example:
        >>> idx = RedisIndex.open("redis://localhost:6379/0")  # doctest: +SKIP
    """

    kind = "redis"

    def __init__(self, location: str, client, prefix: str, meta: dict, verify: bool = True):
        self.location = redact(location)  # shown and recorded; the password stays in the client only
        self.r = client
        self.p = prefix
        self.meta = meta
        self.settings = IndexSettings.from_dict(meta["settings"])
        self.buckets = 1 << int(meta.get("bucket_bits", BUCKET_BITS))
        self._scripts = {name: self.r.register_script(src) for name, src in (
            ("stage", _STAGE_LUA), ("strip", _STRIP_LUA), ("fenced", _FENCED_LUA), ("shards", _SHARDS_LUA),
            ("commit", _COMMIT_LUA), ("lookup", _LOOKUP_LUA))}
        if self.buckets > 1 << 24:
            raise IndexStoreError(f"{redact(location)}: bucket_bits above 24 is not supported; {_fix(redact(location))}")
        self._snapshot()
        if verify:
            self._verify()

    # -- connecting ---------------------------------------------------------------------------
    @staticmethod
    def _connect(location: str):
        redis = require("redis", "redis")
        url, prefix = _parse(location)
        try:
            client = redis.Redis.from_url(url, socket_timeout=60, socket_connect_timeout=10)
            client.ping()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.ResponseError,
                ValueError) as exc:
            raise IndexStoreError(f"{redact(location)}: cannot connect to Redis ({redact(str(exc))}); check that "
                                  "the server runs, the password is right "
                                  "and the URL (redis://HOST:PORT/DB) is right") from exc
        return client, prefix

    @classmethod
    def create(cls, location: str, settings: IndexSettings, overwrite: bool = False) -> "RedisIndex":
        client, prefix = cls._connect(location)
        key = f"{prefix}:meta"
        exists = client.exists(key) or client.exists(f"{prefix}:segments")
        if exists and not overwrite:
            raise IndexStoreError(f"{redact(location)} already holds an index (prefix {prefix!r}); use "
                                  "`dedupkit index add` to grow it, or pass --overwrite to replace it")
        if exists:
            cls._drop_all(client, prefix)
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "settings": settings.to_dict(),
                "bucket_bits": BUCKET_BITS, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        client.set(key, json.dumps(meta))
        return cls(location, client, prefix, meta, verify=False)

    @staticmethod
    def _drop_all(client, prefix: str) -> None:
        client.delete(f"{prefix}:meta")  # unreadable first, then the rest
        batch = []
        for k in client.scan_iter(match=f"{_match_escape(prefix)}:*", count=10000):
            batch.append(k)
            if len(batch) >= 10000:
                client.unlink(*batch)
                batch = []
        if batch:
            client.unlink(*batch)

    @classmethod
    def open(cls, location: str, verify: bool = True) -> "RedisIndex":
        client, prefix = cls._connect(location)
        raw = client.get(f"{prefix}:meta")
        if raw is None:
            if client.exists(f"{prefix}:segments"):
                raise IndexStoreError(f"{redact(location)}: index data without its meta key (prefix {prefix!r}): the "
                                      f"index was partly deleted; {_fix(redact(location))}")
            raise IndexStoreError(f"{redact(location)}: no index with prefix {prefix!r}; create it with "
                                  f"`dedupkit index create {redact(location)} --from DATA`")
        try:
            meta = json.loads(raw)
        except ValueError as exc:
            raise IndexStoreError(f"{redact(location)}: the meta key is not valid JSON; {_fix(redact(location))}") from exc
        if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
            raise IndexStoreError(f"{redact(location)}: not a dedupkit index of format version {FORMAT_VERSION}; "
                                  f"{_fix(redact(location))}")
        return cls(location, client, prefix, meta, verify=verify)

    def _snapshot(self) -> None:
        segs = [json.loads(s) for s in self.r.lrange(f"{self.p}:segments", 0, -1)]
        segs.sort(key=lambda s: s["base"])
        self.segs = segs
        self.bases = np.array([s["base"] for s in segs], np.int64)
        self.ends = np.array([s["base"] + s["n"] for s in segs], np.int64)

    def refresh(self) -> None:
        self._retry(self._snapshot)

    def commits(self) -> list[dict]:
        return [{"base": int(c["base"]), "n": int(c["n"]), "key": c.get("key")} for c in self.segs]

    def view_before(self, commit: dict) -> None:
        self.segs = [c for c in self.segs if int(c["base"]) < int(commit["base"])]
        self.bases = np.array([c["base"] for c in self.segs], np.int64)
        self.ends = np.array([c["base"] + c["n"] for c in self.segs], np.int64)

    def _committed(self, docs: np.ndarray) -> np.ndarray:
        if len(self.bases) == 0:
            return np.zeros(len(docs), bool)
        i = np.searchsorted(self.bases, docs, "right") - 1
        ok = i >= 0
        ok[ok] = docs[ok] < self.ends[i[ok]]
        return ok

    def _verify(self) -> None:
        """Sample committed documents; each must have its record and its exact-hash entry."""
        if not self.segs:
            return
        rng = np.random.default_rng(0)
        picks = [s["base"] for s in self.segs] + [s["base"] + s["n"] - 1 for s in self.segs]
        total = int(sum(s["n"] for s in self.segs))
        for k in rng.integers(0, total, size=min(VERIFY_SAMPLE, total)):
            si = 0
            acc = 0
            while acc + self.segs[si]["n"] <= k:
                acc += self.segs[si]["n"]
                si += 1
            picks.append(self.segs[si]["base"] + int(k - acc))
        picks = np.unique(np.array(picks, np.int64))
        recs = self._doc_records(picks)
        missing = [int(d) for d, r in zip(picks, recs) if r is None]
        if missing:
            raise IndexStoreError(
                f"{self.location}: committed document {missing[0]} has no record ({len(missing)} of "
                f"{len(picks)} sampled are missing): Redis lost data (flushed, evicted or restarted without "
                f"persistence); {_fix(self.location)}")
        if self.settings.exact:
            hashes = np.array([np.frombuffer(r[4:20], "<u8") for r in recs], np.uint64)
            vals = self._hget_many([self._xkey(h) for h in hashes])
            for d, v in zip(picks, vals):
                if v is None or (int(d) not in np.frombuffer(v, "<i8") and len(v) < EXACT_CAP * 8):
                    raise IndexStoreError(
                        f"{self.location}: the exact-hash entry of committed document {int(d)} is missing: "
                        f"Redis lost data; {_fix(self.location)}")

    @property
    def count(self) -> int:
        return int(sum(s["n"] for s in self.segs))

    # -- keys ---------------------------------------------------------------------------------
    def _xkey(self, h: np.ndarray) -> tuple[str, bytes]:
        return f"{self.p}:x:{int(h[0]) & (self.buckets - 1)}", np.asarray(h, "<u8").tobytes()

    def _bkey(self, j: int, k) -> tuple[str, bytes]:
        return f"{self.p}:b:{j}:{int(k) & (self.buckets - 1)}", int(k).to_bytes(8, "little")

    def _dkey(self, d: int) -> tuple[str, str]:
        return f"{self.p}:d:{d >> DOC_CHUNK_BITS}", str(d & ((1 << DOC_CHUNK_BITS) - 1))

    def _hget_many(self, kf: list[tuple[str, bytes | str]]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for i in range(0, len(kf), PIPE):
            def run(part=kf[i:i + PIPE]):
                pipe = self.r.pipeline(transaction=False)
                for k, f in part:
                    pipe.hget(k, f)
                return pipe.execute()
            out.extend(self._retry(run))
        return out

    def _retry(self, fn):
        """Call ``fn`` (idempotent Redis work), again while the server is unreachable, up to RETRY_S."""
        redis = require("redis", "redis")
        deadline = time.monotonic() + RETRY_S
        while True:
            try:
                return fn()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise IndexStoreError(
                        f"{self.location}: Redis unreachable for more than {RETRY_S:.0f} s ({exc}); nothing "
                        "uncommitted of this command is visible in the index: rerun it when Redis is back") from exc
                time.sleep(0.25)
            except redis.exceptions.ResponseError as exc:
                if "DEDUPKIT_LOCK_LOST" in str(exc):
                    raise IndexStoreError(
                        f"{self.location}: this writer lost the index lock (stalled past its "
                        f"{lock_ttl_s():.0f} s expiry while another writer took over); nothing of it was "
                        "committed: rerun the command") from exc
                if "NOSCRIPT" in str(exc):  # the server restarted and forgot the scripts
                    continue
                raise

    def _script(self, name: str, keys: list, args: list):
        return self._retry(lambda: self._scripts[name](keys=keys, args=args))

    def _fenced(self, *cmd):
        """One Redis command, executed only while this writer holds the lock."""
        return self._script("fenced", [f"{self.p}:lock"], [self._writer.value, *cmd])

    def _doc_records(self, docs: np.ndarray) -> list[bytes | None]:
        return self._hget_many([self._dkey(int(d)) for d in docs])

    def discard(self) -> None:
        self._drop_all(self.r, self.p)

    # -- writers ------------------------------------------------------------------------------
    def _make_lock(self) -> WriterLock:
        return _RedisLock(self, self._command)

    def _pending(self) -> dict[str, str]:
        raw = self._retry(lambda: self.r.hgetall(f"{self.p}:pending"))
        return {k.decode(): v.decode() for k, v in raw.items()}

    def _recover(self) -> None:
        """Roll back the append a killed writer (or a server restart) left pending; idempotent."""
        pend = self._pending()
        if pend:
            base, n = int(pend["base"]), int(pend["n"])
            chunk, nchunks = int(pend["chunk"]), int(pend["chunks"])
            log.warning("%s: rolling back an interrupted append of %d documents (started %s by %s)",
                        self.location, n, time.strftime("%H:%M:%S", time.localtime(float(pend["time"]))),
                        pend.get("holder", "an unknown process"))
            b = self.settings.bands
            for ci in range(nchunks):
                jkey = f"{self.p}:pj:{ci}"
                raw = self._retry(lambda: self.r.get(jkey))
                if raw is None:  # never written, so neither were this chunk's entries
                    continue
                m = min(chunk, n - ci * chunk)
                exact = np.frombuffer(raw[:16 * m], "<u8").reshape(m, 2) if self.settings.exact else None
                bands = np.frombuffer(raw[16 * m if self.settings.exact else 0:], "<u8").reshape(m, b) \
                    if self.settings.fuzzy else None
                for prefix, fields, width in self._families(exact, bands):
                    self._run_scripts([("strip", [f"{self.p}:lock"], [self._writer.value, base, base + n, prefix,
                                                                     self.buckets, width, part])
                                       for part in _parts(fields, width)])
                point("redis: rollback of a journal chunk")
            step = 1 << DOC_CHUNK_BITS
            fence = [f"{self.p}:lock"]
            calls = []
            for c in range(base >> DOC_CHUNK_BITS, ((base + n - 1) >> DOC_CHUNK_BITS) + 1):
                fields = [str(d & (step - 1)) for d in range(max(base, c * step), min(base + n, (c + 1) * step))]
                calls.append(("fenced", fence, [self._writer.value, "HDEL", f"{self.p}:d:{c}", *fields]))
            self._run_scripts(calls)
            shards_n = int(pend["shards_n"])
            extra = self._retry(lambda: self.r.lrange(f"{self.p}:shards", shards_n, -1))
            if extra:
                self._fenced("HDEL", f"{self.p}:shardidx", *extra)
                if shards_n:
                    self._fenced("LTRIM", f"{self.p}:shards", 0, shards_n - 1)
                else:
                    self._fenced("DEL", f"{self.p}:shards")
            self._run_scripts([("fenced", fence, [self._writer.value, "DEL", f"{self.p}:pj:{ci}"])
                               for ci in range(nchunks)])
            self._fenced("DEL", f"{self.p}:pending")  # last: a rollback killed half-way is redone
        point("writer: recovered")

    def _append(self, segment: Segment, key: str | None) -> int:
        raw = self._retry(lambda: self.r.get(f"{self.p}:meta"))
        if raw is None or IndexSettings.from_dict(json.loads(raw)["settings"]) != self.settings:
            raise IndexStoreError(f"{self.location}: the index was removed or recreated while open")
        self.refresh()
        end = int(self.ends.max()) if len(self.ends) else 0
        base = max(end, int(self._retry(lambda: self.r.get(f"{self.p}:next")) or 0))
        if len(segment):
            self._stage_and_commit(segment, base, key)
        return base

    def _stage_and_commit(self, segment: Segment, base: int, key: str | None) -> None:
        """Write ``segment`` under doc numbers ``base...`` (invisible until committed), then commit."""
        n = len(segment)
        lock = self._writer
        writer = json.loads(lock.value)["id"]
        nchunks = (n + STAGE_CHUNK - 1) // STAGE_CHUNK
        shards_n = int(self._retry(lambda: self.r.llen(f"{self.p}:shards")))
        self._fenced("HSET", f"{self.p}:pending", "writer", writer, "base", base, "n", n, "chunk", STAGE_CHUNK,
                     "chunks", nchunks, "shards_n", shards_n, "time", time.time(),
                     "holder", holder_text(json.loads(lock.value)))
        point("redis: pending recorded")
        shard_no = self._script("shards", [f"{self.p}:lock", f"{self.p}:shards", f"{self.p}:shardidx"],
                                [lock.value, *segment.shard_names])
        point("redis: shard names registered")
        shard_no_arr = np.array(shard_no, "<u4")
        ids = segment.doc_ids.to_pylist()
        exact = np.asarray(segment.exact, np.uint64) if self.settings.exact else np.zeros((n, 2), np.uint64)
        bands = np.asarray(segment.bands, np.uint64) if self.settings.fuzzy else None
        shard_b = shard_no_arr[segment.shard_index].tobytes()
        exact_b = exact.astype("<u8").tobytes()
        step = 1 << DOC_CHUNK_BITS
        for ci in range(nchunks):
            s0, s1 = ci * STAGE_CHUNK, min(n, (ci + 1) * STAGE_CHUNK)
            journal = (exact[s0:s1].astype("<u8").tobytes() if self.settings.exact else b"") + \
                (bands[s0:s1].astype("<u8").tobytes() if bands is not None else b"")
            self._fenced("SET", f"{self.p}:pj:{ci}", journal)  # before any entry of the chunk
            point("redis: journal chunk written")
            records = []
            d = base + s0
            while d < base + s1:
                stop = min(base + s1, (d // step + 1) * step)
                fields: list = []
                for doc in range(d, stop):
                    i = doc - base
                    fields += (str(doc & (step - 1)), shard_b[4 * i: 4 * i + 4] + exact_b[16 * i: 16 * i + 16]
                               + ids[i].encode())
                records.append(("fenced", [f"{self.p}:lock"], [lock.value, "HSET", f"{self.p}:d:{d >> DOC_CHUNK_BITS}",
                                                               *fields]))
                d = stop
            self._run_scripts(records)
            point("redis: document records written")
            docb = np.arange(base + s0, base + s1, dtype="<i8").tobytes()
            for prefix, fields, width in self._families(exact[s0:s1] if self.settings.exact else None,
                                                        bands[s0:s1] if bands is not None else None):
                cap = EXACT_CAP if width == 16 else BAND_CAP
                self._run_scripts([("stage", [f"{self.p}:lock"], [lock.value, cap, prefix, self.buckets, width, part,
                                                                  docb[8 * i: 8 * i + len(part) // width * 8]])
                                   for i, part in zip(range(0, s1 - s0, LUA_BATCH), _parts(fields, width))])
                point(f"redis: {'exact-hash' if width == 16 else 'band ' + prefix.split(':')[-2]} entries written")
        point("redis: staged, not yet committed")
        record = {"base": base, "n": n, "time": time.time(), "writer": writer}
        if key is not None:
            record["key"] = key
        self._script("commit", [f"{self.p}:lock", f"{self.p}:pending", f"{self.p}:segments", f"{self.p}:next",
                                f"{self.p}:pj:"],
                     [lock.value, json.dumps(record), base + n, nchunks, writer])
        point("redis: committed")
        self.refresh()

    def _run_scripts(self, calls: list[tuple[str, list, list]]) -> list:
        """Run (script, keys, args) calls in pipelines of 8 and return their replies; a batch is
        repeated whole after a dropped connection (every script here is idempotent)."""
        out: list = []
        for i in range(0, len(calls), 8):
            def run(part=calls[i:i + 8]):
                pipe = self.r.pipeline(transaction=False)
                for name, keys, args in part:
                    self._scripts[name](keys=keys, args=args, client=pipe)
                return pipe.execute()
            out.extend(self._retry(run))
        return out

    def _families(self, exact: np.ndarray | None, bands: np.ndarray | None):
        """(hash prefix, FIELDS, width) per key family: the exact hashes, then each band's keys."""
        if exact is not None:
            yield f"{self.p}:x:", np.ascontiguousarray(exact, "<u8").tobytes(), 16
        if bands is not None:
            for j in range(bands.shape[1]):
                yield f"{self.p}:b:{j}:", np.ascontiguousarray(bands[:, j], "<u8").tobytes(), 8

    # -- lookups ------------------------------------------------------------------------------
    def _hits(self, prefix: str, fields: bytes, width: int) -> tuple[np.ndarray, np.ndarray]:
        """(query, doc) pairs for the fields found, committed docs only (server-side lookups)."""
        calls = [("lookup", [], [prefix, self.buckets, width, part]) for part in _parts(fields, width)]
        qs, vals = [], []
        for k, res in enumerate(self._run_scripts(calls)):
            qs += [k * LUA_BATCH + int(x) for x in res[0::2]]
            vals += res[1::2]
        if not vals:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        lens = np.array([len(v) // 8 for v in vals], np.int64)
        docs = np.frombuffer(b"".join(vals), "<i8").astype(np.int64)
        q = np.repeat(np.array(qs, np.int64), lens)
        ok = self._committed(docs)
        return q[ok], docs[ok]

    def lookup_exact(self, hashes: np.ndarray) -> np.ndarray:
        if not self.settings.exact:
            raise ConfigError(f"{self.location}: this index holds no exact hashes")
        hashes = np.asarray(hashes, np.uint64).reshape(-1, 2)
        out = np.full(len(hashes), -1, np.int64)
        ((prefix, fields, width),) = self._families(hashes, None)
        q, d = self._hits(prefix, fields, width)
        if len(q):
            best = np.full(len(hashes), np.iinfo(np.int64).max, np.int64)
            np.minimum.at(best, q, d)
            hit = best != np.iinfo(np.int64).max
            out[hit] = best[hit]
        return out

    def lookup_bands(self, keys: np.ndarray) -> BandMatches:
        if not self.settings.fuzzy:
            raise ConfigError(f"{self.location}: this index holds no MinHash band keys")
        keys = np.asarray(keys, np.uint64)
        n, b = keys.shape
        if b != self.settings.bands:
            raise ConfigError(f"got {b} band keys per document, the index has {self.settings.bands}")
        qs, ds = [], []
        for prefix, fields, width in self._families(None, keys):
            q, d = self._hits(prefix, fields, width)
            qs.append(q)
            ds.append(d)
        return best_band_matches(n, np.concatenate(qs), np.concatenate(ds))

    def resolve(self, docs: np.ndarray) -> tuple[list[str], list[str]]:
        docs = np.asarray(docs, np.int64)
        recs = self._doc_records(docs)
        shard_names = [s.decode() for s in self.r.lrange(f"{self.p}:shards", 0, -1)]
        ids, shards = [], []
        for d, r in zip(docs, recs):
            if r is None:
                raise IndexStoreError(f"{self.location}: document {int(d)} has no record: Redis lost data; "
                                      f"{_fix(self.location)}")
            shards.append(shard_names[int.from_bytes(r[:4], "little")])
            ids.append(r[20:].decode())
        return ids, shards

    def info(self) -> IndexInfo:
        """Counts and size, after verifying that every committed document has its record (and, for a
        sample, its exact-hash entry); reports an interrupted append awaiting rollback and the writer."""
        mem = self.r.info("memory").get("used_memory")
        self._verify()
        step = 1 << DOC_CHUNK_BITS
        want: dict[int, int] = {}
        for c in self.segs:
            for d0 in range(c["base"], c["base"] + c["n"], step):
                d1 = min(c["base"] + c["n"], (d0 // step + 1) * step)
                want[d0 >> DOC_CHUNK_BITS] = want.get(d0 >> DOC_CHUNK_BITS, 0) + d1 - d0
        chunks = sorted(want)
        have = []
        for i in range(0, len(chunks), PIPE):
            def run(part=chunks[i:i + PIPE]):
                pipe = self.r.pipeline(transaction=False)
                for c in part:
                    pipe.hlen(f"{self.p}:d:{c}")
                return pipe.execute()
            have.extend(self._retry(run))
        short = [c for c, h in zip(chunks, have) if h < want[c]]
        if short:
            raise IndexStoreError(
                f"{self.location}: {len(short)} groups of committed documents lack records (first: documents "
                f"{short[0] * step}..{short[0] * step + step - 1}): Redis lost data; {_fix(self.location)}")
        pend = self._pending()
        rec = _loads(self.r.get(f"{self.p}:lock"))
        live = rec is not None and not holder_is_dead(rec)
        holder = (holder_text(rec) + ("" if live else " (no longer running)")) if rec else None
        return IndexInfo(location=self.location, kind=self.kind, settings=self.settings, documents=self.count,
                         segments=len(self.segs), bytes=None, shards=int(self.r.llen(f"{self.p}:shards")),
                         extra={"prefix": self.p, "redis_used_memory": mem, "created": self.meta.get("created"),
                                "verified": (f"records of all {self.count} committed documents, exact-hash entries "
                                             f"of a sample"),
                                "writer": holder,
                                "pending": ({"documents": int(pend["n"]), "by": pend.get("holder"),
                                             "state": "being written" if live else
                                             "interrupted: the next writer rolls it back"} if pend else None)})

    def close(self) -> None:
        try:
            self.r.close()
        except Exception:  # pragma: no cover - closing never matters for correctness
            pass


class _RedisLock(WriterLock):
    """The writer lock of a Redis index: ``PREFIX:lock`` set NX with an expiry, renewed by a thread.

    Its value (the holder's record plus a random id) is the fencing token every write checks. A
    holder on this machine whose process is gone is taken over at once; elsewhere the lock expires
    after :func:`lock_ttl_s` without renewal.
    """

    def __init__(self, store: RedisIndex, command: str):
        self.store = store
        self.key = f"{store.p}:lock"
        self.what = f"index {store.location}"
        self.value = json.dumps({**holder_record(command), "id": uuid.uuid4().hex})
        self.ttl_ms = int(lock_ttl_s() * 1000)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def try_acquire(self) -> bool:
        r = self.store.r
        got = self.store._retry(lambda: r.set(self.key, self.value, nx=True, px=self.ttl_ms))
        if not got:
            cur = self.store._retry(lambda: r.get(self.key))
            rec = _loads(cur)
            if cur is not None and holder_is_dead(rec):
                log.warning("%s: taking over the lock of %s, which is no longer running", self.what, holder_text(rec))
                got = self.store._retry(lambda: r.eval(_TAKEOVER_LUA, 1, self.key, cur, self.value, self.ttl_ms))
        if got:
            self._stop.clear()
            self._thread = threading.Thread(target=self._renew, name="dedupkit-index-lock", daemon=True)
            self._thread.start()
        return bool(got)

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_ms / 3000):
            try:
                if not self.store.r.eval(_RENEW_LUA, 1, self.key, self.value, self.ttl_ms):
                    return  # lost: the fenced writes will say so
            except Exception:  # noqa: BLE001 - unreachable for a moment (restart): try again next tick
                continue

    def holder(self) -> dict | None:
        return _loads(self.store._retry(lambda: self.store.r.get(self.key)))

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self.store._retry(lambda: self.store.r.eval(_UNLOCK_LUA, 1, self.key, self.value))
        except IndexStoreError:  # unreachable: the lock expires by itself
            pass


def _loads(raw) -> dict | None:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _parts(fields: bytes, width: int) -> list[bytes]:
    """FIELDS cut into batches of LUA_BATCH fields."""
    step = LUA_BATCH * width
    return [fields[i:i + step] for i in range(0, len(fields), step)]
