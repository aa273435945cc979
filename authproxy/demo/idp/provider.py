"""The provider: ``DevIdp``, ``IDP_KEY`` and ``create_app``.

``DevIdp`` holds the provider's state (clients, users, signing keys, in-memory tables, the
clock) and its routes; it serves discovery, the key set, userInfo and logout itself. The
authorization endpoint comes from ``authorize._AuthorizeEndpoint``, the token and
revocation endpoints from ``tokens._TokenEndpoint``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web
from joserfc.jwk import KeySet

from authproxy.demo.idp.authorize import MANAGED_LOGIN_COOKIE, MANAGED_LOGIN_PATH, _AuthorizeEndpoint
from authproxy.demo.idp.clients import (
    DEFAULT_ACCESS_TOKEN_LIFETIME,
    DEFAULT_ID_TOKEN_LIFETIME,
    DEFAULT_REFRESH_TOKEN_LIFETIME,
    DEMO_USERS,
    Client,
    DemoUser,
    WebClient,
)
from authproxy.demo.idp.pages import _page, _redirect
from authproxy.demo.idp.params import _single
from authproxy.demo.idp.state import _Authentication, _Code, _Expiring
from authproxy.demo.idp.tokens import _TOKEN_HEADERS, _signing_key, _TokenEndpoint
from authproxy.oidc.verify import TokenInvalid, TokenRules, verify_token


class DevIdp(_AuthorizeEndpoint, _TokenEndpoint):
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
        domain: str | None = None,
        updated_issuer: str | None = None,
        issuer_format: str = "original",
    ) -> None:
        """``issuer`` alone: one origin is both the issuer and the hosted UI's domain (the
        demo's layout). With ``domain``, a user pool's layout: the hosted UI on ``domain``
        (``app()``), the issuer on another origin with the pool id as its path
        (``issuer_app()``: ``{issuer}/.well-known/openid-configuration`` and
        ``/jwks.json``), and optionally the updated issuer form on a third origin
        (``updated_issuer``); ``issuer_format`` ("original" or "updated", changeable at any
        time, as a pool can be switched) picks the ``iss`` of new tokens."""
        self.issuers = {"original": issuer.rstrip("/")}
        if updated_issuer is not None:
            self.issuers["updated"] = updated_issuer.rstrip("/")
        self.issuer_format = issuer_format
        self.domain = (domain or issuer).rstrip("/")
        self.pool_layout = domain is not None
        self.pool_id = self.issuers["original"].rpartition("/")[2] if self.pool_layout else None
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
        self._retired_refresh_tokens: _Expiring[_Authentication] = _Expiring()  # rotated, within the grace period
        self._revoked: _Expiring[bool] = _Expiring()  # origin_jti of revoked refresh tokens
        self._managed_logins: _Expiring[_Authentication] = _Expiring()  # the hosted UI's own sign-in cookie

    @property
    def issuer(self) -> str:
        """The ``iss`` of tokens issued now."""
        return self.issuers[self.issuer_format]

    def accepts_issuer(self, iss: object) -> bool:
        return iss in self.issuers.values()

    def username_of(self, user: DemoUser) -> str:
        """Cognito names a federated user ``{provider}_{id at the provider}``."""
        return f"{user.federated}_{user.sub.replace('-', '')[:21]}" if user.federated else user.username

    def identity_of(self, user: DemoUser) -> dict[str, Any]:
        """One entry of the ``identities`` claim, as Cognito writes it (strings throughout)."""
        return {
            "userId": user.sub.replace("-", "")[:21],
            "providerName": user.federated,
            "providerType": user.federated,
            "issuer": None,
            "primary": "true",
            "dateCreated": "1700000000000",
        }

    def issuer_app(self) -> web.Application:
        """The issuer's origin in a pool's layout: discovery and keys under ``/{pool id}``."""
        app = web.Application()
        app[IDP_KEY] = self
        app.router.add_get(f"/{self.pool_id}/.well-known/openid-configuration", self._discovery)
        app.router.add_get(f"/{self.pool_id}/.well-known/jwks.json", self._jwks)
        return app

    def app(self) -> web.Application:
        """The hosted UI's domain (and, in the demo's layout, the issuer too)."""
        app = web.Application()
        app[IDP_KEY] = self
        if not self.pool_layout:
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
        """Cognito's document lives at the issuer and names the hosted UI's endpoints on the
        domain, Cognito's ``/logout`` as ``end_session_endpoint`` included. Each issuer
        origin names itself."""
        base = self.domain
        origin = f"{request.scheme}://{request.host}"
        issuer = next((url for url in self.issuers.values() if url.startswith(origin + "/") or url == origin), self.issuer)
        scopes = {scope for client in self.clients.values() for scope in client.scopes}
        return web.json_response(
            {
                "issuer": issuer,
                "authorization_endpoint": f"{base}/oauth2/authorize",
                "token_endpoint": f"{base}/oauth2/token",
                "userinfo_endpoint": f"{base}/oauth2/userInfo",
                "revocation_endpoint": f"{base}/oauth2/revoke",
                "end_session_endpoint": f"{base}/logout",
                "jwks_uri": f"{issuer}/.well-known/jwks.json",
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
                    "cognito:username", "cognito:groups", "identities", "event_id",
                ],
            }
        )

    async def _jwks(self, request: web.Request) -> web.Response:
        return web.json_response(self.jwks(), headers={"Cache-Control": "max-age=60"})

    # ---- userInfo (OIDC Core 5.3, bearer token per RFC 6750 2.1)

    async def _userinfo(self, request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        now = self._now()
        claims: dict[str, Any] | None = None
        if scheme.lower() == "bearer" and token.strip():
            try:
                rules = TokenRules(issuer=self.issuer, issuers=frozenset(self.issuers.values()), token_use="access", leeway=0)
                claims = verify_token(token.strip(), self.public_keys, rules, now)
            except TokenInvalid:
                claims = None
        user = next((u for u in self.users.values() if claims and self.username_of(u) == claims.get("username")), None)
        if claims is None or user is None or self._revoked.get(str(claims.get("origin_jti")), now):
            return web.json_response(
                {"error": "invalid_token", "error_description": "the access token is invalid, expired or revoked"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"', **_TOKEN_HEADERS},  # RFC 6750 3.1
            )
        return web.json_response(
            {
                "sub": user.sub,
                **({"email_verified": str(user.email_verified).lower()} if user.email_verified is not None else {}),
                "email": user.email,  # Cognito's userInfo answers strings (email_verified "true")
                "username": self.username_of(user),
                **{name: str(value) for name, value in user.attributes},
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
        response = _redirect(logout_uri)
        response.del_cookie(MANAGED_LOGIN_COOKIE, path=MANAGED_LOGIN_PATH)  # Cognito's own session ends
        return response


IDP_KEY = web.AppKey("authproxy_dev_idp", DevIdp)


def create_app(issuer: str, clients: Iterable[Client], **options: Any) -> web.Application:
    """The provider as an aiohttp application; ``app[IDP_KEY]`` is its ``DevIdp``.

    ``options``: access_token_lifetime, id_token_lifetime, refresh_token_lifetime, users, clock,
    domain, updated_issuer, issuer_format (see ``DevIdp``; with ``domain``, the issuer's
    origin is ``DevIdp.issuer_app()``).
    """
    return DevIdp(issuer, clients, **options).app()
