"""The edge of the auth decision: gather the facts, and carry out an ``Allow``'s plan.

``Gate.identify`` finds who a request is from (the session, or the bearer token checked
against the JWKS) and what else the decision depends on; ``policy.decide`` decides
(pure); ``Gate.identity_headers`` carries out the route's injection plan (templates, the
service token, the signed assertion). web/render.py answers refusals. The same steps
answer proxied requests and forward-auth checks, so nginx, Traefik or Envoy in front get
exactly the proxy's decisions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aiohttp import web

from authproxy.config.schema import Config, OidcConfig
from authproxy.errors import IdpError, RefreshUnavailable, TokenInvalid
from authproxy.logs import log
from authproxy.policy.decide import (  # noqa: F401 - Identity and REALM re-exported
    AMBIGUOUS,
    BEARER,
    INVALID,
    KEYS_UNAVAILABLE,
    NOT_READY,
    NOTHING_ELSE,
    PREFLIGHT,
    REALM,
    SESSION,
    Facts,
    Identity,
    uses_bearer,
)
from authproxy.policy.inject import UNSAFE, groups_of
from authproxy.policy.routes import Route
from authproxy.proxy.pages import wants_html
from authproxy.store.base import StoreUnavailable

if TYPE_CHECKING:  # joserfc and cryptography load only when a provider is configured
    from authproxy.oidc.service_tokens import ServiceTokens
    from authproxy.oidc.verify import TokenRules
    from authproxy.policy.assertion import AssertionSigner
    from authproxy.session.store import Session
    from authproxy.web.provider import ProviderLink
    from authproxy.web.signin import SignIn

Clock = Callable[[], float]  # seconds since the epoch; time.time in production, movable in tests

_SEVERAL = Facts(problem=AMBIGUOUS)
_NOT_READY = Facts(problem=NOT_READY)
_KEYS_UNAVAILABLE = Facts(problem=KEYS_UNAVAILABLE)
_NAVIGATIONS = frozenset({"GET", "HEAD"})


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
    """Everything the auth decision's edge needs, built once per configuration."""

    def __init__(
        self,
        config: Config,
        provider: ProviderLink | None,
        sign_in: SignIn | None,
        service_tokens: ServiceTokens | None,
        signer: AssertionSigner | None,
        clock: Clock = time.time,
    ):
        self.provider = provider
        self.sign_in = sign_in
        self.service_tokens = service_tokens
        self.signer = signer
        self.clock = clock
        self.rules = bearer_rules(config.oidc) if config.oidc is not None else None
        self.groups_claim = config.oidc.effective_groups_claim if config.oidc is not None else "groups"
        self.sign_out_path = f"{config.proxy_prefix}/sign_out"  # offered on the 403 page, to try another account
        self.sign_in_path = f"{config.proxy_prefix}/start?" + urlencode({"rd": "/"})  # offered on the 401 page

    async def identify(
        self,
        request: web.BaseRequest,
        route: Route,
        request_id: str,
        *,
        preflight: bool = False,
        redirect: bool = True,
        method: str | None = None,
    ) -> tuple[Identity | None, Facts]:
        """Who ``request`` is from on ``route`` (None: nobody, or no valid credentials), and
        the other facts ``decide`` needs. ``method``: the original request's, when ``request``
        describes another (forward-auth). Raises ``StoreUnavailable`` or
        ``RefreshUnavailable`` when a session cannot be checked (answered 503)."""
        mode = route.auth
        if mode == "public":
            return None, NOTHING_ELSE
        if preflight:
            return None, PREFLIGHT
        token = None
        if mode == "bearer" or mode == "login_or_bearer":
            authorizations = request.headers.getall("Authorization", ())
            if len(authorizations) > 1:
                return None, _SEVERAL
            token = bearer_token(authorizations[0]) if authorizations else None
        if uses_bearer(mode, token is not None):
            return await self._bearer(token)
        sign_in = self.sign_in
        assert sign_in is not None  # config: session modes need sign-in
        now = int(self.clock())
        if mode == "optional":
            try:
                session = await sign_in.session_for_route(request, now, request_id, route.injects_id_token)
            except (StoreUnavailable, RefreshUnavailable):
                # Anonymous access is allowed here, so an outage degrades to it rather than to 503.
                log().warning("optional_identity_unavailable",
                              extra={"fields": {"request_id": request_id, "route": route.name}})
                session = None
        else:
            session = await sign_in.session_for_route(request, now, request_id, route.injects_id_token)
        if session is None:
            navigation = (method or request.method) in _NAVIGATIONS and wants_html(request.headers.get("Accept"))
            return None, Facts(navigation=navigation, redirect=redirect)
        return session_identity(session), NOTHING_ELSE

    async def _bearer(self, token: str | None) -> tuple[Identity | None, Facts]:
        if token is None:
            return None, NOTHING_ELSE
        client = self.provider.client if self.provider is not None else None
        if client is None or self.rules is None:
            return None, _NOT_READY
        try:
            claims = await client.verify(token, self.rules, int(self.clock()))
        except TokenInvalid as exc:
            return None, Facts(problem=INVALID, detail=exc.reason)
        except IdpError:
            return None, _KEYS_UNAVAILABLE
        sub = claims.get("sub")
        return Identity(str(sub) if sub is not None else "", claims, token, None, BEARER), NOTHING_ELSE

    def sign_in_location(self, host: str, scheme: str, path_qs: str) -> str:
        assert self.sign_in is not None
        return self.sign_in.start_location(host, scheme, path_qs)

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
                                         groups_of(identity.claims, self.groups_claim), int(self.clock()))
            headers.append(("X-Authproxy-Assertion", assertion))
        return headers


def session_identity(session: Session) -> Identity:
    return Identity(session.sub, session.claims, session.access_token, session.id_token, SESSION)
