"""The local cache in front of the store: decrypted sessions, bounded (LRU) and short-lived.

Keyed by a hash of the whole cookie (id and secret), so a hit still proves the caller
holds the secret. A hit makes no store call. Concurrent misses for one session share
one store read. The TTL bounds how long a sign-out on another replica stays unseen.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from authproxy import metrics
from authproxy.singleflight import SingleFlight

Value = TypeVar("Value")


class SessionCache(Generic[Value]):
    """Bounded by entry count and, with ``weigh``, by bytes (a session with a few hundred
    groups in its claims takes tens of KiB, so a count alone does not bound memory)."""

    def __init__(self, max_entries: int, ttl: float, clock: Callable[[], float] = time.monotonic, *,
                 max_bytes: int | None = None, weigh: Callable[[Value], int] | None = None):
        self._entries: OrderedDict[str, tuple[float, Value, int]] = OrderedDict()
        self._max_entries = max_entries
        self._max_bytes = max_bytes if weigh is not None else None
        self._weigh = weigh
        self.bytes = 0
        self._ttl = ttl
        self._clock = clock
        # Concurrent misses for one session share one read, which no caller's cancellation cuts.
        self._loading: SingleFlight[str, Value | None] = SingleFlight()
        # Bumped by evict(): a read or a refresh that began before a sign-out must not
        # put the session back (bounded like the entries themselves).
        self._generations: OrderedDict[str, int] = OrderedDict()

    @property
    def max_entries(self) -> int:
        return self._max_entries

    @staticmethod
    def key_for(cookie_value: str) -> str:
        return hashlib.sha256(cookie_value.encode()).hexdigest()

    def peek(self, key: str) -> Value | None:
        """The fresh cached value, without counting a hit or a miss (the caller counts the
        lookup it completes: ``hit()``, or ``get_or_load``)."""
        entry = self._entries.get(key)
        if entry is not None and self._clock() - entry[0] < self._ttl:
            return entry[1]
        return None

    def entry(self, key: str) -> tuple[float, Value, int] | None:
        """The entry held for ``key``, fresh or not: (stored at, value, size). A later ``put``
        or eviction replaces or drops it, so holding on to it and comparing by identity
        tells whether the value is still the one cached (``Sessions.still_cached``)."""
        return self._entries.get(key)

    def stale_at(self, entry: tuple[float, Value, int]) -> float:
        """When ``entry`` stops being fresh, on the cache's clock (``clock``)."""
        return entry[0] + self._ttl

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    def hit(self, key: str) -> None:
        """A lookup ``peek`` answered."""
        self._entries.move_to_end(key)
        metrics.SESSION_CACHE.hits += 1

    async def get_or_load(self, key: str, load: Callable[[], Awaitable[Value | None]]) -> Value | None:
        entry = self._entries.get(key)
        if entry is not None:
            stored_at, value, _ = entry
            if self._clock() - stored_at < self._ttl:
                self._entries.move_to_end(key)
                metrics.SESSION_CACHE.hits += 1
                return value
            self._drop(key)
        metrics.SESSION_CACHE.misses += 1
        # Taken now, before the read starts: an evict() from here on keeps its result out.
        generation = self.generation(key)
        return await self._loading.run(key, lambda: self._load(key, load, generation))

    async def _load(self, key: str, load: Callable[[], Awaitable[Value | None]], generation: int) -> Value | None:
        value = await load()
        if value is not None:
            self.put(key, value, generation)
        return value

    def generation(self, key: str) -> int:
        return self._generations.get(key, 0)

    def put(self, key: str, value: Value, generation: int | None = None) -> None:
        """Cache ``value``; with ``generation``, only if no evict() happened since it was taken."""
        if generation is not None and generation != self.generation(key):
            return
        self._drop(key)
        size = self._weigh(value) if self._weigh is not None else 0
        if self._max_bytes is not None and size > self._max_bytes:
            metrics.CACHE_ENTRIES.set(len(self._entries))
            metrics.CACHE_BYTES.set(self.bytes)
            return  # larger than the whole cache: served, not kept
        self._entries[key] = (self._clock(), value, size)
        self.bytes += size
        while len(self._entries) > self._max_entries or (self._max_bytes is not None and self.bytes > self._max_bytes):
            _, (_, _, dropped) = self._entries.popitem(last=False)
            self.bytes -= dropped
        metrics.CACHE_ENTRIES.set(len(self._entries))
        metrics.CACHE_BYTES.set(self.bytes)

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry[2]

    def evict(self, key: str) -> None:
        self._drop(key)
        metrics.CACHE_ENTRIES.set(len(self._entries))
        metrics.CACHE_BYTES.set(self.bytes)
        self._generations[key] = self.generation(key) + 1
        self._generations.move_to_end(key)
        while len(self._generations) > self._max_entries:
            self._generations.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
