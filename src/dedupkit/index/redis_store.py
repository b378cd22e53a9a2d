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
    lock              the writer lock (SET NX with an expiry)

Why small bucketed hashes: Redis stores a hash of at most 128 short fields as one compact listpack,
about 4x smaller than one key per entry; the bucket count (``2**14``) keeps about 60 entries per
bucket for a million documents.

Consistency: an append reserves its document numbers, writes every entry, and commits by pushing
one element onto ``segments``. A reader reads ``segments`` once and ignores doc numbers outside the
committed ranges, so it never sees half an append, and a writer that crashed leaves only entries
that nobody reads. Integrity: opening checks the format and verifies a sample of committed documents
(their record and their exact-hash entry); a Redis that lost data (flushed, evicted, restarted
without persistence) is an error, not an empty pass. Plain Redis only (not Redis Cluster).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from urllib.parse import parse_qs, urlparse

import numpy as np

from dedupkit.errors import ConfigError, require
from dedupkit.redact import redact
from dedupkit.index.base import (
    BAND_CAP, FORMAT, FORMAT_VERSION, BandMatches, IndexInfo, IndexSettings, IndexStore,
    IndexStoreError, Segment, best_band_matches,
)

BUCKET_BITS = 14
EXACT_CAP = 8
DOC_CHUNK_BITS = 7
VERIFY_SAMPLE = 64
PIPE = 20000
LOCK_TTL_MS = 30 * 60 * 1000
LOCK_WAIT_S = 120.0

# Append packed doc numbers to a hash field, up to ARGV[1] numbers per field.
_APPEND_LUA = """
local cap = tonumber(ARGV[1]) * 8
for i = 2, #ARGV, 3 do
  local cur = redis.call('HGET', ARGV[i], ARGV[i+1])
  if not cur then
    redis.call('HSET', ARGV[i], ARGV[i+1], ARGV[i+2])
  elseif #cur < cap then
    redis.call('HSET', ARGV[i], ARGV[i+1], cur .. ARGV[i+2])
  end
end
return 1
"""
_UNLOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


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
        self._append = self.r.register_script(_APPEND_LUA)
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
            pipe = self.r.pipeline(transaction=False)
            for k, f in kf[i:i + PIPE]:
                pipe.hget(k, f)
            out.extend(pipe.execute())
        return out

    def _doc_records(self, docs: np.ndarray) -> list[bytes | None]:
        return self._hget_many([self._dkey(int(d)) for d in docs])

    def discard(self) -> None:
        self._drop_all(self.r, self.p)

    # -- appending ----------------------------------------------------------------------------
    def append(self, segment: Segment) -> int:
        segment.validate(self.settings)
        n = len(segment)
        token = uuid.uuid4().hex
        lock = f"{self.p}:lock"
        deadline = time.monotonic() + LOCK_WAIT_S
        while not self.r.set(lock, token, nx=True, px=LOCK_TTL_MS):
            if time.monotonic() > deadline:
                raise IndexStoreError(f"{self.location}: another process has been appending for more than "
                                      f"{LOCK_WAIT_S:.0f} s; retry when it has finished")
            time.sleep(0.2)
        try:
            raw = self.r.get(f"{self.p}:meta")
            if raw is None or IndexSettings.from_dict(json.loads(raw)["settings"]) != self.settings:
                raise IndexStoreError(f"{self.location}: the index was removed or recreated while open")
            if n == 0:
                self._snapshot()
                return int(self.r.get(f"{self.p}:next") or 0)
            base = int(self.r.incrby(f"{self.p}:next", n)) - n
            shard_no = []
            for name in segment.shard_names:
                v = self.r.hget(f"{self.p}:shardidx", name)
                if v is None:
                    v = self.r.rpush(f"{self.p}:shards", name) - 1
                    self.r.hset(f"{self.p}:shardidx", name, v)
                shard_no.append(int(v))
            shard_no_arr = np.array(shard_no, "<u4")
            ids = segment.doc_ids.to_pylist()
            exact = np.asarray(segment.exact, np.uint64) if self.settings.exact else np.zeros((n, 2), np.uint64)
            exact_b = exact.astype("<u8").tobytes()
            shard_b = shard_no_arr[segment.shard_index].tobytes()
            # Doc records: one HSET per 128-document chunk.
            pipe = self.r.pipeline(transaction=False)
            chunk = 1 << DOC_CHUNK_BITS
            d = base
            while d < base + n:
                stop = min(base + n, (d // chunk + 1) * chunk)
                mapping = {}
                for doc in range(d, stop):
                    i = doc - base
                    mapping[str(doc & (chunk - 1))] = shard_b[4 * i: 4 * i + 4] + exact_b[16 * i: 16 * i + 16] \
                        + ids[i].encode()
                pipe.hset(f"{self.p}:d:{d >> DOC_CHUNK_BITS}", mapping=mapping)
                if len(pipe) >= 500:
                    pipe.execute()
                d = stop
            pipe.execute()
            docb = np.arange(base, base + n, dtype="<i8").tobytes()
            mask = np.uint64(self.buckets - 1)
            if self.settings.exact:
                buckets = (exact[:, 0] & mask).tolist()
                self._append_entries(EXACT_CAP, f"{self.p}:x:", buckets, exact_b, 16, docb)
            if self.settings.fuzzy:
                bands = np.asarray(segment.bands, np.uint64)
                for j in range(bands.shape[1]):
                    col = bands[:, j]
                    self._append_entries(BAND_CAP, f"{self.p}:b:{j}:", (col & mask).tolist(),
                                         col.astype("<u8").tobytes(), 8, docb)
            # Commit: one list push makes the whole append visible.
            self.r.rpush(f"{self.p}:segments", json.dumps({"base": base, "n": n, "time": time.time()}))
        finally:
            self.r.register_script(_UNLOCK_LUA)(keys=[lock], args=[token])
        self._snapshot()
        return base

    def _append_entries(self, cap: int, prefix: str, buckets: list[int], fields: bytes, width: int,
                        docb: bytes) -> None:
        """Append doc number i to field ``fields[i]`` of hash ``prefix + buckets[i]`` (server-side, capped)."""
        n = len(buckets)
        step = 4000
        pipe = self.r.pipeline(transaction=False)
        for s in range(0, n, step):
            args: list = [cap]
            for i in range(s, min(n, s + step)):
                args += (prefix + str(buckets[i]), fields[width * i: width * (i + 1)], docb[8 * i: 8 * i + 8])
            self._append(args=args, client=pipe)
            if len(pipe) >= 8:
                pipe.execute()
        pipe.execute()

    # -- lookups ------------------------------------------------------------------------------
    def _first_committed(self, vals: list[bytes | None]) -> tuple[np.ndarray, np.ndarray]:
        """Flatten packed doc lists into (query, doc) pairs, committed docs only."""
        lens = np.array([0 if v is None else len(v) // 8 for v in vals], np.int64)
        if lens.sum() == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        docs = np.frombuffer(b"".join(v for v in vals if v), "<i8").astype(np.int64)
        q = np.repeat(np.arange(len(vals)), lens)
        ok = self._committed(docs)
        return q[ok], docs[ok]

    def lookup_exact(self, hashes: np.ndarray) -> np.ndarray:
        if not self.settings.exact:
            raise ConfigError(f"{self.location}: this index holds no exact hashes")
        hashes = np.asarray(hashes, np.uint64).reshape(-1, 2)
        out = np.full(len(hashes), -1, np.int64)
        vals = self._hget_many([self._xkey(h) for h in hashes])
        q, d = self._first_committed(vals)
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
        mask = np.uint64(self.buckets - 1)
        for j in range(b):
            col = keys[:, j]
            buckets = (col & mask).tolist()
            raw = col.astype("<u8").tobytes()
            pre = f"{self.p}:b:{j}:"
            vals = self._hget_many([(pre + str(buckets[i]), raw[8 * i: 8 * i + 8]) for i in range(n)])
            q, d = self._first_committed(vals)
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
        mem = self.r.info("memory").get("used_memory")
        return IndexInfo(location=self.location, kind=self.kind, settings=self.settings, documents=self.count,
                         segments=len(self.segs), bytes=None, shards=int(self.r.llen(f"{self.p}:shards")),
                         extra={"prefix": self.p, "redis_used_memory": mem, "created": self.meta.get("created")})

    def close(self) -> None:
        try:
            self.r.close()
        except Exception:  # pragma: no cover - closing never matters for correctness
            pass
