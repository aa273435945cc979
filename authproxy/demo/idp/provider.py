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

from authproxy.demo.idp.authorize import _AuthorizeEndpoint
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
