"""Sessions: the model, and the service that keeps them in the store behind a cache.

A session's tokens are sealed with a key derived from the server secrets and the
cookie's own secret, bound to the item's key: the store never holds a usable token.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from authproxy.oidc.client import TokenResponse
from authproxy.session.cookies import SessionTicket
from authproxy.session.cache import SessionCache
from authproxy.session.crypto import SecretBox, Unsealable
from authproxy.store.base import SessionRecord, SessionStore, StoreUnavailable, VersionConflict


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
    access_issued_at: int | None = None  # when the current access token arrived (its lifetime clamps refresh)

    def __repr__(self) -> str:  # tokens never reach a log through a repr
        return f"Session(sub={self.sub!r}, expires_at={self.expires_at})"

    def refreshed(self, tokens: TokenResponse, now: int, claims: dict[str, Any] | None = None) -> Session:
        """This session after a refresh_token grant. A response without a refresh token
        keeps the old one (Cognito without rotation sends none, RFC 6749 6); one with a
        refresh token replaces it (rotation: the old one dies at the provider)."""
        return replace(
            self,
            access_token=tokens.access_token,
            id_token=tokens.id_token or self.id_token,
            claims=claims if claims is not None else self.claims,
            refresh_token=tokens.refresh_token or self.refresh_token,
            access_expires_at=now + tokens.expires_in if tokens.expires_in else None,
            access_issued_at=now,
        )

    def seal(self, box: SecretBox, ticket: SessionTicket) -> bytes:
        return box.seal(json.dumps(asdict(self)).encode(), context=ticket.secret.encode(), associated_data=ticket.key.encode())

    @classmethod
    def unseal(cls, box: SecretBox, ticket: SessionTicket, sealed: bytes) -> Session:
        data = box.open(sealed, context=ticket.secret.encode(), associated_data=ticket.key.encode())
        return cls(**json.loads(data))


class Sessions:
    """Sessions as the proxy uses them: sealed in the store, decrypted in the local cache.

    The store holds ``SessionRecord``s whose payload only the cookie's secret opens;
    the cache holds (session, version) pairs keyed by a hash of the whole cookie.
    ``last_seen_at`` is written at most once a minute, not once per request.
    """

    TOUCH_INTERVAL = 60

    def __init__(
        self,
        store: SessionStore,
        box: SecretBox,
        cache: SessionCache[tuple[Session, int]],
        idle_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.store = store
        self._box = box
        self._cache = cache
        self._idle_timeout = idle_timeout
        self._clock = clock
        self._touch_paused_until = 0.0  # after a failed touch: do not retry on every request
        self._retries: set[asyncio.Task[None]] = set()

    async def load(self, ticket: SessionTicket, now: int) -> tuple[Session, int] | None:
        """The live session for ``ticket`` and its store version; None when absent,
        expired, idle or not ours. Raises ``StoreUnavailable`` when the store cannot
        answer a cache miss.
        """
        cache_key = SessionCache.key_for(ticket.encode())
        found = await self._cache.get_or_load(cache_key, lambda: self.read(ticket, now))
        if found is None:
            return None
        session, version = found
        if now >= session.expires_at:
            self._cache.evict(cache_key)
            return None
        if now - session.last_seen_at >= self._idle_timeout:
            await self.end(ticket)
            return None
        if now - session.last_seen_at >= self.TOUCH_INTERVAL and self._clock() >= self._touch_paused_until:
            generation = self._cache.generation(cache_key)
            try:
                await self.store.touch(ticket.key, now)
            except VersionConflict:  # gone: signed out on another replica
                self._cache.evict(cache_key)
                return None
            except StoreUnavailable:
                # Bookkeeping only: never fail a request over it, and do not retry it on
                # every request while the store is down.
                self._touch_paused_until = self._clock() + self.TOUCH_INTERVAL
                return session, version
            session = replace(session, last_seen_at=now)
            self._cache.put(cache_key, (session, version), generation)
        return session, version

    def generation(self, ticket: SessionTicket) -> int:
        return self._cache.generation(SessionCache.key_for(ticket.encode()))

    async def read(self, ticket: SessionTicket, now: int) -> tuple[Session, int] | None:
        """Straight from the store, past the cache."""
        record = await self.store.get(ticket.key, now)
        if record is None:
            return None
        try:
            session = Session.unseal(self._box, ticket, record.payload)
        except (Unsealable, ValueError, TypeError):
            return None  # a wrong secret is no session; the item stays (it may be someone's)
        session.last_seen_at = record.last_seen_at
        return session, record.version

    def remember(self, ticket: SessionTicket, session: Session, version: int, generation: int) -> None:
        """Put what another replica wrote into this process's cache (unless signed out since)."""
        self._cache.put(SessionCache.key_for(ticket.encode()), (session, version), generation)

    async def save_refreshed(self, ticket: SessionTicket, session: Session, version: int, generation: int) -> None:
        """Write refreshed tokens, conditional on ``version`` (only token writes change it).

        The cache gets them first (unless a sign-out happened since ``generation``), so a
        rotated refresh token is never lost in this process; a failed write is retried in
        the background until it lands, the session ends, or someone else wrote tokens.
        """
        cache_key = SessionCache.key_for(ticket.encode())
        self._cache.put(cache_key, (session, version), generation)
        payload = session.seal(self._box, ticket)
        try:
            record = await self.store.update(ticket.key, version, payload)
        except VersionConflict:
            self._cache.evict(cache_key)  # ended, or another writer won: read the store next time
            return
        except StoreUnavailable:
            task = asyncio.create_task(self._retry_write(ticket, session, version, payload, generation))
            self._retries.add(task)
            task.add_done_callback(self._retries.discard)
            raise
        self._cache.put(cache_key, (session, record.version), generation)

    async def _retry_write(
        self, ticket: SessionTicket, session: Session, version: int, payload: bytes, generation: int
    ) -> None:
        cache_key = SessionCache.key_for(ticket.encode())
        for delay in (1, 2, 4, 8, 16, 30, 60):
            await asyncio.sleep(delay)
            if self._cache.generation(cache_key) != generation:
                return  # signed out here meanwhile
            try:
                record = await self.store.update(ticket.key, version, payload)
            except VersionConflict:
                self._cache.evict(cache_key)
                return
            except StoreUnavailable:
                continue
            self._cache.put(cache_key, (session, record.version), generation)
            return

    async def create(self, ticket: SessionTicket, session: Session) -> None:
        await self.store.create(
            SessionRecord(
                key=ticket.key,
                sub=session.sub,
                payload=session.seal(self._box, ticket),
                expires_at=session.expires_at,
                version=1,
                created_at=session.created_at,
                last_seen_at=session.last_seen_at,
            )
        )
        self._cache.put(SessionCache.key_for(ticket.encode()), (session, 1))

    async def end(self, ticket: SessionTicket) -> None:
        """Sign-out: gone from this replica's cache at once, and from the store."""
        self._cache.evict(SessionCache.key_for(ticket.encode()))
        await self.store.delete(ticket.key)
