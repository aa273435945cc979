"""In-memory state: a small map whose entries expire, and the sign-in records it holds.

Nothing here does I/O or reads a clock; callers pass ``now``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

from authproxy.demo.idp.clients import DemoUser

MAX_ENTRIES = 10_000  # per in-memory table; the oldest entries go first

V = TypeVar("V")


class _Expiring(Generic[V]):
    """A map whose entries expire, holding at most ``limit`` of them (the oldest go first).

    Entries of one table share a lifetime, so insertion order is expiry order and
    purging walks from the front.
    """

    def __init__(self, limit: int = MAX_ENTRIES) -> None:
        self._items: OrderedDict[str, tuple[float, V]] = OrderedDict()
        self._limit = limit

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: str, value: V, expires_at: float, now: float) -> None:
        while self._items and next(iter(self._items.values()))[0] <= now:
            self._items.popitem(last=False)
        self._items[key] = (expires_at, value)
        self._items.move_to_end(key)
        while len(self._items) > self._limit:
            self._items.popitem(last=False)

    def get(self, key: str, now: float) -> V | None:
        entry = self._items.get(key)
        if entry is None or entry[0] <= now:
            return None
        return entry[1]

    def pop(self, key: str, now: float) -> V | None:
        entry = self._items.pop(key, None)
        if entry is None or entry[0] <= now:
            return None
        return entry[1]


@dataclass(frozen=True, slots=True)
class _Authentication:
    """One sign-in of a user at a client: what its code and refresh token stand for."""

    client_id: str
    user: DemoUser
    scope: str
    auth_time: int
    origin_jti: str  # Cognito's origin_jti: ties tokens to their refresh token, for revocation
    event_id: str = ""  # Cognito's event_id: the sign-in event every token of this authentication names


@dataclass(frozen=True, slots=True)
class _Code:
    authentication: _Authentication
    redirect_uri: str
    code_challenge: str
    nonce: str | None
