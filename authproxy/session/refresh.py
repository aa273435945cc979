"""Refreshing a session's tokens exactly once, in one process and across replicas.

- When: the access token expires within ``refresh_before_expiry``, clamped to half
  its lifetime so short-lived tokens are not refreshed on every request (``due``).
  The ID token counts too on routes that inject it, but only while refreshes renew it.
- In one process: one refresh per session at a time; other requests await it.
- Across replicas: a fenced lease. The taker names itself (a random owner token) in a
  conditional write (no lease in place or it lapsed, version unchanged). A write cannot
  stop two replicas from redeeming one refresh token at the provider; only the holder's
  own discipline can, so the holder calls the provider only while the lease left
  (counted on its monotonic clock from *before* the acquire was sent) covers the
  provider's timeout, the store's write budget and the allowed clock skew between
  replicas (``LeasePlan``). The token write is conditional on the version and ends the
  lease; renew and release are conditional on owner and version.
- Losers write nothing: the failed acquire returns the item (newer tokens, or the
  holder's deadline), which is cached and remembered; later requests re-read at most
  once a second until the holder's deadline, then may try again.
- ``invalid_grant``: the session ends. Any other failure (the provider down, slow or
  refusing for another reason) backs off per session: the holder keeps its lease, moved
  to now plus a jittered, capped backoff that doubles with each failure in a row and
  marked as a back-off (conditional on still owning it), so no replica asks the provider
  again before then. Meanwhile the current access token is served while valid, else the
  caller answers 503 at once.
- A new ID token from a refresh (OIDC Core 12.2) is checked against the cached keys
  inside the lease; when that cannot decide (no keys, a new key id, the provider's keys
  unreachable) the tokens are saved anyway and the ID token waits, unused, to be
  verified after the write. A definite failure (bad signature, another issuer, audience
  or subject) ends the session and revokes the new refresh token.
"""

from __future__ import annotations

import asyncio
import functools
import math
import random
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from authproxy import metrics, tracing
from authproxy.errors import RefreshUnavailable, SessionEnded
from authproxy.logs import log
from authproxy.oidc.client import IdentityProviderClient, IdpError, IdpRejected
from authproxy.oidc.verify import TokenInvalid, UnknownSigningKey
from authproxy.session.cookies import SessionTicket
from authproxy.singleflight import SingleFlight
from authproxy.session.store import Session, Sessions
from authproxy.store.base import LeaseResult, StoreError, VersionConflict

IDP_TIMEOUT = 10.0  # the provider client's own total timeout (oidc/client.py)
MAX_CLOCK_SKEW = 5.0  # seconds replicas' wall clocks may differ by (the lease is compared on the taker's clock)
LOSER_WAIT = 5.0  # how long a replica that lost the lease waits for the winner's tokens (expired token only)
LOSER_RECHECK = 1.0  # a loser re-reads the item at most this often while the holder's lease runs
VERIFY_RETRY = 10.0  # seconds between attempts to verify a refreshed ID token that could not be verified
_REMEMBERED = 10_000  # holders' deadlines kept (bounded like the cache)
BACKOFF_BASE = 1.0  # seconds after the first failed refresh of a session; doubled per failure in a row
BACKOFF_CAP = 30.0
_BACKOFF = "backoff:"  # lease owner prefix: "backoff:<failures in a row>:<owner>"
# Verification failures that say nothing about the token itself: keys not loaded yet or a
# new key id within the refetch interval, or clocks apart. Anything else is definite.
_UNDECIDED = frozenset({"unknown_key", "expired", "issued_in_the_future", "not_yet_valid"})


@dataclass(frozen=True, slots=True)
class LeasePlan:
    """How long a refresh lease lasts and how much of it a holder needs left.

    ``needed``: the provider call, the token write and the skew a taker's clock may be
    ahead of ours. The acquire itself counts against the lease (our deadline starts
    before it is sent), so the bounded worst case is acquire + needed, and the lease
    lasts twice that: a holder that sees ``needed`` left always finishes before any
    replica whose clock is within the skew can see the lease lapse.
    """

    idp_timeout: float
    write_budget: float
    max_clock_skew: float

    @property
    def needed(self) -> float:
        return self.idp_timeout + self.write_budget + self.max_clock_skew

    @property
    def seconds(self) -> int:
        return math.ceil(2 * (self.write_budget + self.needed))


def backoff_seconds(failures: int, jitter: float) -> float:
    """How long every replica leaves a session's refresh alone after ``failures`` failed
    refreshes in a row; ``jitter`` in [0, 1) spreads sessions that failed together."""
    return min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(failures - 1, 16)) * (0.5 + jitter / 2)


def backoff_failures(owner: str) -> int:
    """Failures in a row recorded in a lease owner (0: not a back-off)."""
    if not owner.startswith(_BACKOFF):
        return 0
    count = owner[len(_BACKOFF):].split(":", 1)[0]
    return int(count) if count.isdigit() else 0


class IdTokenVerifier(Protocol):
    def __call__(self, id_token: str, now: int, fetch: bool = True) -> Awaitable[dict[str, Any]]: ...


def due(session: Session, now: int, before_expiry: float, id_token: bool = False) -> bool:
    """Whether tokens should be refreshed before this request is forwarded: the access
    token, and the ID token too when the route injects it and refreshes renew it (OIDC
    Core 12.2 lets a provider send none; its old ``exp`` would make every request due)."""
    return now >= due_at(session, before_expiry, id_token)


def due_at(session: Session, before_expiry: float, id_token: bool = False) -> float:
    """The first instant at which ``due`` says yes (infinity: never, without a refresh token)."""
    if not session.refresh_token:
        return math.inf
    at = _margin_start(session.access_expires_at, session.access_issued_at, before_expiry)
    if id_token and session.id_token_renews and isinstance(session.claims.get("exp"), (int, float)):
        issued = session.claims.get("iat")
        at = min(at, _margin_start(int(session.claims["exp"]), int(issued) if isinstance(issued, (int, float)) else None,
                                   before_expiry))
    return at


def _margin_start(expires: int | None, issued: int | None, before_expiry: float) -> float:
    """Where a token's refresh margin begins: ``before_expiry`` before its expiry, or half
    the token's lifetime when that is shorter (infinity: a token that does not expire)."""
    if expires is None:
        return math.inf
    lifetime = expires - (issued or expires)
    margin = min(before_expiry, lifetime / 2) if lifetime > 0 else before_expiry
    return expires - margin


def definite(exc: Exception) -> bool:
    """Whether a verification failure condemns the token (not merely leaves it unchecked)."""
    if isinstance(exc, (IdpError, UnknownSigningKey)):
        return False
    return isinstance(exc, TokenInvalid) and exc.reason not in _UNDECIDED


class _Definite(Exception):
    def __init__(self, reason: str):
        self.reason = reason


@dataclass(slots=True)
class _Holder:
    """Another replica's lease as a loser saw it."""

    version: int
    deadline: float  # our monotonic clock
    recheck_at: float
    backoff: bool = False  # nobody is refreshing: a failed refresh's back-off runs until ``deadline``


class Refresher:
    def __init__(
        self,
        sessions: Sessions,
        client: Callable[[], IdentityProviderClient | None],
        before_expiry: float,
        clock: Callable[[], float] = time.time,
        verify_id_token: IdTokenVerifier | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        idp_timeout: float = IDP_TIMEOUT,
        max_clock_skew: float = MAX_CLOCK_SKEW,
        jitter: Callable[[], float] = random.random,
    ):
        self._sessions = sessions
        self._verify_id_token = verify_id_token
        self._client = client
        self._before_expiry = before_expiry
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._jitter = jitter
        self.plan = LeasePlan(idp_timeout, getattr(sessions.store, "write_budget", 0.0), max_clock_skew)
        # One refresh per session at a time, in a task of its own: a request that leaves
        # (a timeout, shutdown) neither fails the others nor drops tokens already redeemed.
        self._inflight: SingleFlight[str, Session] = SingleFlight()
        self._holders: OrderedDict[str, _Holder] = OrderedDict()
        self._verify_after: dict[str, float] = {}
        self._unsure: OrderedDict[str, tuple[int, str]] = OrderedDict()  # key -> (version, owner): acquire unanswered
        sessions.revoke = self._revoke

    async def fresh(
        self, ticket: SessionTicket, session: Session, version: int, request_id: str = "", id_token: bool = False
    ) -> Session:
        """``session`` with tokens fresh enough to forward; refreshes when due."""
        refresh = due(session, int(self._clock()), self._before_expiry, id_token)
        verify = self._verify_due(ticket, session)
        if not refresh and not verify:
            return session
        work = self._refresh if refresh else self._verify_later
        call = functools.partial(work, ticket, session, version, request_id)
        if refresh and tracing.active is not None:  # the refresh's span, in the refresh's own task
            call = functools.partial(tracing.active.refresh, call, session)
        return await self._inflight.run(ticket.key, call)

    def ready(self, session: Session, id_token: bool = False) -> bool:
        """Whether ``session`` can be forwarded as it is, with no refresh and no ID token
        to verify: ``fresh`` would return it unchanged (checked without an await)."""
        return (session.unverified_id_token is None or self._verify_id_token is None) and not due(
            session, int(self._clock()), self._before_expiry, id_token)

    def ready_until(self, session: Session, id_token: bool = False) -> float:
        """Until when ``ready`` says yes for ``session`` (it can only turn to no as time
        passes): minus infinity when an ID token waits to be verified."""
        if session.unverified_id_token is not None and self._verify_id_token is not None:
            return -math.inf
        return due_at(session, self._before_expiry, id_token)

    def _verify_due(self, ticket: SessionTicket, session: Session) -> bool:
        return (
            session.unverified_id_token is not None
            and self._verify_id_token is not None
            and self._monotonic() >= self._verify_after.get(ticket.key, 0.0)
        )

    # --- the refresh ---------------------------------------------------------------

    async def _refresh(self, ticket: SessionTicket, session: Session, version: int, request_id: str) -> Session:
        now = int(self._clock())
        client = self._client()
        if client is None:
            return self._keep_or_fail(session, now, "identity provider not loaded", request_id)
        holder = self._holder(ticket.key, version)
        if holder is not None:
            return await self._as_loser(ticket, session, version, holder, request_id)
        if self._sessions.has_pending(ticket):
            # These tokens are not in the store yet: save them before redeeming their
            # refresh token, or the older write could land later and drop the newer tokens.
            try:
                saved = await self._sessions.save_pending(ticket)
            except VersionConflict as exc:
                return await self._overtaken(ticket, session, exc, request_id)
            except StoreError:
                return self._keep_or_fail(session, now, "earlier tokens not saved yet", request_id)
            if saved is not None:
                version = saved
        if self._sessions.pending_full(ticket):
            # Never drop an unsaved token to make room: take no new lease instead.
            return self._keep_or_fail(session, now, "too many unsaved refreshes", request_id)
        generation = self._sessions.generation(ticket)
        owner = self._owner(ticket.key, version)
        lease = await self._lease(ticket, version, owner)
        if lease is None:
            return self._keep_or_fail(session, now, "store unavailable", request_id)
        if not lease.acquired:
            metrics.TOKEN_REFRESH.labels("lease_lost").inc()
            return await self._lost(ticket, session, version, generation, lease, request_id)
        failures = backoff_failures(lease.previous_owner)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.plan.idp_timeout):
                tokens = await client.refresh(session.refresh_token or "")
        except IdpRejected as exc:
            metrics.TOKEN_REFRESH.labels("invalid_grant" if exc.error == "invalid_grant" else "rejected").inc()
            if exc.error == "invalid_grant":
                log().info(
                    "refresh_rejected",
                    extra={"fields": {"request_id": request_id, "sub": session.sub, "error": exc.error}},
                )
                await self._sessions.end(ticket)  # the provider already killed its tokens
                raise SessionEnded("the provider refused the refresh token") from None
            await self._back_off(ticket, session.sub, version, owner, failures + 1, request_id)
            return self._keep_or_fail(session, now, f"refresh rejected: {exc.error}", request_id)
        except (IdpError, TimeoutError):
            metrics.TOKEN_REFRESH.labels("transient_error").inc()
            await self._back_off(ticket, session.sub, version, owner, failures + 1, request_id)
            return self._keep_or_fail(session, now, "identity provider unavailable", request_id)
        finally:
            metrics.TOKEN_REFRESH_DURATION.observe(time.perf_counter() - started)
        claims = None
        if tokens.id_token and self._verify_id_token is not None:
            # Cached keys only: a JWKS fetch is not in the lease's budget (it comes after the write).
            try:
                claims = await self._checked(tokens.id_token, session, now, fetch=False)
            except _Definite as exc:
                metrics.TOKEN_REFRESH.labels("token_invalid").inc()
                await self._condemn(ticket, session, tokens.refresh_token, exc.reason, request_id)
            except (TokenInvalid, IdpError):
                claims = None  # undecided: keep the tokens, verify the ID token after the write
        metrics.TOKEN_REFRESH.labels("success").inc()
        refreshed = session.refreshed(tokens, now, claims)
        try:
            await self._sessions.save_refreshed(ticket, refreshed, version, generation)
        except VersionConflict as exc:
            return await self._overtaken(ticket, session, exc, request_id)
        except StoreError as exc:
            # Pinned in this process and retried until it lands: the rotated refresh token
            # is not lost (reusing the old one may revoke the whole grant).
            log().warning(
                "refresh_write_failed",
                extra={"fields": {"request_id": request_id, "sub": session.sub, "error": type(exc).__name__}},
            )
            return refreshed
        log().info("refresh_success", extra={"fields": {"request_id": request_id, "sub": session.sub}})
        if refreshed.unverified_id_token is not None:
            return await self._verify_later(ticket, refreshed, version + 1, request_id)
        return refreshed

    async def _lease(self, ticket: SessionTicket, version: int, owner: str) -> LeaseResult | None:
        """A ``LeaseResult``: acquired (with the plan's ``needed`` left) or lost; None: the
        store failed or the lease left is too short."""
        started = self._monotonic()  # before the request: the acquire's own time counts against the lease
        seconds = self.plan.seconds
        until = int(self._clock()) + seconds  # whole seconds, truncated: up to 1 s less than ``seconds``
        try:
            result = await self._sessions.store.acquire_refresh_lease(ticket.key, version, until - seconds, until, owner)
        except StoreError:
            # It may have landed all the same (an answer lost, or retries cut short by the
            # circuit breaker): the next try names the same owner, so it can claim it back
            # instead of leaving every replica to wait for the lease to lapse.
            self._unsure[ticket.key] = (version, owner)
            self._unsure.move_to_end(ticket.key)
            while len(self._unsure) > _REMEMBERED:
                self._unsure.popitem(last=False)
            return None
        current = result.current
        ours = result.acquired or (current is not None and current.version == version and current.lease_owner == owner)
        if not ours:
            return result
        self._unsure.pop(ticket.key, None)
        if result.acquired and started + seconds - 1 - self._monotonic() >= self.plan.needed:
            return result
        # The acquire took most of the lease (a slow store), or the lease is an earlier
        # acquire of ours that landed unseen: extend it once, on the same terms.
        started = self._monotonic()
        until = int(self._clock()) + seconds
        try:
            renewed = await self._sessions.store.renew_refresh_lease(ticket.key, version, owner, until)
        except StoreError:
            renewed = False
        if renewed and started + seconds - 1 - self._monotonic() >= self.plan.needed:
            return result if result.acquired else LeaseResult(True)
        log().warning("refresh_lease_too_short", extra={"fields": {"needed_s": self.plan.needed}})
        await self._release(ticket, version, owner)
        return None

    async def _checked(self, id_token: str, session: Session, now: int, fetch: bool) -> dict[str, Any]:
        """The new ID token's claims, or ``_Definite`` when it must not be trusted."""
        assert self._verify_id_token is not None
        try:
            claims = await self._verify_id_token(id_token, now, fetch=fetch)
        except (TokenInvalid, IdpError) as exc:
            if definite(exc):
                raise _Definite(getattr(exc, "reason", type(exc).__name__)) from None
            raise
        # OIDC Core 12.2: the sub of a refreshed ID token is the one of the original authentication.
        if claims.get("sub") != session.sub:
            raise _Definite("sub_mismatch")
        return claims

    async def _condemn(
        self, ticket: SessionTicket, session: Session, new_refresh_token: str | None, reason: str, request_id: str
    ) -> None:
        """The provider answered with an ID token we must not trust: end the session and
        revoke the refresh token it just issued (RFC 7009)."""
        log().warning("refresh_id_token_rejected",
                      extra={"fields": {"request_id": request_id, "sub": session.sub, "reason": reason}})
        for token in {new_refresh_token, *await self._end_quietly(ticket)} - {None}:
            await self._revoke(token)  # type: ignore[arg-type]
        raise SessionEnded(f"the refreshed ID token is not acceptable: {reason}")

    async def _end_quietly(self, ticket: SessionTicket) -> list[str]:
        try:
            return await self._sessions.end(ticket)
        except StoreError:
            return []

    async def _verify_later(self, ticket: SessionTicket, session: Session, version: int, request_id: str) -> Session:
        """Verify an ID token that a refresh brought but that could not be verified then;
        once verified it replaces the old one, written under a lease like any token write."""
        token = session.unverified_id_token
        if token is None or self._verify_id_token is None:
            return session
        now = int(self._clock())
        try:
            claims = await self._checked(token, session, now, fetch=True)
        except _Definite as exc:
            metrics.TOKEN_REFRESH.labels("token_invalid").inc()
            await self._condemn(ticket, session, session.refresh_token, exc.reason, request_id)
        except (TokenInvalid, IdpError):
            self._verify_after[ticket.key] = self._monotonic() + VERIFY_RETRY
            if len(self._verify_after) > _REMEMBERED:
                self._verify_after.pop(next(iter(self._verify_after)))
            return session
        self._verify_after.pop(ticket.key, None)
        verified = session.with_verified_id_token(token, claims)
        generation = self._sessions.generation(ticket)
        owner = self._owner(ticket.key, version)
        lease = await self._lease(ticket, version, owner)
        if lease is None or not lease.acquired:
            return verified  # someone else holds it (or the store is down): theirs or a later write saves it
        try:
            await self._sessions.save_refreshed(ticket, verified, version, generation)
        except VersionConflict as exc:
            return await self._overtaken(ticket, session, exc, request_id)
        except StoreError:
            pass  # pinned and retried
        return verified

    async def _overtaken(self, ticket: SessionTicket, session: Session, exc: VersionConflict, request_id: str) -> Session:
        if exc.current is None:
            raise SessionEnded("the session ended while it was refreshed") from None
        found = self._sessions.opened(ticket, exc.current)
        if found is None:
            raise SessionEnded("the session changed hands") from None
        return self._sessions.remember(ticket, *found, self._sessions.generation(ticket))[0]

    async def _back_off(
        self, ticket: SessionTicket, sub: str, version: int, owner: str, failures: int, request_id: str
    ) -> None:
        """After a failed refresh: keep the lease, until now plus the backoff, marked as a
        back-off, if it is still ours; every replica then leaves the provider alone until it
        lapses (refresh grants count against the provider's quota). This process remembers
        it too, so its own requests do not even ask the store."""
        delay = backoff_seconds(failures, self._jitter())
        marker = f"{_BACKOFF}{failures}:{owner}"
        try:
            kept = await self._sessions.store.renew_refresh_lease(
                ticket.key, version, owner, int(self._clock()) + math.ceil(delay), marker)
        except StoreError:
            kept = False
        log().warning("refresh_backoff", extra={"fields": {
            "request_id": request_id, "sub": sub, "failures": failures, "seconds": math.ceil(delay), "kept": kept}})
        if not kept:
            await self._release(ticket, version, owner)  # not ours any more, or the store failed: best effort
        now = self._monotonic()
        self._remember_holder(ticket.key, _Holder(version, now + math.ceil(delay), now, backoff=True))

    def _owner(self, key: str, version: int) -> str:
        """The owner token for a new lease: the one of an earlier acquire at this version
        whose answer never came (it may hold the lease), else a fresh random one."""
        unsure = self._unsure.get(key)
        if unsure is not None and unsure[0] == version:
            return unsure[1]
        return secrets.token_urlsafe(12)

    def _remember_holder(self, key: str, holder: _Holder) -> None:
        self._holders[key] = holder
        self._holders.move_to_end(key)
        while len(self._holders) > _REMEMBERED:
            self._holders.popitem(last=False)

    async def _release(self, ticket: SessionTicket, version: int, owner: str) -> None:
        """Give our lease back (too little of it left, or a back-off that could not be
        recorded), if it is still ours."""
        try:
            await self._sessions.store.release_refresh_lease(ticket.key, version, owner)
        except StoreError:
            pass  # it lapses by itself

    async def _revoke(self, refresh_token: str) -> None:
        client = self._client()
        if client is None:
            return
        try:
            await client.revoke(refresh_token)  # RFC 7009 2.1
        except IdpError as exc:
            log().warning("revocation_failed", extra={"fields": {"error": str(exc)}})

    # --- replicas that lost the lease -------------------------------------------------

    def _holder(self, key: str, version: int) -> _Holder | None:
        holder = self._holders.get(key)
        if holder is None:
            return None
        if holder.version != version or self._monotonic() >= holder.deadline:
            del self._holders[key]
            return None
        return holder

    async def _lost(
        self, ticket: SessionTicket, session: Session, version: int, generation: int, lease: Any, request_id: str
    ) -> Session:
        """Someone else holds the lease (or wrote newer tokens): use what the failed acquire
        returned, remember the holder's deadline, write nothing."""
        current = lease.current
        if current is None:
            self._sessions.forget(ticket)
            raise SessionEnded("the session ended on another replica")
        if current.version != version:  # newer tokens are in the store already
            found = self._sessions.opened(ticket, current)
            if found is None:
                raise SessionEnded("the session changed hands")
            return self._sessions.remember(ticket, *found, generation)[0]
        left = min(max(0.0, current.refresh_lease_until + 1 - self._clock()), float(self.plan.seconds))
        now = self._monotonic()
        holder = _Holder(version, now + left, now + LOSER_RECHECK, backoff=current.lease_owner.startswith(_BACKOFF))
        self._remember_holder(ticket.key, holder)
        return await self._as_loser(ticket, session, version, holder, request_id, just_read=True)

    async def _as_loser(
        self, ticket: SessionTicket, session: Session, version: int, holder: _Holder, request_id: str,
        just_read: bool = False,
    ) -> Session:
        now = int(self._clock())
        if holder.backoff:  # nobody is refreshing: no new tokens to wait for
            if session.access_expires_at is not None and now < session.access_expires_at:
                return session
            raise RefreshUnavailable("the last refresh failed; the next try waits for its backoff")
        if session.access_expires_at is not None and now < session.access_expires_at:
            if not just_read and self._monotonic() >= holder.recheck_at:
                holder.recheck_at = self._monotonic() + LOSER_RECHECK
                newer = await self._reread(ticket, version)
                if newer is not None:
                    return newer
            return session  # another replica is refreshing; this token still works meanwhile
        return await self._wait_for_winner(ticket, session, version, holder, request_id)

    async def _reread(self, ticket: SessionTicket, version: int) -> Session | None:
        """The winner's tokens, once written (a read, never a write); None: not yet."""
        generation = self._sessions.generation(ticket)
        try:
            found = await self._sessions.read(ticket, int(self._clock()))
        except StoreError:
            return None
        if found is None:
            raise SessionEnded("the session ended while another replica refreshed it")
        if found[1] == version:  # only a token write changes the version
            return None
        self._holders.pop(ticket.key, None)
        return self._sessions.remember(ticket, *found, generation)[0]

    async def _wait_for_winner(
        self, ticket: SessionTicket, session: Session, version: int, holder: _Holder, request_id: str
    ) -> Session:
        deadline = min(self._monotonic() + LOSER_WAIT, holder.deadline)
        while self._monotonic() < deadline:
            await self._sleep(0.1)
            newer = await self._reread(ticket, version)
            if newer is not None:
                return newer
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
