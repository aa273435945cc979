"""Refreshed tokens this process holds that the store does not have yet ("dirty" state).

A provider that rotates refresh tokens kills the old one when it hands out a new one
(RFC 9700 4.14.2; Cognito after its grace period; oidc-provider at once, revoking the
whole grant on reuse). Until the new token is in the store, this process holds the only
copy. So an unsaved write is kept here, not in the cache: no TTL, no LRU, no cache fill
can push it out. It leaves only when

- its own write lands (or an earlier attempt of it did: the write id tells),
- the store shows a higher version (someone wrote newer tokens; ours are stale),
- the session ends (signed out here, or found gone), or its absolute expiry passes.

The number held is capped: at the cap the refresher takes no new lease (it serves the
token it has, or 503) rather than drop a token it cannot save.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from authproxy import metrics

if TYPE_CHECKING:
    from authproxy.session.cookies import SessionTicket
    from authproxy.session.store import Session

DEFAULT_LIMIT = 1000


@dataclass(slots=True, eq=False)
class PendingWrite:
    """One refresh's tokens, sealed and ready to write over ``base_version``."""

    ticket: SessionTicket
    session: Session
    base_version: int
    payload: bytes
    write_id: str

    def __repr__(self) -> str:  # tokens never reach a log through a repr
        return f"PendingWrite(sub={self.session.sub!r}, base_version={self.base_version})"


class PendingWrites:
    """Unsaved writes by cache key, at most one per session (the newest refresh's)."""

    def __init__(self, limit: int = DEFAULT_LIMIT):
        self.limit = limit
        self._entries: dict[str, PendingWrite] = {}

    def get(self, key: str) -> PendingWrite | None:
        return self._entries.get(key)

    def full(self, key: str) -> bool:
        """Whether a new unsaved write for ``key`` would go over the cap."""
        return key not in self._entries and len(self._entries) >= self.limit

    def hold(self, key: str, write: PendingWrite) -> None:
        """Keep ``write`` until it is saved; a newer refresh of the same session replaces
        the older one (it was made from it, so it carries the newest refresh token)."""
        self._entries[key] = write
        metrics.SESSION_PENDING_WRITES.set(len(self._entries))

    def release(self, key: str, write: PendingWrite | None = None) -> PendingWrite | None:
        """Forget the write for ``key`` (only ``write`` itself, when given); returns it."""
        current = self._entries.get(key)
        if current is None or (write is not None and current is not write):
            return None
        del self._entries[key]
        metrics.SESSION_PENDING_WRITES.set(len(self._entries))
        return current

    def items(self) -> list[tuple[str, PendingWrite]]:
        return list(self._entries.items())

    def __len__(self) -> int:
        return len(self._entries)
