"""Authenticating API keys: a token in, the Principal it stands for out, cached.

Keys are stored as sha256 hashes, each bound to one tenant, a subject, roles (app, reviewer,
admin) and reviewer groups. Authenticated keys are cached in-process for `ttl_s` seconds
(0 disables the cache); a revocation clears the cache within `watch_revocations`' period
wherever it was made (the CLI, the admin API, another replica), and at once on the replica
that called `invalidate`.
"""

from __future__ import annotations

import asyncio
import logging
import time

from policyengine.store import ApiKeyRepo, KeyInfo, hash_token
from policyengine.types import Principal

log = logging.getLogger("policyengine.gateway.keys")

# The cache is cleared whole when it holds more entries than this (a bound on memory, not an LRU:
# a service sees few distinct keys; a flood of bad tokens only costs database lookups).
MAX_CACHED = 10_000


def principal_of(info: KeyInfo) -> Principal:
    """The immutable Principal for a stored key."""
    return Principal(tenant=info.tenant, key_id=info.key_id, subject=info.subject, roles=frozenset(info.roles),
                     groups=frozenset(info.groups), attributes=info.attributes)


class KeyCache:
    """Authenticated keys by token hash, as ready-made Principals, for `ttl_s` seconds.

    A token that does not authenticate is cached too (as None), so a client retrying a bad
    key does not cost a query per request. Concurrent misses for one token share one lookup
    (when an entry expires under load, every request in flight for that key would otherwise
    query the database at once); a lookup that started before an `invalidate` is answered but
    not cached.
    """

    def __init__(self, repo: ApiKeyRepo, ttl_s: float) -> None:
        self.repo, self.ttl_s = repo, ttl_s
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._inflight: dict[str, asyncio.Task[Principal | None]] = {}
        self._generation = 0  # moves on at each invalidate

    async def lookup(self, token: str) -> Principal | None:
        """The Principal of `token`, or None when no live key has it."""
        h = hash_token(token)
        hit = self._cache.get(h)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        task = self._inflight.get(h)
        if task is None:
            task = self._inflight[h] = asyncio.ensure_future(self._fetch(token, h, self._generation))
        # shielded: a caller that goes away (a client hanging up) does not cancel the others' lookup
        return await asyncio.shield(task)

    async def _fetch(self, token: str, h: str, generation: int) -> Principal | None:
        try:
            info = await self.repo.authenticate(token)
        finally:
            self._inflight.pop(h, None)
        p = None if info is None else principal_of(info)
        if self.ttl_s > 0 and generation == self._generation:
            if len(self._cache) > MAX_CACHED:
                self._cache.clear()
            self._cache[h] = (time.monotonic() + self.ttl_s, p)
        return p

    def invalidate(self) -> None:
        """Forget every cached key (after a revocation)."""
        self._generation += 1
        self._cache.clear()

    async def watch_revocations(self, every_s: float) -> None:
        """Clear the cache as soon as a key is revoked anywhere (the CLI, another replica): one small
        query every `every_s` seconds, so a revocation takes effect within that time, not the TTL.
        Runs until cancelled; a database error is logged and retried, never raised."""
        mark: tuple[int, float | None] | None = None
        while True:
            try:
                now = await self.repo.revocation_mark()
            except Exception as exc:  # the database is briefly unavailable: keep serving, retry
                log.warning("cannot check for revoked API keys: %s: %s", type(exc).__name__, exc)
            else:
                if mark is not None and now != mark:
                    self.invalidate()
                mark = now
            await asyncio.sleep(every_s)
