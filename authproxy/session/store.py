"""Sessions and the interim in-memory store (the token store part replaces it).

A session's tokens are sealed with a key derived from the server secrets and the
cookie's own secret, bound to the item's key, even in memory: the store never holds
a usable token on its own.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from authproxy.oidc.client import TokenResponse
from authproxy.session.cookies import SessionTicket
from authproxy.session.crypto import SecretBox, Unsealable


@dataclass(slots=True)
class Session:
    sub: str
    claims: dict[str, Any]  # the ID token's verified claims
    access_token: str
    id_token: str | None
    refresh_token: str | None
    access_expires_at: int | None
    created_at: int
    expires_at: int  # absolute end (session.lifetime)
    last_seen_at: int = field(default=0)

    def __repr__(self) -> str:  # tokens never reach a log through a repr
        return f"Session(sub={self.sub!r}, expires_at={self.expires_at})"

    def refreshed(self, tokens: TokenResponse, now: int) -> Session:
        """This session after a refresh_token grant. A response without a refresh token
        keeps the old one (Cognito without rotation sends none, RFC 6749 6); one with a
        refresh token replaces it (rotation: the old one dies at the provider)."""
        return replace(
            self,
            access_token=tokens.access_token,
            id_token=tokens.id_token or self.id_token,
            refresh_token=tokens.refresh_token or self.refresh_token,
            access_expires_at=now + tokens.expires_in if tokens.expires_in else None,
        )

    def seal(self, box: SecretBox, ticket: SessionTicket) -> bytes:
        return box.seal(json.dumps(asdict(self)).encode(), context=ticket.secret.encode(), associated_data=ticket.key.encode())

    @classmethod
    def unseal(cls, box: SecretBox, ticket: SessionTicket, sealed: bytes) -> Session:
        data = box.open(sealed, context=ticket.secret.encode(), associated_data=ticket.key.encode())
        return cls(**json.loads(data))


class MemorySessionStore:
    """One process's sessions, bounded (oldest evicted first), honouring expiry."""

    def __init__(self, box: SecretBox, max_entries: int = 100_000):
        self._box = box
        self._items: OrderedDict[str, tuple[bytes, int]] = OrderedDict()
        self._max_entries = max_entries

    def put(self, ticket: SessionTicket, session: Session) -> None:
        self._items[ticket.key] = (session.seal(self._box, ticket), session.expires_at)
        self._items.move_to_end(ticket.key)
        while len(self._items) > self._max_entries:
            self._items.popitem(last=False)

    def get(self, ticket: SessionTicket, now: int) -> Session | None:
        item = self._items.get(ticket.key)
        if item is None:
            return None
        sealed, expires_at = item
        if now >= expires_at:
            self._items.pop(ticket.key, None)
            return None
        try:
            return Session.unseal(self._box, ticket, sealed)
        except (Unsealable, ValueError, TypeError):
            return None  # a wrong secret is no session; the item stays (it may be someone's)

    def delete(self, ticket: SessionTicket) -> None:
        self._items.pop(ticket.key, None)

    def __len__(self) -> int:
        return len(self._items)
