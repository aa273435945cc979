"""Failing fast while the store is down, and not asking it twice about a session that is not there.

``CircuitBreaker``: after ``threshold`` store calls in a row that got no answer (a
timeout, a connection failure, a 5xx), the circuit opens and every call fails at once
(``StoreUnavailable``: 503 with Retry-After in milliseconds instead of seconds of
retries). After ``open_for`` (doubled after each failed probe, capped, with jitter so
replicas do not probe in step) one call is let through: the half-open probe. Its
answer closes the circuit; its failure opens it again. Only one probe runs at a time,
so a store on its way back sees one request per worker, not the whole backlog.

An answer is an answer: a failed condition, a missing item, a throttled request or a
refused one (validation, access) all prove the store is up, and never open the
circuit. Otherwise anyone could switch sign-ins off by sending random cookies or by
driving the table into throttling.

``RecentlyAbsent``: session keys the store said it does not hold, remembered for a
short while (bounded). Keys are hashes of random 192-bit ids and an item is created
only before its cookie is handed out, so an absent key can appear later only through
this process's own ``create`` (which forgets it); a replayed stale or forged cookie
then costs no store read.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Callable

from authproxy import metrics

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    def __init__(
        self,
        backend: str,
        *,
        threshold: int = 5,
        open_for: float = 0.25,
        max_open_for: float = 1.0,
        probe_timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ):
        self.backend = backend
        self._threshold = threshold
        self._base = open_for
        self._max = max_open_for
        self._probe_timeout = probe_timeout  # a probe never heard of again (cancelled) frees its slot
        self._clock = clock
        self._jitter = jitter
        self.state = CLOSED
        self._failures = 0
        self._opened = 0  # failed probes since the circuit last closed
        self._retry_at = 0.0
        self._probe_since: float | None = None
        self._publish()

    def allow(self) -> bool:
        """Whether a call may go to the store now; a True in the open state makes that
        call the probe, which must end in ``success`` or ``failure`` (or ``abandon``)."""
        if self.state == CLOSED:
            return True
        now = self._clock()
        if self.state == HALF_OPEN:
            if self._probe_since is not None and now - self._probe_since < self._probe_timeout:
                metrics.STORE_CIRCUIT_REJECTED.labels(self.backend).inc()
                return False
        elif now < self._retry_at:
            metrics.STORE_CIRCUIT_REJECTED.labels(self.backend).inc()
            return False
        self.state = HALF_OPEN
        self._probe_since = now
        self._publish()
        return True

    def success(self) -> None:
        """The store answered (whatever it said)."""
        self._failures = 0
        if self.state != CLOSED:
            self.state = CLOSED
            self._opened = 0
            self._probe_since = None
            self._publish()

    def failure(self) -> None:
        """No answer: a timeout, a connection failure, a 5xx."""
        self._failures += 1
        if self.state == HALF_OPEN or (self.state == CLOSED and self._failures >= self._threshold):
            self._open()

    def abandon(self) -> None:
        """The probe ended without a verdict (cancelled): the next call may probe."""
        if self.state == HALF_OPEN:
            self._probe_since = None

    def _open(self) -> None:
        period = min(self._max, self._base * 2**self._opened)
        self._opened += 1
        self._retry_at = self._clock() + period * (0.8 + 0.4 * self._jitter())
        self._probe_since = None
        self.state = OPEN
        self._publish()

    def _publish(self) -> None:
        metrics.STORE_CIRCUIT_OPEN.labels(self.backend).set(0 if self.state == CLOSED else 1)


class RecentlyAbsent:
    """Keys known to be absent, each for ``ttl`` seconds, at most ``limit`` of them."""

    def __init__(self, ttl: float = 60.0, limit: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self._ttl = ttl
        self._limit = limit
        self._clock = clock
        self._until: OrderedDict[str, float] = OrderedDict()

    def __contains__(self, key: str) -> bool:
        until = self._until.get(key)
        if until is None:
            return False
        if self._clock() >= until:
            del self._until[key]
            return False
        return True

    def add(self, key: str) -> None:
        self._until[key] = self._clock() + self._ttl
        self._until.move_to_end(key)
        while len(self._until) > self._limit:
            self._until.popitem(last=False)

    def discard(self, key: str) -> None:
        self._until.pop(key, None)

    def __len__(self) -> int:
        return len(self._until)
