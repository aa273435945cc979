"""``{proxy_prefix}/backchannel_logout``: OpenID Connect Back-Channel Logout 1.0.

The provider posts ``logout_token`` (form-encoded, section 2.5); we verify it (2.6,
oidc/logout.py), refuse a replay by its ``jti`` in the shared store, end the sessions it
names in the store (2.7, session/store.py) and answer 200, or 400 with a JSON error (2.8).
Never a redirect and never a cookie: the caller is a server, not a browser. No cookie,
token, sid or sub reaches a log, an error or a metric; only short reason codes do.

The replay check (2.6 step 8) comes in three steps, in this order, so that no failure can
leave a token recorded whose sessions were not ended: (1) a consistent read: a ``jti``
already recorded (and not lapsed) is a replay, 400; (2) the sessions are ended (idempotent);
(3) the ``jti`` is recorded with a conditional write. A failure or a cancellation before (3)
leaves nothing recorded, so the provider's retry is carried out; a record that (3) finds
already there is a duplicate delivered concurrently, whose sessions are ended too: 200.
Two deliveries of one token that overlap both act; that ends the same sessions twice
(harmless), and a replay that comes after either was recorded is refused.

Where the specification is silent:
- A store or provider outage is answered 503 (``temporarily_unavailable``, RFC 6749 5.2's
  word for it) with Retry-After rather than 400: nothing was wrong with the token, and
  nothing was recorded, so a provider that retries is not refused. When only (3) fails
  the sessions are already ended; the retry ends nothing new and records the token.
- A body that does not arrive within ``body_timeout`` is answered 408 and the connection
  closed; a client that leaves mid-body gets no answer (``ClientGone``).
- Refresh tokens are not revoked (see ``Sessions.end_for_logout``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from urllib.parse import parse_qs

from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import HttpProcessingError

from authproxy import metrics
from authproxy.config.schema import OidcConfig
from authproxy.errors import RETRY_AFTER, ClientGone, IdpError, TokenInvalid, UnknownSigningKey
from authproxy.logs import log
from authproxy.oidc.client import IdentityProviderClient
from authproxy.oidc.logout import MAX_LOGOUT_TOKEN_LENGTH, check_logout_token, logout_token_rules
from authproxy.oidc.verify import KeyNotInJwks
from authproxy.session.store import Sessions
from authproxy.store.base import StoreError, StoreRejected

FORM = "application/x-www-form-urlencoded"
MAX_BODY = MAX_LOGOUT_TOKEN_LENGTH + 1024  # the token, its name, and room for other parameters
BODY_TIMEOUT = 10.0  # seconds to receive the whole body


class BackChannelLogout:
    """The endpoint, built once with sign-in (web/signin.py)."""

    def __init__(self, oidc: OidcConfig, sessions: Sessions, client: Callable[[], IdentityProviderClient | None],
                 clock: Callable[[], float], *, body_timeout: float = BODY_TIMEOUT):
        self.rules = logout_token_rules(oidc)
        # Sessions and logouts hash sid and sub in the namespace of the provider's configured
        # issuer, whichever of its issuers a token came from (oidc/logout.py).
        self.provider = oidc.issuer
        self.sessions = sessions
        sessions.find_by_store_key()  # a logout token names store keys: their cached sessions go at once
        self.client = client
        self.clock = clock
        self.body_timeout = body_timeout

    async def handle(self, request: web.BaseRequest, request_id: str) -> web.Response:
        if request.method != "POST":  # section 2.5: the provider POSTs
            return _answer(405, request_id, "invalid_request", "use POST", headers={"Allow": "POST"},
                           outcome="bad_request")
        if request.content_type != FORM:
            return _answer(400, request_id, "invalid_request", f"the body must be {FORM}", outcome="bad_request")
        try:
            token = await _logout_token(request, self.body_timeout)
        except ValueError as exc:
            return _answer(400, request_id, "invalid_request", str(exc), outcome="bad_request")
        except TimeoutError:  # a client too slow to send a few kilobytes: answered, and not kept
            return _answer(408, request_id, "invalid_request", "the body did not arrive in time",
                           outcome="bad_request", reason="body_timeout", close=True)
        except HttpProcessingError:  # the body's framing broke (e.g. a bad chunk): nothing more can be read
            return _answer(400, request_id, "invalid_request", "the body could not be read",
                           outcome="bad_request", reason="body_unreadable", close=True)
        except (ConnectionError, ClientPayloadError):  # the client left mid-body: nobody to answer
            raise ClientGone() from None
        client = self.client()
        if client is None:
            return _answer(503, request_id, "temporarily_unavailable", "the provider's keys are not loaded yet",
                           outcome="unavailable", reason="not_ready")
        now = int(self.clock())
        try:
            claims = await client.verify(token, self.rules, now)  # 2.6 steps 2-4, like an ID token
            logout = check_logout_token(token, claims, now, provider=self.provider,
                                        leeway=self.rules.leeway)  # steps 5-7
        except KeyNotInJwks as exc:  # definite: not signed by the provider
            return _invalid(request_id, exc)
        except UnknownSigningKey:  # maybe a key the provider just started to use: later, not never
            return _answer(503, request_id, "temporarily_unavailable", "the signing key is not known yet",
                           outcome="unavailable", reason="unknown_key")
        except TokenInvalid as exc:
            return _invalid(request_id, exc)
        except IdpError:
            return _answer(503, request_id, "temporarily_unavailable", "the provider's keys could not be loaded",
                           outcome="unavailable", reason="jwks_unavailable")
        store = self.sessions.store
        # Step 8, in the store every replica shares, so a replay to another replica fails too;
        # read first and recorded last (see the module's docstring for why in this order).
        try:
            if await store.logout_token_seen(logout.token_hash, now):
                return _answer(400, request_id, "invalid_request", "this logout token was already used",
                               outcome="replayed", reason="replayed")
            ended = await self.sessions.end_for_logout(logout)
        except StoreError as exc:  # nothing recorded: the provider's retry is carried out
            return _unavailable(request_id, exc)
        metrics.BACKCHANNEL_SESSIONS_ENDED.inc(ended)
        try:
            # False: a duplicate delivered at the same time recorded it first; its sessions are ended all the same.
            await store.remember_logout_token(logout.token_hash, logout.remember_until, now)
        except StoreError as exc:
            # The sessions are ended; the provider's retry ends nothing new and records the token.
            return _unavailable(request_id, exc, "the logout could not be recorded; try again",
                                by=logout.by, sessions=ended)
        # Section 2.7: "already logged out" is a success too, so no session found is a 200.
        return _answer(200, request_id, outcome="success", by=logout.by, sessions=ended)


async def _logout_token(request: web.BaseRequest, timeout: float) -> str:
    """The one ``logout_token`` of the form body (section 2.5); ValueError says what is wrong.
    Raises TimeoutError when the body takes longer than ``timeout``, and what aiohttp raises
    when the client leaves or breaks the body's framing."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ValueError("the body is too large")
    body = bytearray()
    async with asyncio.timeout(timeout):
        async for chunk in request.content.iter_any():
            body += chunk
            if len(body) > MAX_BODY:
                raise ValueError("the body is too large")
    try:
        form = parse_qs(body.decode("ascii"), keep_blank_values=True, strict_parsing=bool(body), max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise ValueError("the body is not a valid form") from None
    values = form.get("logout_token", [])
    if len(values) != 1 or not values[0]:
        raise ValueError("the body must carry exactly one logout_token")
    if len(values[0]) > MAX_LOGOUT_TOKEN_LENGTH:
        raise ValueError("the logout_token is too long")
    return values[0]


def _invalid(request_id: str, exc: TokenInvalid) -> web.Response:
    # The reason is a short fixed code (oidc/verify.py), never a claim value.
    return _answer(400, request_id, "invalid_request", f"the logout token is not acceptable ({exc.reason})",
                   outcome="invalid_token", reason=exc.reason)


def _unavailable(request_id: str, exc: StoreError,
                 description: str = "sessions cannot be ended right now; try again", **fields: object) -> web.Response:
    if isinstance(exc, StoreRejected):  # e.g. a table without the indexes: an operator must act
        return _answer(500, request_id, "server_error", "the session store refused the request",
                       outcome="unavailable", reason="store_rejected", **fields)
    return _answer(503, request_id, "temporarily_unavailable", description,
                   outcome="unavailable", reason="store_unavailable", **fields)


def _answer(status: int, request_id: str, error: str = "", description: str = "", *,
            headers: dict[str, str] | None = None, outcome: str, reason: str = "", close: bool = False,
            **fields: object) -> web.Response:
    """Section 2.8: 200, or an error status with a JSON ``error`` and ``error_description``;
    Cache-Control: no-store on every answer."""
    metrics.BACKCHANNEL_LOGOUTS.labels(outcome).inc()
    logged = {"request_id": request_id, "outcome": outcome, **fields}
    if reason:
        logged["reason"] = reason
    (log().info if status == 200 else log().warning)("backchannel_logout", extra={"fields": logged})
    extra = {"Cache-Control": "no-store", "X-Request-Id": request_id, **(headers or {})}
    if status == 503:
        extra["Retry-After"] = str(RETRY_AFTER)
    if status == 200:
        response = web.Response(status=200, headers=extra)
    else:
        body = json.dumps({"error": error, "error_description": description})
        response = web.Response(status=status, text=body, content_type="application/json", headers=extra)
    if close:  # Connection: close, and the connection is closed after the answer
        response.force_close()
    return response
