"""Sign-in for ``auth: login`` routes: the proxy's endpoints under ``proxy_prefix``
(start, callback, sign_out, userinfo, and backchannel_logout: web/backchannel.py) and the
session check on protected routes.

The rules come from OIDC Core 3.1 and RFC 6749/7636/9207; each step names its source.
Pure decisions live in oidc/ and session/; this module is the HTTP edge.
"""

from __future__ import annotations

import base64
import html
import json
import os
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web
from yarl import URL

from authproxy import metrics
from authproxy.config.schema import Config
from authproxy.errors import RETRY_AFTER
from authproxy.logs import log
from authproxy.oidc.client import IdentityProviderClient, IdpError, IdpRejected
from authproxy.oidc.endpoints import logout_url
from authproxy.oidc.flow import (
    TRANSACTION_LIFETIME,
    CallbackRefused,
    Transaction,
    authorization_url,
    check_callback,
    printable,
)
from authproxy.oidc.redirects import MAX_TARGET_LENGTH, SAFE_DEFAULT, RedirectPolicy
from authproxy.oidc.rules import id_token_rules
from authproxy.oidc.verify import KeyNotInJwks, TokenInvalid
from authproxy.policy.decide import Identity, session_identity
from authproxy.proxy.pages import error_response
from authproxy.session.cookies import (
    CookieMemo,
    TRANSACTION_SLOTS,
    TRANSACTION_VALUE_MAX,
    CookiePolicy,
    SessionTicket,
    choose_slot,
    request_cookies,
)
from authproxy.session.crypto import SecretBox, Unsealable
from authproxy.session.cache import SessionCache
from authproxy.errors import SessionEnded
from authproxy.session.refresh import Refresher
from authproxy.session.store import Session, Sessions
from authproxy.store.base import RecordTooLarge, SessionStore, StoreError
from authproxy.web.backchannel import BackChannelLogout
from authproxy.web.provider import ProviderLink

_USED_STATES_MAX = 100_000
_TRANSACTION_SALT = 16  # bytes of random salt per sign-in transaction (HKDF salt, RFC 5869 3.1)


# Sessions ``known_identity`` answers for: the ones in use now. Each holds its Cookie header
# (at most CookieMemo.MAX_HEADER characters), an Identity and the cache entry it came from
# (the Session with its tokens). One whose cache entry is gone or replaced is dropped when
# its Cookie header comes again; one that never comes again leaves as 1,024 newer ones come.
KNOWN_LIMIT = 1024


class _Known:
    __slots__ = ("cache_key", "entry", "identity", "stale_at", "until", "id_token_until")

    def __init__(self, cache_key: str, entry: object, identity: Identity, stale_at: float, until: float,
                 id_token_until: float):
        self.cache_key = cache_key
        self.entry = entry  # the session cache's entry: replaced or dropped by any change to the session
        self.identity = identity
        self.stale_at = stale_at  # the cache's TTL, on its clock
        self.until = until  # the wall clock's first second at which a route without the ID token must ask again
        self.id_token_until = id_token_until  # the same for routes that inject the ID token


class SignIn:
    """Everything sign-in needs, built once at start-up from the configuration."""

    def __init__(self, config: Config, provider: ProviderLink, store: SessionStore,
                 clock: Callable[[], float] = time.time):
        assert config.oidc is not None and config.session is not None and config.public_url is not None
        self.oidc = config.oidc
        self.settings = config.session
        self.clock = clock  # seconds since the epoch: the one clock of the web edge
        self.public_url: URL = config.public_url
        self.origin = str(self.public_url).rstrip("/")
        self.prefix = config.proxy_prefix
        self.callback_url = f"{self.origin}{self.prefix}/callback"
        self.cookies = CookiePolicy.build(
            https=self.public_url.scheme == "https",
            cookie_name=self.settings.cookie_name,
            cookie_domain=self.settings.cookie_domain,
        )
        self.cookie_memo = CookieMemo(self.cookies, SessionCache.key_for)  # the Cookie header, read once per header
        # Cookie header -> a session ``session_for_route`` found cached with nothing to do, its
        # identity, and until when that stays so (``known_identity``). Bounded, oldest out.
        self._known: dict[str, _Known] = {}
        secrets = [secret.get_secret_value() for secret in self.settings.secrets]
        cache: SessionCache[tuple[Session, int]] = SessionCache(
            config.store.cache.max_entries, config.store.cache.ttl, max_bytes=config.store.cache.max_bytes,
            weigh=lambda entry: entry[0].footprint())
        # sid/sub hashes in the namespace of the provider's configured issuer, whichever of its
        # issuers signed the ID token (oidc/logout.py), with back-channel logout on or off
        self.sessions = Sessions(store, SecretBox(secrets, b"authproxy session"), cache, self.settings.idle_timeout,
                                 provider=self.oidc.issuer)
        self.refresher = Refresher(
            self.sessions, lambda: self.client, self.settings.refresh_before_expiry, verify_id_token=self._verify_refreshed,
            clock=clock,
        )
        # A refreshed ID token: any issuer of the provider (a Cognito pool has several), no nonce.
        self.refreshed_id_token_rules = id_token_rules(self.oidc)
        self.transactions = SecretBox(secrets, b"authproxy sign-in transaction")
        self.routes_changed(config)
        self.provider = provider
        self._used_states: dict[str, int] = {}
        self.backchannel = (BackChannelLogout(self.oidc, self.sessions, lambda: self.client, clock)
                            if self.settings.backchannel_logout else None)

    def routes_changed(self, config: Config) -> None:
        """Where a sign-in may return to: our host and the routes' hosts (after a reload too)."""
        route_hosts = {route.match.host for route in config.routes if route.match.host}
        self.redirects = RedirectPolicy([self.public_url.host or "", *route_hosts], self.oidc.allowed_redirect_hosts)

    @property
    def client(self) -> IdentityProviderClient | None:
        return self.provider.client

    # --- the session on protected routes --------------------------------------------

    async def current(self, request: web.BaseRequest, now: int) -> tuple[SessionTicket, Session] | None:
        """The request's session; raises ``StoreUnavailable`` when the store cannot answer."""
        ticket = SessionTicket.parse(request_cookies(request.headers.get("Cookie")).get(self.cookies.session_name))
        if ticket is None:
            return None
        found = await self.sessions.load(ticket, now)
        return (ticket, found[0]) if found is not None else None

    async def _verify_refreshed(self, id_token: str, now: int, fetch: bool = True) -> dict[str, Any]:
        """An ID token from a refresh: same issuer and audience, no nonce (OIDC Core 12.2);
        the refresher compares ``sub``. ``fetch`` False: the cached keys only (inside a lease)."""
        assert self.client is not None
        rules = self.refreshed_id_token_rules
        if not fetch:
            return self.client.verify_cached(id_token, rules, now)
        try:
            return await self.client.verify(id_token, rules, now)
        except KeyNotInJwks:
            # Not a key the provider is rotating in: the JWKS was refetched. A definite
            # failure, so the refresher ends the session instead of retrying forever.
            raise TokenInvalid("key_not_in_jwks", "the signing key is not in the refetched JWKS") from None

    async def session_for_route(
        self, request: web.BaseRequest, now: int, request_id: str = "", id_token: bool = False
    ) -> Session | None:
        """The session a protected route forwards with, its tokens refreshed when due.

        None: no session (or the provider ended it: invalid_grant). Raises
        ``StoreUnavailable`` or ``RefreshUnavailable``, which answer 503.
        """
        found = self.cookie_memo.ticket(request.headers.get("Cookie"))
        if found is None:
            return None
        ticket, cache_key = found
        session = self.sessions.cached(ticket, now, cache_key)
        if session is not None and self.refresher.ready(session, id_token):
            self._know(request.headers.get("Cookie"), cache_key, session)
            return session  # a cache hit with nothing to do: no await
        found = await self.sessions.load(ticket, now)
        if found is None:
            return None
        try:
            return await self.refresher.fresh(ticket, *found, request_id, id_token)
        except SessionEnded:
            return None

    def known_identity(self, cookie: str | None, id_token: bool) -> Identity | None:
        """``session_for_route``'s answer, as an identity, without an await or any work: for
        a Cookie header whose session it found cached with nothing to do, while that cache
        entry is still the one held, fresh, and the session needs no touch, no refresh and
        no ID token verified. None: ask ``session_for_route``. Counted as a cache hit. The
        signed-in request's common case: a dict lookup and a few comparisons (issue 15)."""
        known = self._known.get(cookie) if cookie is not None else None
        if known is None:
            return None
        if int(self.clock()) >= (known.id_token_until if id_token else known.until):
            return None  # a touch or a refresh is due: the usual way does it, and its new entry replaces this one
        if not self.sessions.still_cached(known.cache_key, known.entry, known.stale_at):
            del self._known[cookie]  # type: ignore[arg-type]  # its entry is gone or replaced: hold no dead session
            return None
        return known.identity

    def _know(self, cookie: str | None, cache_key: str, session: Session) -> None:
        """Remember ``session`` for ``known_identity``, which ``cached`` and ``ready`` just passed."""
        if cookie is None or len(cookie) > CookieMemo.MAX_HEADER:  # longer ones take the usual way
            return
        found = self.sessions.cached_until(cache_key, session)
        if found is None:
            return
        entry, until, stale_at = found
        known = self._known.pop(cookie, None)
        if known is None or known.entry is not entry:
            known = _Known(cache_key, entry, session_identity(session), stale_at,
                           min(until, self.refresher.ready_until(session)),
                           min(until, self.refresher.ready_until(session, id_token=True)))
        self._known[cookie] = known
        if len(self._known) > KNOWN_LIMIT:
            del self._known[next(iter(self._known))]

    def start_location(self, host: str, scheme: str, path_qs: str) -> str:
        """Where a browser navigation without a session goes: ``/oauth2/start`` with ``rd``
        saying where it was going (a path on our own host, else the full URL)."""
        own_host = self.public_url.host or ""
        target = path_qs if host.split(":")[0].lower() == own_host.lower() else f"{scheme}://{host}{path_qs}"
        if len(target) > MAX_TARGET_LENGTH:  # too long to come back to (rd's bound): "/" already here
            target = SAFE_DEFAULT
        return f"{self.origin}{self.prefix}/start?" + urlencode({"rd": target})

    # --- the proxy's own endpoints ------------------------------------------------------

    async def handle(self, request: web.BaseRequest, endpoint: str, request_id: str) -> web.StreamResponse:
        if endpoint == "backchannel_logout" and self.backchannel is not None:
            # A server's call: JSON answers only, its own 503 while the provider is not loaded.
            return await self.backchannel.handle(request, request_id)
        if self.client is None:
            return error_response(503, "not_ready", "sign-in is not available yet", request_id,
                                  accept=request.headers.get("Accept"), retry_after=RETRY_AFTER)
        handler = {
            "start": self._start,
            "callback": self._callback,
            "sign_out": self._sign_out,
            "userinfo": self._userinfo,
        }.get(endpoint)
        if handler is None:
            return error_response(404, "not_found", "no such endpoint", request_id, accept=request.headers.get("Accept"))
        return await handler(request, request_id)

    async def _start(self, request: web.BaseRequest, request_id: str) -> web.StreamResponse:
        instant = self.clock()
        now = int(instant)
        target = self.redirects.safe_target(request.query.get("rd"))
        transaction = Transaction.start(target, now)
        sealed = self._seal_transaction(transaction, int(instant * 1_000_000) * 1000)
        if len(sealed) > TRANSACTION_VALUE_MAX:  # not with a valid rd; the cookies' bound holds whatever
            transaction = Transaction.start(SAFE_DEFAULT, now)
            sealed = self._seal_transaction(transaction, int(instant * 1_000_000) * 1000)
        pending, strays = self._pending_sign_ins(request)
        slot = choose_slot([at if t is not None and not t.expired(now) else None for at, t in pending])
        assert self.client is not None
        location = authorization_url(
            self.client.endpoints.authorization,
            client_id=self.oidc.client_id,
            redirect_uri=self.callback_url,
            scopes=self.oidc.scopes,
            transaction=transaction,
            extra=self.oidc.authorize_params,
        )
        response = web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})
        for name in strays:
            response.headers.add("Set-Cookie", self.cookies.clear_named(name))
        response.headers.add("Set-Cookie", self.cookies.set_transaction(slot, sealed, TRANSACTION_LIFETIME))
        return response

    def _seal_transaction(self, transaction: Transaction, started_ns: int = 0) -> str:
        """The cookie value: a key per transaction (a random salt in the cookie, like
        sessions' own secret), so unauthenticated /start calls never pile up random nonces
        under one key, which NIST SP 800-38D 8.3 bounds at 2**32 seals. Sealed with it,
        ``started_ns`` (to the microsecond: one browser's starts, one after another, are
        further apart than that, and a millisecond was not): which slot is the oldest."""
        salt = os.urandom(_TRANSACTION_SALT)
        data = started_ns.to_bytes(8, "big") + transaction.to_bytes()
        return _b64encode(salt + self.transactions.seal(data, context=salt))

    def _open_transaction(self, value: str) -> tuple[int, Transaction]:
        """(when it started, in ns; the transaction). Raises Unsealable or ValueError."""
        sealed = _b64decode(value)
        if len(sealed) <= _TRANSACTION_SALT:
            raise Unsealable("sealed value too short")
        data = self.transactions.open(sealed[_TRANSACTION_SALT:], context=sealed[:_TRANSACTION_SALT])
        return int.from_bytes(data[:8], "big"), Transaction.from_bytes(data[8:])

    def _pending_sign_ins(self, request: web.BaseRequest) -> tuple[list[tuple[int, Transaction | None]], list[str]]:
        """(when it started, the transaction) in each slot this request carries (None:
        free or unreadable), and the names of other transaction cookies (an earlier
        release's, one per sign-in) to clear. The slots bound the proxy's cookies
        (session/cookies.py): restored tabs, or a hostile page navigating to /start, cannot
        lock a browser out of the host."""
        pending: list[tuple[int, Transaction | None]] = [(0, None)] * TRANSACTION_SLOTS
        strays = []
        for name, value in request_cookies(request.headers.get("Cookie")).items():
            if not name.startswith(self.cookies.transaction_prefix):
                continue
            slot = self.cookies.slot_of(name)
            if slot is None:
                strays.append(name)
                continue
            try:
                pending[slot] = self._open_transaction(value)
            except (Unsealable, ValueError):
                pass  # unreadable (another secret, altered): the slot is free
        return pending, strays

    async def _callback(self, request: web.BaseRequest, request_id: str) -> web.StreamResponse:
        accept = request.headers.get("Accept")
        slot: int | None = None  # the transaction cookie of this sign-in, once found

        def fail(reason: str, message: str, status: int = 400) -> web.Response:
            metrics.LOGINS.labels(reason).inc()
            log().warning("login_failed", extra={"fields": {"request_id": request_id, "reason": reason}})
            response = error_response(status, reason, message, request_id, accept=accept)
            if slot is not None:  # only this sign-in's: the other slots may hold other tabs' sign-ins
                response.headers.add("Set-Cookie", self.cookies.clear_transaction(slot))
            return response

        assert self.client is not None
        now = int(self.clock())
        pending, _ = self._pending_sign_ins(request)
        checked = check_callback(request.query, [t for _, t in pending], now=now, used_states=self._used_states,
                                 issuers=self.client.endpoints.issuers,
                                 iss_required=self.client.endpoints.iss_parameter_supported)
        if isinstance(checked, CallbackRefused):
            slot = checked.slot
            return fail(checked.reason, checked.message, checked.status)
        slot, transaction, code = checked.slot, checked.transaction, checked.code
        state = transaction.state
        self._remember_state(state, now)
        try:
            tokens = await self.client.exchange_code(code, transaction.code_verifier, self.callback_url)
        except IdpRejected as exc:
            return fail("code_rejected", f"the identity provider rejected the sign-in ({printable(exc.error)})")
        except IdpError:
            return fail("idp_unavailable", "the identity provider could not be reached; try again", status=502)
        if not tokens.id_token:
            return fail("token_invalid", "the identity provider returned no ID token")
        rules = id_token_rules(self.oidc, nonce=transaction.nonce)
        try:
            claims = await self.client.verify(tokens.id_token, rules, now)
        except TokenInvalid as exc:
            return fail("token_invalid", f"the ID token was not acceptable ({exc.reason})")
        except IdpError:
            return fail("idp_unavailable", "the identity provider's keys could not be loaded", status=502)
        # A new session with a fresh id every time: no session fixation (OWASP). A session
        # this browser still had ends here, so an old ticket cannot outlive the new sign-in.
        previous = SessionTicket.parse(request_cookies(request.headers.get("Cookie")).get(self.cookies.session_name))
        try:
            # Only a ticket whose secret opens its session may end it.
            if previous is not None and await self.sessions.load(previous, now) is not None:
                await self.sessions.end(previous)
        except StoreError:
            return fail("store_unavailable", "sessions cannot be stored right now; try again", status=503)
        ticket = SessionTicket.new()
        session = Session(
            sub=str(claims.get("sub", "")),
            claims=claims,
            access_token=tokens.access_token,
            id_token=tokens.id_token,
            refresh_token=tokens.refresh_token,
            access_expires_at=now + tokens.expires_in if tokens.expires_in else None,
            access_issued_at=now,
            created_at=now,
            expires_at=now + int(self.settings.lifetime),
            last_seen_at=now,
        )
        try:
            await self.sessions.create(ticket, session)
        except RecordTooLarge as exc:
            # Refused now, with the reason, rather than failing on a later write (DynamoDB: 400 KB per item).
            log().error("session_too_large", extra={"fields": {
                "request_id": request_id, "sub": session.sub, "bytes": exc.size, "limit": exc.limit,
                "id_token_bytes": len(tokens.id_token), "access_token_bytes": len(tokens.access_token)}})
            return fail("session_too_large", f"the sign-in's tokens are too large to keep (about {exc.size // 1024} KiB, "
                        f"the limit is {exc.limit // 1024} KiB): ask an administrator to trim their claims or groups",
                        status=500)
        except StoreError:
            return fail("store_unavailable", "sessions cannot be stored right now; try again", status=503)
        metrics.LOGINS.labels("success").inc()
        log().info("login_success", extra={"fields": {"request_id": request_id, "sub": session.sub}})
        response = web.Response(
            status=302,
            headers={"Location": transaction.redirect_target, "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"},
        )
        response.headers.add("Set-Cookie", self.cookies.set_session(ticket.encode(), int(self.settings.lifetime)))
        response.headers.add("Set-Cookie", self.cookies.clear_transaction(slot))
        return response

    async def _sign_out(self, request: web.BaseRequest, request_id: str) -> web.StreamResponse:
        target = self.redirects.safe_target(request.query.get("rd"))
        if not self._same_origin(request):
            # A third-party page must not sign users out (logout CSRF): ask instead.
            return _confirmation_page(f"{self.prefix}/sign_out?" + urlencode({"rd": target}), request_id)
        revoke: list[str] = []
        try:
            found = await self.current(request, int(self.clock()))
            if found is not None:
                # The store's refresh token, which a refresh on another replica may have
                # made newer than ours, and any newer one this process has not saved yet.
                revoke = await self.sessions.end(found[0])
        except StoreError:
            return error_response(503, "store_unavailable", "sign-out cannot complete right now; try again", request_id,
                                  accept=request.headers.get("Accept"), retry_after=RETRY_AFTER)
        location = target
        if found is not None:
            ticket, session = found
            # "yes": the provider confirmed every revocation; "no": one failed (counted in
            # authproxy_idp_errors_total); "none": nothing to revoke, or no revocation endpoint.
            revoked = "none"
            for refresh_token in revoke or ([session.refresh_token] if session.refresh_token else []):
                if self.client is None:
                    break
                try:
                    if await self.client.revoke(refresh_token) and revoked == "none":  # RFC 7009
                        revoked = "yes"
                except IdpError as exc:
                    revoked = "no"
                    log().warning("revocation_failed", extra={"fields": {"request_id": request_id, "error": str(exc)}})
            assert self.client is not None
            location = logout_url(
                self.client.endpoints,
                client_id=self.oidc.client_id,
                after=self.oidc.post_logout_redirect_uri or f"{self.origin}/",
                id_token=session.id_token,
                fallback=target,
            )
            metrics.LOGOUTS.inc()
            log().info("logout", extra={"fields": {"request_id": request_id, "sub": session.sub,
                                                   "refresh_token_revoked": revoked}})
        response = web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})
        response.headers.add("Set-Cookie", self.cookies.clear_session())
        return response

    async def _userinfo(self, request: web.BaseRequest, request_id: str) -> web.StreamResponse:
        found = await self.current(request, int(self.clock()))
        if found is None:
            return error_response(401, "unauthorized", "no session", request_id, accept="application/json")
        _, session = found
        claims = session.claims
        groups = claims.get(self.oidc.effective_groups_claim) or []
        body = {
            "sub": session.sub,
            "email": claims.get("email"),
            "name": claims.get("name"),
            "groups": groups if isinstance(groups, list) else [groups],
            "session_expires_at": session.expires_at,
        }
        return web.Response(text=json.dumps(body), content_type="application/json", headers={"Cache-Control": "no-store"})

    def _same_origin(self, request: web.BaseRequest) -> bool:
        site = request.headers.get("Sec-Fetch-Site")
        if site is not None:
            return site in ("same-origin", "none")
        for header in ("Origin", "Referer"):
            value = request.headers.get(header)
            if value:
                parts = urlsplit(value)
                return f"{parts.scheme}://{parts.netloc}" == self.origin
        return False

    def _remember_state(self, state: str, now: int) -> None:
        """A transaction is usable once (OIDC Core 3.1.2.7 codes are single-use too)."""
        if len(self._used_states) >= _USED_STATES_MAX:
            cutoff = now - TRANSACTION_LIFETIME
            self._used_states = {s: t for s, t in self._used_states.items() if t >= cutoff}
        self._used_states[state] = now


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raise ValueError("not base64url") from None


def _confirmation_page(action: str, request_id: str) -> web.Response:
    body = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign out?</title></head>
<body style="font-family:system-ui,sans-serif;max-width:30rem;margin:4rem auto">
<h1>Sign out?</h1><form method="post" action="{html.escape(action)}"><button type="submit">Sign out</button></form>
</body></html>"""
    headers = {
        "Cache-Control": "no-store",
        "X-Request-Id": request_id,
        "X-Frame-Options": "DENY",  # no other site may frame the button (clickjacking)
        "Content-Security-Policy": "frame-ancestors 'none'",
    }
    return web.Response(text=body, content_type="text/html", headers=headers)
