"""The edge of the auth decision: gather the facts, and carry out an ``Allow``'s plan.

``Gate.identify`` finds who a request is from (the session, or the bearer token checked
against the JWKS of the issuer its ``iss`` names, among those the route accepts: see
oidc/issuers.py) and what else the decision depends on; ``policy.decide`` decides
(pure); ``Gate.identity_headers`` carries out the route's injection plan (templates, the
service token, the signed assertion). web/render.py answers refusals. The same steps
answer proxied requests and forward-auth checks, so nginx, Traefik or Envoy in front get
exactly the proxy's decisions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aiohttp import web

from authproxy import metrics
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
    session_identity,
    uses_bearer,
)
from authproxy.policy.inject import UNSAFE, groups_of
from authproxy.policy.routes import Route
from authproxy.proxy.pages import wants_html
from authproxy.store.base import StoreUnavailable

if TYPE_CHECKING:  # joserfc and cryptography load only when a provider is configured
    from authproxy.oidc.issuers import Issuer
    from authproxy.oidc.service_tokens import ServiceTokens
    from authproxy.oidc.token_cache import VerifiedTokenCache
    from authproxy.oidc.verify import TokenRules
    from authproxy.policy.assertion import AssertionSigner
    from authproxy.web.provider import IssuerKeys
    from authproxy.web.signin import SignIn

Clock = Callable[[], float]  # seconds since the epoch; time.time in production, movable in tests

_SEVERAL = Facts(problem=AMBIGUOUS)
_NOT_READY = Facts(problem=NOT_READY)
_KEYS_UNAVAILABLE = Facts(problem=KEYS_UNAVAILABLE)
# RFC 6750 3.1 invalid_token: the token names an issuer the route does not accept (or none)
_WRONG_ISSUER = Facts(problem=INVALID, detail="wrong_issuer")
_NAVIGATIONS = frozenset({"GET", "HEAD"})
BLOCKS_LIMIT = 1024  # sessions whose rendered identity headers are kept (Gate.rendered_headers)


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
    """What an API client's access token from the oidc provider must say (oidc/issuers.py)."""
    from authproxy.oidc.issuers import bearer_rules as rules_of

    return rules_of(oidc)


class Gate:
    """Everything the auth decision's edge needs, built once per configuration."""

    def __init__(
        self,
        config: Config,
        provider: IssuerKeys | None,  # a ProviderLink with an oidc section
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
        self.groups_claim = config.oidc.effective_groups_claim if config.oidc is not None else "groups"
        # Bearer issuers by name, and per set of names a route accepts, iss -> issuer: the
        # request path only looks up (oidc/issuers.py).
        self.issuers: dict[str, Issuer] = {}
        self._tables: dict[frozenset[str], dict[str, Issuer]] = {}
        self.verified: VerifiedTokenCache | None = None
        if provider is not None:
            from authproxy.config.schema import route_issuers
            from authproxy.oidc.issuers import choose, compile_issuers, table_for
            from authproxy.oidc.token_cache import VerifiedTokenCache, token_key
            from authproxy.oidc.verify import ALLOWED_ALGORITHMS, check_header, check_times

            # Bound here, not imported per request: joserfc loads only with a provider.
            self._choose, self._table_for, self._token_key = choose, table_for, token_key
            self._check_times, self._check_header, self._algorithms = check_times, check_header, ALLOWED_ALGORITHMS
            self.issuers = compile_issuers(config, provider.provider_keys, provider.remote_keys)
            for route in config.routes:
                names = frozenset(route_issuers(route))
                if names not in self._tables:
                    self._tables[names] = table_for(self.issuers, names)
            cache = config.verified_tokens
            if cache.max_entries and cache.max_age:
                self.verified = VerifiedTokenCache(cache.max_entries, cache.max_age, metrics.VERIFIED_TOKENS)
        self.sign_out_path = f"{config.proxy_prefix}/sign_out"  # offered on the 403 page, to try another account
        self.sign_in_path = f"{config.proxy_prefix}/start?" + urlencode({"rd": "/"})  # offered on the 401 page
        # Rendered injections per (route, access token, ID token) of a session, with the claims
        # object and sub they came from (see rendered_headers). Per Gate, so per configuration:
        # a reload builds a new Gate and new Route objects, and nothing rendered under the old
        # templates is found again. Bounded below the session cache (each block holds its own
        # copy of "Bearer <access token>", ~1 KiB: issue 15's RSS budget), oldest first out:
        # the sessions in use now keep theirs, the rest render again when they come back.
        self._blocks: dict[tuple[Route, str | None, str | None], tuple[Mapping[str, Any], str, tuple[tuple[str, str], ...]]] = {}
        self._blocks_limit = min(config.store.cache.max_entries, BLOCKS_LIMIT)
        # The same for bearer identities from the verified token cache (see _bearer_block).
        self._claim_blocks: dict[tuple[Route, int], tuple[Mapping[str, Any], str, str, tuple[tuple[str, str], ...]]] = {}

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
            return await self._bearer(token, route)
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

    def known_identity(self, request: web.BaseRequest, route: Route) -> Identity | None:
        """``identify``'s answer without an await, when it is sure to be a session's
        identity that nothing needs doing for (SignIn.known_identity); None: call
        ``identify``. Only on routes where a session is the only credential looked at."""
        sign_in = self.sign_in
        if sign_in is None or (route.auth != "login" and route.auth != "optional"):
            return None
        return sign_in.known_identity(request.headers.get("Cookie"), route.injects_id_token)

    async def _bearer(self, token: str | None, route: Route) -> tuple[Identity | None, Facts]:
        """The identity of a bearer token on ``route``: the issuer is chosen by the token's
        ``iss`` among those the route accepts, before any signature work (an issuer it does
        not accept: ``wrong_issuer`` with no key fetched); a token verified before under the
        same issuer's rules comes from the cache (oidc/token_cache.py), its time claims
        holding still (exp by the entry's deadline, nbf and iat by its earliest moment)."""
        if token is None:
            return None, NOTHING_ELSE
        if self.provider is None:
            return None, _NOT_READY
        table = self._tables.get(route.bearer_issuers)
        if table is None:  # a route table compiled from another configuration than this gate's
            table = self._tables[route.bearer_issuers] = self._table_for(self.issuers, route.bearer_issuers)
        now = int(self.clock())
        cache = self.verified
        key = b""
        if cache is not None:
            key = self._token_key(token)
            entry = cache.get(key, now)
            if entry is not None and table.get(entry.iss) is entry.issuer:
                if now < entry.earliest:  # the clock went back before nbf/iat: refused as verification would
                    try:
                        self._check_times(entry.verified.claims, entry.issuer.rules, now)  # type: ignore[attr-defined]
                    except TokenInvalid as exc:
                        cache.discard(key)
                        cache.miss()
                        return None, Facts(problem=INVALID, detail=exc.reason)
                cache.hit()
                known = entry.value  # the identity without its token: the cache never holds one
                return Identity(known.sub, known.claims, token, None, BEARER, known.issuer, known.groups_claim), NOTHING_ELSE
            cache.miss()
        chosen = self._choose(table, token)
        if chosen is None:
            try:  # say "malformed" for what is no JWT at all (an opaque token), as before issuers were chosen
                self._check_header(token, self._algorithms)
            except TokenInvalid as exc:
                return None, Facts(problem=INVALID, detail=exc.reason)
            return None, _WRONG_ISSUER
        iss, issuer = chosen
        try:
            verified = await issuer.verify(token, iss, now)
        except TokenInvalid as exc:
            return None, Facts(problem=INVALID, detail=exc.reason)
        except IdpError:
            return None, _KEYS_UNAVAILABLE
        if verified is None:
            return None, _NOT_READY
        claims = verified.claims
        sub = claims.get("sub")
        identity = Identity(str(sub) if sub is not None else "", claims, token, None, BEARER, issuer.name,
                            issuer.groups_claim)
        if cache is not None:
            kept = Identity(identity.sub, claims, None, None, BEARER, issuer.name, issuer.groups_claim)
            cache.put(key, kept, issuer, iss, verified, issuer.rules.leeway, now)
        return identity, NOTHING_ELSE

    def sign_in_location(self, host: str, scheme: str, path_qs: str) -> str:
        assert self.sign_in is not None
        return self.sign_in.start_location(host, scheme, path_qs)

    def rendered_headers(
        self, route: Route, identity: Identity | None, request_id: str
    ) -> Sequence[tuple[str, str]] | None:
        """``identity_headers`` without an await when no service token is needed (None: await
        ``identity_headers``). A session's rendered templates are kept and given again while
        its access token, ID token, claims (the same object: a new ID token brings a new one,
        and so may a store read) and sub are those they were rendered from, so a refresh
        renders anew and two sessions never share a block. The assertion is signed every time."""
        if route.uses_service_token:
            return None  # the service token lives by its own expiry: rendered each time
        block: Sequence[tuple[str, str]] = ()
        if route.injections:
            if identity is None:
                block, _ = self._render(route, identity, request_id)
            elif identity.via != SESSION:
                block = self._bearer_block(route, identity, request_id)
            else:
                key = (route, identity.access_token, identity.id_token)
                kept = self._blocks.get(key)
                if kept is not None and kept[0] is identity.claims and kept[1] == identity.sub:
                    block = kept[2]
                else:
                    block, dropped = self._render(route, identity, request_id)
                    if not dropped:  # a dropped value is logged on every request, so rendered every time
                        self._keep(self._blocks, key, (identity.claims, identity.sub, block))
        if route.assertion and identity is not None and self.signer is not None:
            return [*block, self._assertion(route, identity)]
        return block

    def _bearer_block(self, route: Route, identity: Identity, request_id: str) -> Sequence[tuple[str, str]]:
        """A bearer identity's rendered templates, kept per (route, claims) while the verified
        token cache gives the same claims object for the same token (oidc/token_cache.py).
        Never for templates that name a token: the cache of verified tokens holds none, and
        neither does this. The kept value holds the claims object itself, so its id names
        nothing else while kept."""
        if route.injects_tokens or self.verified is None:  # without the cache, claims are new every time
            return self._render(route, identity, request_id)[0]
        key = (route, id(identity.claims))
        blocks = self._claim_blocks
        kept = blocks.get(key)
        if kept is not None and kept[0] is identity.claims and kept[1] == identity.sub and kept[2] == identity.issuer:
            return kept[3]
        block, dropped = self._render(route, identity, request_id)
        if not dropped:
            self._keep(blocks, key, (identity.claims, identity.sub, identity.issuer, block))
        return block

    def _keep(self, blocks: dict[Any, Any], key: Any, value: Any) -> None:
        """``blocks[key] = value``, the oldest entries out first beyond BLOCKS_LIMIT."""
        blocks.pop(key, None)
        while len(blocks) >= self._blocks_limit:
            del blocks[next(iter(blocks))]
        blocks[key] = value

    def _render(
        self, route: Route, identity: Identity | None, request_id: str, service_token: str | None = None
    ) -> tuple[tuple[tuple[str, str], ...], bool]:
        """The route's templates for ``identity``, and whether a value was dropped (it could
        not be a header value: logged)."""
        values: dict[str, Any] = {}
        claims: Mapping[str, Any] = {}
        if identity is not None:
            claims = identity.claims
            values = {"access_token": identity.access_token, "id_token": identity.id_token,
                      "sub": identity.sub, "email": claims.get("email"), "iss": claims.get("iss")}
        if service_token is not None:
            values["service_token"] = service_token
        headers: list[tuple[str, str]] = []
        dropped = False
        for name, template in route.injections:
            value = template.render(values, claims)
            if value is UNSAFE:
                dropped = True
                log().warning("injection_dropped",
                              extra={"fields": {"request_id": request_id, "route": route.name, "header": name}})
            elif value is not None:
                headers.append((name, value))
        return tuple(headers), dropped

    def _assertion(self, route: Route, identity: Identity) -> tuple[str, str]:
        assert self.signer is not None
        email = identity.claims.get("email")
        assertion = self.signer.sign(route.name, identity.sub, email if isinstance(email, str) else None,
                                     groups_of(identity.claims, identity.groups_claim or self.groups_claim),
                                     int(self.clock()))
        return "X-Authproxy-Assertion", assertion

    async def identity_headers(self, route: Route, identity: Identity | None, request_id: str) -> list[tuple[str, str]]:
        """The headers the route adds: its templates, and the assertion."""
        block = self.rendered_headers(route, identity, request_id)
        if block is not None:
            return list(block)
        # The templates name {service_token}: it is fetched (kept by its own expiry) and rendered each time.
        assert route.service_token is not None and self.service_tokens is not None
        service_token = await self.service_tokens.token(route.service_token)
        headers = list(self._render(route, identity, request_id, service_token)[0])
        if route.assertion and identity is not None and self.signer is not None:
            headers.append(self._assertion(route, identity))
        return headers
