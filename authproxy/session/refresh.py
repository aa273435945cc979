"""Refreshing a session's tokens exactly once, in one process and across replicas.

- When: the access token expires within ``refresh_before_expiry``, clamped to half
  its lifetime so short-lived tokens are not refreshed on every request (``due``).
- In one process: one refresh per session at a time; other requests await it.
- Across replicas: a lease taken with a conditional write (lease free and version
  unchanged). The winner refreshes and writes version + 1; losers wait (bounded)
  and re-read. Peers with no such lease burn rotated refresh tokens in parallel and
  sign users out.
- ``invalid_grant``: the session ends. A transient IdP failure keeps serving while
  the current access token is valid, else the caller answers 503.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from authproxy import metrics
from authproxy.errors import RefreshUnavailable, SessionEnded
from authproxy.logs import log
from authproxy.oidc.client import IdentityProviderClient, IdpError, IdpRejected
from authproxy.oidc.verify import TokenInvalid
from authproxy.session.cookies import SessionTicket
from authproxy.session.store import Session, Sessions
from authproxy.store.base import StoreError

# Longer than the IdP call (10 s timeout) plus the store write (2 s timeout, 3 attempts):
# a slow winner must not outlive its lease and let a second replica reuse the token.
LEASE_SECONDS = 30
LOSER_WAIT = 5.0  # how long a replica that lost the lease waits for the winner's tokens


def due(session: Session, now: int, before_expiry: float, id_token: bool = False) -> bool:
    """Whether tokens should be refreshed before this request is forwarded: the access
    token, and the ID token too when the route injects it."""
    if not session.refresh_token:
        return False
    lifetimes = [(session.access_expires_at, session.access_issued_at)]
    if id_token and isinstance(session.claims.get("exp"), (int, float)):
        issued = session.claims.get("iat")
        lifetimes.append((int(session.claims["exp"]), int(issued) if isinstance(issued, (int, float)) else None))
    for expires, issued in lifetimes:
        if expires is None:
            continue
        lifetime = expires - (issued or expires)
        margin = min(before_expiry, lifetime / 2) if lifetime > 0 else before_expiry
        if now >= expires - margin:
            return True
    return False


class Refresher:
    def __init__(
        self,
        sessions: Sessions,
        client: Callable[[], IdentityProviderClient | None],
        before_expiry: float,
        clock: Callable[[], float] = time.time,
        verify_id_token: Callable[[str, int], Awaitable[dict[str, Any]]] | None = None,
    ):
        self._sessions = sessions
        self._verify_id_token = verify_id_token
        self._client = client
        self._before_expiry = before_expiry
        self._clock = clock
        self._inflight: dict[str, asyncio.Future[Session]] = {}

    async def fresh(
        self, ticket: SessionTicket, session: Session, version: int, request_id: str = "", id_token: bool = False
    ) -> Session:
        """``session`` with tokens fresh enough to forward; refreshes when due."""
        if not due(session, int(self._clock()), self._before_expiry, id_token):
            return session
        pending = self._inflight.get(ticket.key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Session] = asyncio.get_running_loop().create_future()
        self._inflight[ticket.key] = future
        try:
            result = await self._refresh(ticket, session, version, request_id)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: awaiting followers re-raise it
            raise
        finally:
            self._inflight.pop(ticket.key, None)
        future.set_result(result)
        return result

    async def _refresh(self, ticket: SessionTicket, session: Session, version: int, request_id: str) -> Session:
        now = int(self._clock())
        client = self._client()
        if client is None:
            return self._keep_or_fail(session, now, "identity provider not loaded", request_id)
        generation = self._sessions.generation(ticket)
        until = now + LEASE_SECONDS
        try:
            leased = await self._sessions.store.acquire_refresh_lease(ticket.key, version, now, until)
        except StoreError:
            return self._keep_or_fail(session, now, "store unavailable", request_id)
        if not leased:
            metrics.TOKEN_REFRESH.labels("lease_lost").inc()
            if session.access_expires_at is not None and now < session.access_expires_at:
                return session  # another replica is refreshing; this token still works meanwhile
            return await self._wait_for_winner(ticket, session, version, generation, request_id)
        started = time.perf_counter()
        try:
            tokens = await client.refresh(session.refresh_token or "")
        except IdpRejected as exc:
            metrics.TOKEN_REFRESH.labels("invalid_grant" if exc.error == "invalid_grant" else "rejected").inc()
            if exc.error == "invalid_grant":
                log().info(
                    "refresh_rejected",
                    extra={"fields": {"request_id": request_id, "sub": session.sub, "error": exc.error}},
                )
                await self._sessions.end(ticket)
                raise SessionEnded("the provider refused the refresh token") from None
            await self._release(ticket, until)
            return self._keep_or_fail(session, now, f"refresh rejected: {exc.error}", request_id)
        except IdpError:
            metrics.TOKEN_REFRESH.labels("transient_error").inc()
            await self._release(ticket, until)
            return self._keep_or_fail(session, now, "identity provider unavailable", request_id)
        finally:
            metrics.TOKEN_REFRESH_DURATION.observe(time.perf_counter() - started)
        claims = None
        if tokens.id_token and self._verify_id_token is not None:
            # A new ID token replaces the session's claims only once verified (OIDC Core 12.2).
            try:
                claims = await self._verify_id_token(tokens.id_token, now)
            except (TokenInvalid, IdpError) as exc:
                metrics.TOKEN_REFRESH.labels("token_invalid").inc()
                await self._release(ticket, until)
                return self._keep_or_fail(session, now, f"refreshed ID token not acceptable: {exc}", request_id)
        metrics.TOKEN_REFRESH.labels("success").inc()
        refreshed = session.refreshed(tokens, now, claims)
        try:
            await self._sessions.save_refreshed(ticket, refreshed, version, generation)
        except StoreError as exc:
            # The new tokens stay in this process's cache: a rotated refresh token must
            # not be lost (reusing the old one may revoke the whole grant).
            log().warning(
                "refresh_write_failed",
                extra={"fields": {"request_id": request_id, "sub": session.sub, "error": type(exc).__name__}},
            )
        else:
            log().info("refresh_success", extra={"fields": {"request_id": request_id, "sub": session.sub}})
        return refreshed

    async def _release(self, ticket: SessionTicket, until: int) -> None:
        """A failed refresh gives its lease back, so the next request can try at once."""
        try:
            await self._sessions.store.release_refresh_lease(ticket.key, until)
        except StoreError:
            pass  # it lapses by itself

    async def _wait_for_winner(
        self, ticket: SessionTicket, session: Session, version: int, generation: int, request_id: str
    ) -> Session:
        deadline = self._clock() + LOSER_WAIT
        while self._clock() < deadline:
            await asyncio.sleep(0.05)
            try:
                found = await self._sessions.read(ticket, int(self._clock()))
            except StoreError:
                continue
            if found is None:
                raise SessionEnded("the session ended while another replica refreshed it")
            if found[1] != version:  # only a token write changes the version
                self._sessions.remember(ticket, found[0], found[1], generation)
                return found[0]
        reason = "another replica's refresh did not finish in time"
        return self._keep_or_fail(session, int(self._clock()), reason, request_id)

    def _keep_or_fail(self, session: Session, now: int, reason: str, request_id: str) -> Session:
        if session.access_expires_at is not None and now < session.access_expires_at:
            log().warning(
                "refresh_deferred",
                extra={"fields": {"request_id": request_id, "sub": session.sub, "reason": reason}},
            )
            return session  # still valid: serve now, refresh on a later request
        raise RefreshUnavailable(reason)
