"""A development OpenID provider that behaves like AWS Cognito. DEVELOPMENT ONLY.

It serves the paths ``authproxy.oidc.endpoints.for_cognito`` derives from one URL that
is both the issuer and the "cognito domain" (``/oauth2/authorize``, ``/oauth2/token``,
``/oauth2/revoke``, ``/oauth2/userInfo``, ``/logout``, ``/.well-known/jwks.json``) plus a
discovery document, and issues Cognito-shaped tokens (see /work/shared/PEERS.md):

- ID token: RS256, ``aud`` = client id, ``token_use: id``, ``cognito:username``,
  ``cognito:groups`` (when the user has any), ``email``, ``nonce``.
- Access token: RS256 under a different ``kid``, no ``aud`` but ``client_id``,
  ``token_use: access``, space-separated ``scope``, ``username``, ``jti``, ``origin_jti``.
- Refresh tokens are opaque; a refresh returns new access and ID tokens and no new
  refresh token (Cognito without rotation); revocation (RFC 7009) ends it.

Why it is not fit for production: anyone who reaches the sign-in page can sign in as a
demo user with one click; users, codes and tokens live in memory; the signing keys are
made at each start. It binds 127.0.0.1 unless a host is given, and says so in a banner.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import html
import logging
import re
import secrets
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import unquote_plus, urlencode

from aiohttp import web
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from multidict import MultiMapping

from authproxy.oidc.verify import TokenInvalid, TokenRules, verify_token

LOGGER = logging.getLogger("authproxy.demo.idp")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9400
DEFAULT_ACCESS_TOKEN_LIFETIME = 120  # short, so the demo shows refreshes
DEFAULT_ID_TOKEN_LIFETIME = 3600
DEFAULT_REFRESH_TOKEN_LIFETIME = 30 * 86400  # Cognito's default
CODE_LIFETIME = 300  # Cognito: authorization codes are valid for 5 minutes
MAX_ENTRIES = 10_000  # per in-memory table; the oldest entries go first

# Well-known demo credentials, not secrets: printed in the docs and the banner.
DEFAULT_CLIENT_ID = "authproxy-demo"
DEFAULT_CLIENT_SECRET = "authproxy-demo-dev-only-secret"
DEFAULT_REDIRECT_URI = "http://127.0.0.1:8080/oauth2/callback"
DEFAULT_LOGOUT_URI = "http://127.0.0.1:8080/"
DEFAULT_MACHINE_CLIENT_ID = "authproxy-demo-machine"
DEFAULT_MACHINE_CLIENT_SECRET = "authproxy-demo-machine-dev-only-secret"
DEFAULT_MACHINE_SCOPES = ("demo-api/read", "demo-api/write")
DEFAULT_WEB_SCOPES = ("openid", "email", "profile", "phone", "aws.cognito.signin.user.admin")

# What an authorize request carries; the sign-in forms carry these as hidden fields.
AUTHORIZE_PARAMS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
)
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")  # BASE64URL(SHA-256) without padding (RFC 7636 4.2)
_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")  # RFC 7636 4.1
_SUB_NAMESPACE = uuid.UUID("6f1c3c1e-5d0a-4c1e-9a51-0a7d2c6f9e10")

_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",  # one-click sign-in buttons must not be framed (clickjacking)
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}
_TOKEN_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}  # RFC 6749 5.1


# ---------------------------------------------------------------- clients and users


@dataclass(frozen=True, slots=True)
class WebClient:
    """An app client with a secret using the authorization code grant (Cognito "confidential client")."""

    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...]
    logout_uris: tuple[str, ...] = ()
    scopes: tuple[str, ...] = DEFAULT_WEB_SCOPES

    def __post_init__(self) -> None:  # accept lists too
        for name in ("redirect_uris", "logout_uris", "scopes"):
            object.__setattr__(self, name, tuple(getattr(self, name)))


@dataclass(frozen=True, slots=True)
class MachineClient:
    """An app client for the client_credentials grant, limited to resource-server ``scopes``."""

    client_id: str
    client_secret: str
    scopes: tuple[str, ...] = DEFAULT_MACHINE_SCOPES

    def __post_init__(self) -> None:
        object.__setattr__(self, "scopes", tuple(self.scopes))


Client = WebClient | MachineClient


@dataclass(frozen=True, slots=True)
class DemoUser:
    """A user of the demo; the password is the username."""

    username: str
    email: str
    groups: tuple[str, ...] = ()

    @property
    def sub(self) -> str:
        """Stable across restarts, uuid-shaped like Cognito's."""
        return str(uuid.uuid5(_SUB_NAMESPACE, self.username))

    def password_matches(self, password: str) -> bool:
        return hmac.compare_digest(password.encode(), self.username.encode())


DEMO_USERS = (
    DemoUser("alice", "alice@example.com", ("admins",)),
    DemoUser("bob", "bob@example.com"),
)


def demo_clients(
    *,
    client_id: str = DEFAULT_CLIENT_ID,
    client_secret: str = DEFAULT_CLIENT_SECRET,
    redirect_uris: Iterable[str] = (DEFAULT_REDIRECT_URI,),
    logout_uris: Iterable[str] = (DEFAULT_LOGOUT_URI,),
    machine_client_id: str = DEFAULT_MACHINE_CLIENT_ID,
    machine_client_secret: str = DEFAULT_MACHINE_CLIENT_SECRET,
    machine_scopes: Iterable[str] = DEFAULT_MACHINE_SCOPES,
) -> list[Client]:
    """The demo's two clients: the proxy (web) and a service (machine)."""
    return [
        WebClient(client_id, client_secret, tuple(redirect_uris), tuple(logout_uris)),
        MachineClient(machine_client_id, machine_client_secret, tuple(machine_scopes)),
    ]


def banner(issuer: str) -> str:
    """Said once at start: what this is, that it is for development only, where it is."""
    return (
        "authproxy dev-idp: a DEVELOPMENT OpenID provider that behaves like AWS Cognito. NOT FOR PRODUCTION:\n"
        "  anyone reaching it can sign in as a demo user with one click; state is in memory; keys change at each start.\n"
        "  demo users: alice (group admins), bob; each password is the username.\n"
        f"  issuer (also the cognito_domain): {issuer}"
    )


# ---------------------------------------------------------------- in-memory state

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


@dataclass(frozen=True, slots=True)
class _Code:
    authentication: _Authentication
    redirect_uri: str
    code_challenge: str
    nonce: str | None


@dataclass(frozen=True, slots=True)
class _AuthorizeRequest:
    """An authorize request that passed validation (RFC 6749 4.1.1, RFC 7636 4.3, OIDC Core 3.1.2.1)."""

    client: WebClient
    redirect_uri: str
    scope: str
    state: str | None
    nonce: str | None
    code_challenge: str
    params: dict[str, str]  # to carry through the sign-in forms


class _Refused(Exception):
    """An authorize request with an unknown client or redirect_uri: show an error page and
    never redirect (RFC 6749 4.1.2.1, 10.15 open redirector)."""


class _RedirectedError(Exception):
    """An authorize error reported to the client at its redirect_uri (RFC 6749 4.1.2.1)."""

    def __init__(self, redirect_uri: str, state: str | None, error: str, description: str):
        super().__init__(error)
        self.location = _with_query(
            redirect_uri, {"error": error, "error_description": description, **({"state": state} if state is not None else {})}
        )


class _TokenError(Exception):
    """An error response of the token or revocation endpoint (RFC 6749 5.2)."""

    def __init__(self, error: str, description: str, status: int = 400, basic_challenge: bool = False):
        super().__init__(error)
        self.error, self.description, self.status, self.basic_challenge = error, description, status, basic_challenge

    def response(self) -> web.Response:
        headers = dict(_TOKEN_HEADERS)
        if self.basic_challenge:
            headers["WWW-Authenticate"] = 'Basic realm="authproxy dev-idp"'
        return web.json_response(
            {"error": self.error, "error_description": self.description}, status=self.status, headers=headers
        )


# ---------------------------------------------------------------- the provider


class DevIdp:
    """The provider's state and handlers; ``app()`` makes the aiohttp application."""

    def __init__(
        self,
        issuer: str,
        clients: Iterable[Client],
        *,
        access_token_lifetime: int = DEFAULT_ACCESS_TOKEN_LIFETIME,
        id_token_lifetime: int = DEFAULT_ID_TOKEN_LIFETIME,
        refresh_token_lifetime: int = DEFAULT_REFRESH_TOKEN_LIFETIME,
        users: Iterable[DemoUser] = DEMO_USERS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.clients: dict[str, Client] = {client.client_id: client for client in clients}
        self.users: dict[str, DemoUser] = {user.username: user for user in users}
        self.access_token_lifetime = access_token_lifetime
        self.id_token_lifetime = id_token_lifetime
        self.refresh_token_lifetime = refresh_token_lifetime
        self.clock = clock
        # Cognito signs ID and access tokens with different keys.
        self._id_key = _signing_key()
        self._access_key = _signing_key()
        self.public_keys = KeySet.import_key_set(self.jwks())
        self._codes: _Expiring[_Code] = _Expiring()
        self._spent_codes: _Expiring[str] = _Expiring()  # code -> refresh token issued for it ("" if none)
        self._refresh_tokens: _Expiring[_Authentication] = _Expiring()
        self._revoked: _Expiring[bool] = _Expiring()  # origin_jti of revoked refresh tokens

    def app(self) -> web.Application:
        app = web.Application()
        app[IDP_KEY] = self
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/.well-known/jwks.json", self._jwks)
        app.router.add_get("/oauth2/authorize", self._authorize_page)
        app.router.add_post("/oauth2/authorize", self._authorize_sign_in)
        app.router.add_post("/oauth2/token", self._token)
        app.router.add_post("/oauth2/revoke", self._revoke)
        app.router.add_route("GET", "/oauth2/userInfo", self._userinfo)
        app.router.add_route("POST", "/oauth2/userInfo", self._userinfo)
        app.router.add_get("/logout", self._logout)
        return app

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.as_dict(private=False) for key in (self._id_key, self._access_key)]}

    def _now(self) -> int:
        return int(self.clock())

    # ---- discovery and keys (OpenID Connect Discovery 1.0 section 3)

    async def _discovery(self, request: web.Request) -> web.Response:
        base = self.issuer
        scopes = {scope for client in self.clients.values() for scope in client.scopes}
        return web.json_response(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{base}/oauth2/authorize",
                "token_endpoint": f"{base}/oauth2/token",
                "userinfo_endpoint": f"{base}/oauth2/userInfo",
                "revocation_endpoint": f"{base}/oauth2/revoke",
                "jwks_uri": f"{base}/.well-known/jwks.json",
                "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "code_challenge_methods_supported": ["S256"],
                "scopes_supported": sorted(scopes),
                "claims_supported": [
                    "sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "email", "email_verified",
                    "cognito:username", "cognito:groups",
                ],
            }
        )

    async def _jwks(self, request: web.Request) -> web.Response:
        return web.json_response(self.jwks(), headers={"Cache-Control": "max-age=60"})

    # ---- authorization endpoint (RFC 6749 4.1.1-4.1.2, RFC 7636 4.3-4.4, OIDC Core 3.1.2)

    async def _authorize_page(self, request: web.Request) -> web.Response:
        try:
            authorize = self._parse_authorize(request.query)
        except _Refused as exc:
            return _page("Sign-in refused", f"<p class=error>{_e(str(exc))}</p>", status=400)
        except _RedirectedError as exc:
            return _redirect(exc.location)
        return self._sign_in_page(request.path, authorize)

    async def _authorize_sign_in(self, request: web.Request) -> web.Response:
        form = await request.post()
        try:
            authorize = self._parse_authorize(form)
        except _Refused as exc:
            return _page("Sign-in refused", f"<p class=error>{_e(str(exc))}</p>", status=400)
        except _RedirectedError as exc:
            return _redirect(exc.location)
        picked = _form_str(form, "pick")
        if picked is not None:  # one click on a demo user's button: no password (development only)
            username = picked
            user = self.users.get(picked)
        else:
            username = (_form_str(form, "username") or "").strip()
            user = self.users.get(username)
            if user is not None and not user.password_matches(_form_str(form, "password") or ""):
                user = None
        if user is None:
            LOGGER.info("dev_idp_sign_in_failed")
            return self._sign_in_page(request.path, authorize, error="Incorrect username or password.", username=username)
        now = self._now()
        authentication = _Authentication(
            client_id=authorize.client.client_id,
            user=user,
            scope=authorize.scope,
            auth_time=now,
            origin_jti=str(uuid.uuid4()),
        )
        code = secrets.token_urlsafe(32)
        self._codes.put(
            code,
            _Code(authentication, authorize.redirect_uri, authorize.code_challenge, authorize.nonce),
            now + CODE_LIFETIME,
            now,
        )
        LOGGER.info("dev_idp_signed_in", extra={"fields": {"user": user.username, "client_id": authentication.client_id}})
        params = {"code": code, **({"state": authorize.state} if authorize.state is not None else {})}
        return _redirect(_with_query(authorize.redirect_uri, params))

    def _parse_authorize(self, params: MultiMapping[Any]) -> _AuthorizeRequest:
        """Validate in the order RFC 6749 4.1.2.1 requires: client and redirect_uri first
        (refused without a redirect), then the rest (reported at the redirect_uri)."""
        client = self.clients.get(_single(params, "client_id") or "")
        if not isinstance(client, WebClient):
            raise _Refused("Unknown client_id, or a client that cannot use the authorization code grant.")
        redirect_uri = _single(params, "redirect_uri")
        if redirect_uri is None or redirect_uri not in client.redirect_uris:
            raise _Refused("redirect_uri is missing or is not registered for this client (exact match required).")
        state = _form_str(params, "state")

        def fail(error: str, description: str) -> _RedirectedError:
            return _RedirectedError(redirect_uri, state, error, description)

        repeated = [name for name in AUTHORIZE_PARAMS if len(params.getall(name, [])) > 1]
        if repeated:  # RFC 6749 3.1: parameters must not be repeated
            raise fail("invalid_request", f"repeated parameter: {', '.join(repeated)}")
        response_type = _single(params, "response_type")
        if response_type is None:
            raise fail("invalid_request", "response_type is required")
        if response_type != "code":
            raise fail("unsupported_response_type", "only response_type=code is supported")
        scopes = (_single(params, "scope") or "").split()
        if "openid" not in scopes:
            raise fail("invalid_scope", "scope must include openid")
        unknown = sorted(set(scopes) - set(client.scopes))
        if unknown:
            raise fail("invalid_scope", f"scope not allowed for this client: {' '.join(unknown)}")
        challenge = _single(params, "code_challenge")
        if not challenge:  # RFC 7636 4.4.1: PKCE is required here
            raise fail("invalid_request", "code_challenge is required")
        if _single(params, "code_challenge_method") != "S256":  # a missing method means "plain" (RFC 7636 4.3)
            raise fail("invalid_request", "transform algorithm not supported: code_challenge_method must be S256")
        if not _CHALLENGE.fullmatch(challenge):
            raise fail("invalid_request", "code_challenge is not a base64url SHA-256 digest")
        carried = {name: value for name in AUTHORIZE_PARAMS if (value := _single(params, name)) is not None}
        return _AuthorizeRequest(
            client=client,
            redirect_uri=redirect_uri,
            scope=" ".join(dict.fromkeys(scopes)),
            state=state,
            nonce=_single(params, "nonce"),
            code_challenge=challenge,
            params=carried,
        )

    def _sign_in_page(
        self, action: str, authorize: _AuthorizeRequest, *, error: str | None = None, username: str = ""
    ) -> web.Response:
        hidden = "".join(
            f'<input type="hidden" name="{_e(name)}" value="{_e(value)}">' for name, value in authorize.params.items()
        )
        buttons = "".join(
            f'<li><button type="submit" name="pick" value="{_e(user.username)}">Sign in as {_e(user.username)}</button> '
            f"<span>{_e(user.email)}; groups: {_e(', '.join(user.groups) or 'none')}</span></li>"
            for user in self.users.values()
        )
        body = (
            f"<p>Signing in to <b>{_e(authorize.client.client_id)}</b>, "
            f"which will receive you at <code>{_e(authorize.redirect_uri)}</code>.</p>"
            + (f'<p class=error role="alert">{_e(error)}</p>' if error else "")
            + f'<form method="post" action="{_e(action)}">{hidden}<h2>Demo users</h2><ul>{buttons}</ul></form>'
            + f'<form method="post" action="{_e(action)}">{hidden}<h2>Username and password</h2>'
            f'<p><label>Username <input name="username" value="{_e(username)}" autocomplete="username"></label></p>'
            '<p><label>Password <input name="password" type="password" autocomplete="current-password"></label></p>'
            '<p><button type="submit">Sign in</button></p>'
            "<p class=hint>Each demo user's password is its username.</p></form>"
        )
        return _page("Sign in", body, status=401 if error else 200)

    # ---- token endpoint (RFC 6749 3.2, 4.1.3, 4.4, 6; RFC 7636 4.5-4.6; OIDC Core 3.1.3, 12)

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        try:
            client = self._authenticate_client(request, form)
            grant_type = _single(form, "grant_type")
            if grant_type == "authorization_code":
                body = self._code_grant(client, form)
            elif grant_type == "refresh_token":
                body = self._refresh_grant(client, form)
            elif grant_type == "client_credentials":
                body = self._client_credentials_grant(client, form)
            elif grant_type is None:
                raise _TokenError("invalid_request", "grant_type is required")
            else:
                raise _TokenError("unsupported_grant_type", "supported: authorization_code, refresh_token, client_credentials")
        except _TokenError as exc:
            LOGGER.info("dev_idp_token_error", extra={"fields": {"error": exc.error}})
            return exc.response()
        return web.json_response(body, headers=_TOKEN_HEADERS)

    def _authenticate_client(self, request: web.Request, form: MultiMapping[Any]) -> Client:
        """client_secret_basic or client_secret_post, never both (RFC 6749 2.3.1)."""
        header = request.headers.get("Authorization")
        posted_id, posted_secret = _single(form, "client_id"), _single(form, "client_secret")
        if header is not None:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "basic":
                raise _TokenError("invalid_client", "unsupported authentication scheme", 401, basic_challenge=True)
            try:
                pair = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except ValueError:
                raise _TokenError("invalid_client", "malformed Basic credentials", 401, basic_challenge=True) from None
            raw_id, separator, raw_secret = pair.partition(":")
            if not separator:
                raise _TokenError("invalid_client", "malformed Basic credentials", 401, basic_challenge=True)
            # RFC 6749 2.3.1: id and secret are form-urlencoded before Basic encoding.
            client_id, secret = unquote_plus(raw_id), unquote_plus(raw_secret)
            if posted_secret is not None:
                raise _TokenError("invalid_request", "more than one client authentication method")
            if posted_id is not None and posted_id != client_id:
                raise _TokenError("invalid_request", "client_id differs from the authenticated client")
        elif posted_id is not None and posted_secret is not None:
            client_id, secret = posted_id, posted_secret
        else:
            raise _TokenError("invalid_client", "client authentication required", 401, basic_challenge=True)
        client = self.clients.get(client_id)
        if client is None or not hmac.compare_digest(client.client_secret.encode(), secret.encode()):
            raise _TokenError("invalid_client", "client authentication failed", 401, basic_challenge=header is not None)
        return client

    def _code_grant(self, client: Client, form: MultiMapping[Any]) -> dict[str, Any]:
        if not isinstance(client, WebClient):
            raise _TokenError("unauthorized_client", "this client may not use the authorization_code grant")
        code = _single(form, "code")
        if not code:
            raise _TokenError("invalid_request", "code is required")
        now = self._now()
        entry = self._codes.pop(code, now)
        if entry is None:
            spent = self._spent_codes.pop(code, now)
            if spent:  # RFC 6749 4.1.2: a reused code SHOULD revoke what it was exchanged for
                self._revoke_refresh_token(spent, now)
            raise _TokenError("invalid_grant", "unknown, expired or already used code")
        self._spent_codes.put(code, "", now + CODE_LIFETIME, now)  # single use, whatever happens next
        if entry.authentication.client_id != client.client_id:
            raise _TokenError("invalid_grant", "the code was issued to another client")
        if _single(form, "redirect_uri") != entry.redirect_uri:  # RFC 6749 4.1.3
            raise _TokenError("invalid_grant", "redirect_uri differs from the authorization request")
        verifier = _single(form, "code_verifier") or ""
        if not _VERIFIER.fullmatch(verifier) or not hmac.compare_digest(_s256(verifier), entry.code_challenge):
            raise _TokenError("invalid_grant", "PKCE verification failed")  # RFC 7636 4.6
        refresh_token = secrets.token_urlsafe(48)
        self._refresh_tokens.put(refresh_token, entry.authentication, now + self.refresh_token_lifetime, now)
        self._spent_codes.put(code, refresh_token, now + CODE_LIFETIME, now)
        return {**self._user_tokens(entry.authentication, entry.nonce, now), "refresh_token": refresh_token}

    def _refresh_grant(self, client: Client, form: MultiMapping[Any]) -> dict[str, Any]:
        """New access and ID tokens; the refresh token stays the same and is not returned
        (Cognito without rotation). The ID token keeps auth_time, has no nonce (OIDC Core 12.2)."""
        if not isinstance(client, WebClient):
            raise _TokenError("unauthorized_client", "this client may not use the refresh_token grant")
        token = _single(form, "refresh_token")
        if not token:
            raise _TokenError("invalid_request", "refresh_token is required")
        now = self._now()
        authentication = self._refresh_tokens.get(token, now)
        if authentication is None or authentication.client_id != client.client_id:
            raise _TokenError("invalid_grant", "invalid, expired or revoked refresh token")
        return self._user_tokens(authentication, None, now)

    def _client_credentials_grant(self, client: Client, form: MultiMapping[Any]) -> dict[str, Any]:
        """RFC 6749 4.4 for a machine client; scope defaults to all it may have (3.3)."""
        if not isinstance(client, MachineClient):
            raise _TokenError("unauthorized_client", "this client may not use the client_credentials grant")
        requested = (_single(form, "scope") or "").split() or list(client.scopes)
        unknown = sorted(set(requested) - set(client.scopes))
        if unknown:
            raise _TokenError("invalid_scope", f"scope not allowed for this client: {' '.join(unknown)}")
        now = self._now()
        claims = {
            "sub": client.client_id,
            "token_use": "access",
            "scope": " ".join(dict.fromkeys(requested)),
            "auth_time": now,
            "iss": self.issuer,
            "exp": now + self.access_token_lifetime,
            "iat": now,
            "version": 2,
            "jti": str(uuid.uuid4()),
            "client_id": client.client_id,
        }
        return {
            "access_token": _sign(self._access_key, claims),
            "token_type": "Bearer",
            "expires_in": self.access_token_lifetime,
        }

    def _user_tokens(self, authentication: _Authentication, nonce: str | None, now: int) -> dict[str, Any]:
        user = authentication.user
        groups = {"cognito:groups": list(user.groups)} if user.groups else {}
        access_claims = {
            "sub": user.sub,
            **groups,
            "iss": self.issuer,
            "client_id": authentication.client_id,
            "origin_jti": authentication.origin_jti,
            "token_use": "access",
            "scope": authentication.scope,
            "auth_time": authentication.auth_time,
            "exp": now + self.access_token_lifetime,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "username": user.username,
        }
        access_token = _sign(self._access_key, access_claims)
        id_claims = {
            "sub": user.sub,
            **groups,
            "email_verified": True,
            "iss": self.issuer,
            "cognito:username": user.username,
            **({"nonce": nonce} if nonce is not None else {}),
            "origin_jti": authentication.origin_jti,
            "aud": authentication.client_id,
            "token_use": "id",
            "auth_time": authentication.auth_time,
            "exp": now + self.id_token_lifetime,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "email": user.email,
            "at_hash": _at_hash(access_token),  # OIDC Core 3.1.3.6
        }
        return {
            "access_token": access_token,
            "id_token": _sign(self._id_key, id_claims),
            "token_type": "Bearer",
            "expires_in": self.access_token_lifetime,
        }

    # ---- revocation (RFC 7009)

    async def _revoke(self, request: web.Request) -> web.Response:
        """Revoke a refresh token and, as Cognito does, the tokens made from it (for userInfo).

        An unknown or already revoked token also gets 200 (RFC 7009 2.2); a token of
        another client is refused (2.1).
        """
        form = await request.post()
        now = self._now()
        try:
            client = self._authenticate_client(request, form)
            token = _single(form, "token")
            if not token:
                raise _TokenError("invalid_request", "token is required")
            authentication = self._refresh_tokens.get(token, now)
            if authentication is not None and authentication.client_id != client.client_id:
                raise _TokenError("unauthorized_client", "the token was issued to another client")
        except _TokenError as exc:
            return exc.response()
        self._revoke_refresh_token(token, now)
        return web.Response(status=200, headers=_TOKEN_HEADERS)

    def _revoke_refresh_token(self, token: str, now: int) -> None:
        authentication = self._refresh_tokens.pop(token, now)
        if authentication is not None:
            self._revoked.put(authentication.origin_jti, True, now + max(self.access_token_lifetime, self.id_token_lifetime), now)
            LOGGER.info("dev_idp_refresh_token_revoked", extra={"fields": {"client_id": authentication.client_id}})

    # ---- userInfo (OIDC Core 5.3, bearer token per RFC 6750 2.1)

    async def _userinfo(self, request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        now = self._now()
        claims: dict[str, Any] | None = None
        if scheme.lower() == "bearer" and token.strip():
            try:
                claims = verify_token(
                    token.strip(), self.public_keys, TokenRules(issuer=self.issuer, token_use="access", leeway=0), now
                )
            except TokenInvalid:
                claims = None
        user = self.users.get(str(claims.get("username"))) if claims else None
        if claims is None or user is None or self._revoked.get(str(claims.get("origin_jti")), now):
            return web.json_response(
                {"error": "invalid_token", "error_description": "the access token is invalid, expired or revoked"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"', **_TOKEN_HEADERS},  # RFC 6750 3.1
            )
        return web.json_response(
            {
                "sub": user.sub,
                "email_verified": "true",  # Cognito's userInfo answers strings here
                "email": user.email,
                "username": user.username,
            },
            headers=_TOKEN_HEADERS,
        )

    # ---- logout (Cognito's /logout: clears Cognito's own session; not RP-initiated logout)

    async def _logout(self, request: web.Request) -> web.Response:
        client = self.clients.get(_single(request.query, "client_id") or "")
        logout_uri = _single(request.query, "logout_uri")
        if not isinstance(client, WebClient) or logout_uri is None or logout_uri not in client.logout_uris:
            return _page(
                "Sign-out refused",
                "<p class=error>Unknown client_id, or logout_uri is not an allowed sign-out URL of that client.</p>",
                status=400,
            )
        return _redirect(logout_uri)


IDP_KEY = web.AppKey("authproxy_dev_idp", DevIdp)


def create_app(issuer: str, clients: Iterable[Client], **options: Any) -> web.Application:
    """The provider as an aiohttp application; ``app[IDP_KEY]`` is its ``DevIdp``.

    ``options``: access_token_lifetime, id_token_lifetime, refresh_token_lifetime, users, clock.
    """
    return DevIdp(issuer, clients, **options).app()


# ---------------------------------------------------------------- running it


@dataclass(slots=True)
class DevIdpServer:
    """A started provider: ``issuer`` is where it answers; ``close()`` stops it."""

    idp: DevIdp
    runner: web.AppRunner
    issuer: str
    port: int

    async def close(self) -> None:
        await self.runner.cleanup()


async def start(
    clients: Iterable[Client] | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = 0,
    issuer: str | None = None,
    announce: Callable[[str], None] | None = None,
    **options: Any,
) -> DevIdpServer:
    """Listen on ``host:port`` (0: a free port) in the running event loop.

    ``issuer`` defaults to ``http://host:port`` with the bound port. The banner goes to
    ``announce`` (default: a warning log line), once. No access log: authorize URLs
    carry state and nonce, and nothing of a sign-in belongs in logs.
    """
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    issuer = (issuer or f"http://{_url_host(host)}:{bound_port}").rstrip("/")
    idp = DevIdp(issuer, clients if clients is not None else demo_clients(), **options)
    runner = web.AppRunner(idp.app(), access_log=None)
    try:
        await runner.setup()
        await web.SockSite(runner, sock).start()
    except BaseException:
        await runner.cleanup()
        sock.close()
        raise
    (announce or LOGGER.warning)(banner(issuer))
    return DevIdpServer(idp=idp, runner=runner, issuer=issuer, port=bound_port)


async def run_dev_idp(
    clients: Iterable[Client] | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    stop: asyncio.Event | None = None,
    **options: Any,
) -> None:
    """Serve until ``stop`` is set (or the task is cancelled), then close. ``options`` as for ``start``."""
    server = await start(clients, host=host, port=port, **options)
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        await server.close()


# ---------------------------------------------------------------- helpers


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _signing_key() -> RSAKey:
    return RSAKey.generate_key(
        2048, parameters={"kid": secrets.token_urlsafe(16), "alg": "RS256", "use": "sig"}, private=True
    )


def _sign(key: RSAKey, claims: Mapping[str, Any]) -> str:
    return jwt.encode({"alg": "RS256", "kid": key.kid, "typ": "JWT"}, dict(claims), key)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _s256(verifier: str) -> str:
    """RFC 7636 4.2: BASE64URL(SHA256(ASCII(code_verifier)))."""
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def _at_hash(access_token: str) -> str:
    """OIDC Core 3.1.3.6: the left half of the SHA-256 of the access token, base64url."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return _b64url(digest[: len(digest) // 2])


def _form_str(params: MultiMapping[Any], name: str) -> str | None:
    value = params.get(name)
    return value if isinstance(value, str) else None


def _single(params: MultiMapping[Any], name: str) -> str | None:
    """The parameter's value when given exactly once as text (RFC 6749 3.1, 3.2)."""
    values = params.getall(name, [])
    return values[0] if len(values) == 1 and isinstance(values[0], str) else None


def _with_query(url: str, params: Mapping[str, str]) -> str:
    """RFC 6749 3.1.2: keep the redirect URI's own query and add ours."""
    return url + ("&" if "?" in url else "?") + urlencode(params)


def _redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _page(title: str, body: str, *, status: int) -> web.Response:
    """A plain HTML page; ``body`` is already escaped HTML."""
    document = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)} · authproxy dev-idp</title><style>"
        "body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;line-height:1.5}"
        ".dev{background:#fff3cd;border:1px solid #e0c060;padding:.5rem .75rem}"
        ".error{color:#a00;font-weight:bold}ul{list-style:none;padding:0}li{margin:.5rem 0}"
        "button{font-size:1rem;padding:.3rem .8rem}input{font-size:1rem}code{word-break:break-all}"
        "</style></head><body>"
        f"<h1>{_e(title)}</h1>"
        "<p class=dev>authproxy dev-idp: a development identity provider that behaves like AWS Cognito. "
        "Not for production.</p>"
        f"{body}</body></html>"
    )
    return web.Response(text=document, content_type="text/html", charset="utf-8", status=status, headers=_PAGE_HEADERS)
