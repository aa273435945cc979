"""Who passes a route, and as whom: the per-route auth mode, then the allow rules.

    public           anyone; no identity
    optional         the session's identity when there is one; anyone otherwise
    login            a browser session (redirect to sign in, or 401 for API clients)
    bearer           an access token in Authorization (RFC 6750 2.1), checked against the JWKS
    login_or_bearer  a bearer token when the request carries one, else a session

The same evaluation answers proxied requests and forward-auth subrequests
(``/oauth2/auth``), so nginx or Traefik in front get exactly the proxy's decisions.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from authproxy import metrics
from authproxy.config.schema import Config, OidcConfig
from authproxy.errors import IdpError, RefreshUnavailable, TokenInvalid
from authproxy.logs import log
from authproxy.policy.inject import UNSAFE, groups_of
from authproxy.policy.routes import Route
from authproxy.proxy.pages import error_response
from authproxy.store.base import StoreUnavailable

if TYPE_CHECKING:  # joserfc and cryptography load only when a provider is configured
    from authproxy.oidc.service_tokens import ServiceTokens
    from authproxy.oidc.verify import TokenRules
    from authproxy.policy.assertion import AssertionSigner
    from authproxy.session.store import Session
    from authproxy.web.provider import ProviderLink
    from authproxy.web.signin import SignIn

REALM = 'realm="authproxy"'


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the request is from, as the proxy verified it."""

    sub: str
    claims: Mapping[str, Any]  # the ID token's for sessions, the access token's for bearer requests
    access_token: str | None
    id_token: str | None
    via: str  # metrics.AUTH_SESSION or metrics.AUTH_BEARER


@dataclass(slots=True)
class Verdict:
    outcome: str | None  # for authproxy_auth_total; None for CORS preflights (not an auth decision)
    identity: Identity | None = None
    response: web.Response | None = None  # answer with this instead of forwarding
    reason: str | None = None  # why a request was refused: a short code for the access log


def bearer_token(authorization: str | None) -> str | None:
    """The token of ``Authorization: Bearer <token>`` (the scheme is case-insensitive,
    RFC 9110 11.1), or None when the header is absent or another scheme."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


def bearer_rules(oidc: OidcConfig) -> TokenRules:
    """What an API client's access token must say (RFC 9068 4; Cognito's access token)."""
    from authproxy.oidc.verify import TokenRules

    if oidc.provider == "cognito":
        # Cognito access tokens carry client_id and token_use, not aud.
        return TokenRules(
            issuer=oidc.issuer,
            client_ids=frozenset(oidc.allowed_client_ids or [oidc.client_id]),
            token_use="access",
        )
    return TokenRules(
        issuer=oidc.issuer,
        audiences=frozenset(oidc.audiences),
        token_type="at+jwt" if oidc.require_at_jwt else None,
    )


class Gate:
    def __init__(
        self,
        config: Config,
        provider: ProviderLink | None,
        sign_in: SignIn | None,
        service_tokens: ServiceTokens | None,
        signer: AssertionSigner | None,
    ):
        self.provider = provider
        self.sign_in = sign_in
        self.service_tokens = service_tokens
        self.signer = signer
        self.rules = bearer_rules(config.oidc) if config.oidc is not None else None
        self.groups_claim = config.oidc.effective_groups_claim if config.oidc is not None else "groups"
        self.sign_out_path = f"{config.proxy_prefix}/sign_out"  # offered on the 403 page, to try another account

    async def evaluate(
        self,
        request: web.BaseRequest,
        route: Route,
        *,
        host: str,
        scheme: str,
        path_qs: str,
        request_id: str,
        preflight: bool,
        redirect: bool = True,
        method: str | None = None,
    ) -> Verdict:
        """``method``: the original request's, when ``request`` describes another (forward-auth)."""
        mode = route.auth
        if mode == "public":
            return Verdict(metrics.AUTH_PUBLIC)
        if preflight:
            return Verdict(None)  # a CORS preflight carries no credentials (Fetch standard)
        token = None
        if mode in ("bearer", "login_or_bearer"):
            authorizations = request.headers.getall("Authorization", ())
            if len(authorizations) > 1:
                # Which one an upstream would read is anyone's guess: never forward a second, unchecked one.
                response = error_response(400, "bad_request", "more than one Authorization header", request_id,
                                          accept="application/json")
                return Verdict(metrics.AUTH_UNAUTHORIZED, None, response, "several_authorization_headers")
            token = bearer_token(authorizations[0]) if authorizations else None
        if mode == "bearer" or token is not None:
            verdict = await self._bearer(token, request_id)
        elif mode == "optional":
            verdict = await self._optional(request, route, request_id)
        else:
            verdict = await self._session(request, route, host, scheme, path_qs, request_id, redirect, method)
        if verdict.identity is not None and route.allow is not None:
            denial = route.allow.check(verdict.identity.claims)
            if denial is not None:
                headers = {}
                if denial.missing_scopes:  # RFC 6750 3.1
                    headers["WWW-Authenticate"] = (
                        f'Bearer {REALM}, error="insufficient_scope", scope="{" ".join(denial.missing_scopes)}"'
                    )
                accept = "application/json" if verdict.identity.via == metrics.AUTH_BEARER else request.headers.get("Accept")
                response = error_response(403, "forbidden", f"access denied: {denial.reason}", request_id,
                                          accept=accept, headers=headers, signed_in_as=display_name(verdict.identity),
                                          links=[("Sign out, to use another account", self.sign_out_path)])
                return Verdict(metrics.AUTH_FORBIDDEN, verdict.identity, response, "allow_rules")
        return verdict

    async def _bearer(self, token: str | None, request_id: str) -> Verdict:
        accept = "application/json"  # API clients: the answer is JSON whatever they accept (RFC 6750 3)
        if token is None:
            # RFC 6750 3.1: no error code when the request had no authentication at all.
            return Verdict(metrics.AUTH_UNAUTHORIZED, None, _unauthorized(request_id, accept, f"Bearer {REALM}",
                           "a bearer access token is required"), "no_token")
        client = self.provider.client if self.provider is not None else None
        if client is None or self.rules is None:
            return Verdict(None, None, error_response(503, "not_ready", "token checks are not available yet", request_id,
                                                      accept=accept, headers={"Retry-After": "5"}), "not_ready")
        try:
            claims = await client.verify(token, self.rules, int(time.time()))
        except TokenInvalid as exc:
            challenge = f'Bearer {REALM}, error="invalid_token", error_description="{exc.reason}"'
            return Verdict(metrics.AUTH_UNAUTHORIZED, None,
                           _unauthorized(request_id, accept, challenge, f"the access token is not valid ({exc.reason})"),
                           exc.reason)
        except IdpError:
            return Verdict(None, None, error_response(503, "idp_unavailable", "token checks are not available right now",
                                                      request_id, accept=accept, headers={"Retry-After": "5"}), "jwks")
        sub = claims.get("sub")
        identity = Identity(str(sub) if sub is not None else "", claims, token, None, metrics.AUTH_BEARER)
        return Verdict(metrics.AUTH_BEARER, identity)

    async def _session(
        self, request: web.BaseRequest, route: Route, host: str, scheme: str, path_qs: str, request_id: str,
        redirect: bool, method: str | None,
    ) -> Verdict:
        sign_in = self.sign_in
        assert sign_in is not None  # config: session modes need sign-in
        session = await sign_in.session_for_route(request, int(time.time()), request_id, route.injects_id_token)
        if session is None:
            if redirect:
                response = sign_in.unauthenticated(request, host, scheme, path_qs, request_id, method)
            else:  # forward-auth: the proxy in front turns 401 into the sign-in redirect
                response = _unauthorized(request_id, request.headers.get("Accept"), f"Bearer {REALM}", "sign-in required")
            outcome = metrics.AUTH_REDIRECTED if response.status == 302 else metrics.AUTH_UNAUTHORIZED
            return Verdict(outcome, None, response, "no_session")
        return Verdict(metrics.AUTH_SESSION, session_identity(session))

    async def _optional(self, request: web.BaseRequest, route: Route, request_id: str) -> Verdict:
        sign_in = self.sign_in
        assert sign_in is not None
        try:
            session = await sign_in.session_for_route(request, int(time.time()), request_id, route.injects_id_token)
        except (StoreUnavailable, RefreshUnavailable):
            # Anonymous access is allowed here, so an outage degrades to it rather than to 503.
            log().warning("optional_identity_unavailable", extra={"fields": {"request_id": request_id, "route": route.name}})
            session = None
        if session is None:
            return Verdict(metrics.AUTH_PUBLIC)
        return Verdict(metrics.AUTH_SESSION, session_identity(session))

    async def identity_headers(self, route: Route, identity: Identity | None, request_id: str) -> list[tuple[str, str]]:
        """The headers the route adds: its templates, and the assertion."""
        headers: list[tuple[str, str]] = []
        if route.injections:
            values: dict[str, Any] = {}
            claims: Mapping[str, Any] = {}
            if identity is not None:
                claims = identity.claims
                values = {"access_token": identity.access_token, "id_token": identity.id_token,
                          "sub": identity.sub, "email": claims.get("email")}
            for name, template in route.injections:
                if "service_token" in template.uses and route.service_token is not None and self.service_tokens is not None:
                    values["service_token"] = await self.service_tokens.token(route.service_token)
                value = template.render(values, claims)
                if value is UNSAFE:
                    log().warning("injection_dropped",
                                  extra={"fields": {"request_id": request_id, "route": route.name, "header": name}})
                elif value is not None:
                    headers.append((name, value))
        if route.assertion and identity is not None and self.signer is not None:
            email = identity.claims.get("email")
            assertion = self.signer.sign(route.name, identity.sub, email if isinstance(email, str) else None,
                                         groups_of(identity.claims, self.groups_claim), int(time.time()))
            headers.append(("X-Authproxy-Assertion", assertion))
        return headers


def display_name(identity: Identity) -> str:
    """Who a person is signed in as, in their own words: email, else a username, else sub."""
    for claim in ("email", "preferred_username", "cognito:username", "username", "name"):
        value = identity.claims.get(claim)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return identity.sub


def session_identity(session: Session) -> Identity:
    return Identity(session.sub, session.claims, session.access_token, session.id_token, metrics.AUTH_SESSION)


def _unauthorized(request_id: str, accept: str | None, challenge: str, message: str) -> web.Response:
    return error_response(401, "unauthorized", message, request_id, accept=accept, headers={"WWW-Authenticate": challenge})
