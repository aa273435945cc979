"""The proxy listener's request handler: resolve, decide, forward, log, count.

It runs under aiohttp's low-level server (no router): the compiled route table is
the only dispatch, and everything it needs was built at start-up. A request follows
ARCHITECTURE.md's edge: ``resolve`` (web/resolve.py) names its target, ``Gate.identify``
gathers who it is from, ``decide`` (policy/decide.py) decides, ``Gate.identity_headers``
carries out the injection plan, and refusals and errors are answered by web/render.py.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.http import HttpVersion11

from authproxy import metrics
from authproxy.config.schema import Config, serves_own_endpoints
from authproxy.errors import (
    AuthproxyError,
    BadRequest,
    ClientGone,
    ExpectationFailed,
    PayloadTooLarge,
    RequestRejected,
    RouteNotFound,
    UpstreamError,
)
from authproxy.logs import AccessLog, loggable_path
from authproxy.policy.decide import (
    NOTHING_ELSE, REALM, Allow, Decision, Identity, Unauthorized, decide, decide_upgrade,
)
from authproxy.policy.inject import SpoofGuard, groups_of, render_safe
from authproxy.policy.original import OriginalRequest
from authproxy.policy.original import describe as describe_original
from authproxy.policy.paths import split_target
from authproxy.policy.routes import Route, RouteTable, request_host, valid_host_header
from authproxy.proxy.forward import Forwarder, RequestBody, UpstreamFailedEarly
from authproxy.proxy.headers import (
    TrustedProxies,
    client_address,
    effective_host,
    effective_scheme,
    request_id_from,
    upstream_request_headers,
)
from authproxy.proxy.pages import error_response
from authproxy.proxy.websocket import SessionWatch, WebSocketRelay, is_websocket_upgrade, origin_allowed
from authproxy.session.cookies import SessionTicket, request_cookies, without_own_cookies
from authproxy.web.express import ExpressRequest, ExpressSent, HandOff
from authproxy.web.gate import Gate, session_identity
from authproxy.web.render import answer, answers, error_answer, log_upstream_error
from authproxy.web.resolve import Target, resolve

if TYPE_CHECKING:  # sign-in (joserfc, cryptography) is imported only when configured
    from multidict import CIMultiDict, CIMultiDictProxy

    from authproxy.policy.assertion import AssertionSigner
    from authproxy.web.signin import SignIn

ENVOY_ENDPOINT = "envoy"  # {proxy_prefix}/envoy/<original path>: Envoy's ext_authz path_prefix
SIGN_IN_ROUTE = "(sign-in)"  # route label for the proxy's own endpoints under proxy_prefix
JWKS_PATH = "/.well-known/authproxy/jwks.json"  # the assertion's public keys
CLIENT_CLOSED = 499  # nginx's convention for "client closed the request" in logs and metrics
# Forward-auth for a caller that may not describe another request: only "are you signed in".
_NOT_SIGNED_IN = Unauthorized(f"Bearer {REALM}", "sign-in required", "no_session", api=True)


class Rules:
    """Everything a configuration reload may change, compiled once; a request reads the
    current ``Rules`` when it starts and keeps it, so it finishes under the rules it
    started with while a reload swaps in the next."""

    __slots__ = ("config", "routes", "guard", "strip", "trusted", "forward_auth_callers", "gate", "own_endpoints")

    def __init__(self, config: Config, gate: Gate):
        self.config = config
        self.routes = RouteTable(config.routes, gate.groups_claim)
        # Identity headers only the proxy may set: whatever a client sends under these
        # names (any case, "_" for "-") never reaches an upstream, on any route.
        guard = SpoofGuard(name for route in self.routes.routes for name, _ in route.injections)
        self.guard = guard
        # Asked for every header of every request: the answer per name is kept (a client's
        # names are few and repeat; the bound keeps a client inventing names from growing it).
        self.strip = {route: functools.lru_cache(maxsize=1024)(functools.partial(
                          guard.strips, pass_authorization=route.pass_authorization,
                          allow_method_override=route.allow_method_override))
                      for route in self.routes.routes}
        self.trusted = TrustedProxies(config.trusted_proxies)
        self.forward_auth_callers = TrustedProxies(config.forward_auth.callers)
        self.gate = gate
        self.own_endpoints = serves_own_endpoints(config)  # {proxy_prefix}/: forward-auth, Envoy, sign-in


class _Exchange:
    """What the metrics and the access log say of one request, filled in as it is served."""

    __slots__ = ("path", "query", "route", "user", "status", "status_if_cut", "upstream_status", "refusal")

    def __init__(self, raw_path: str):
        self.path = raw_path  # the normalised path once resolved
        self.query = ""
        self.route: str | None = None
        self.user: str | None = None  # the identity's sub
        self.status = 500  # what the client got (a bug that escapes is answered 500 by the listener)
        self.status_if_cut = CLIENT_CLOSED  # what the log says when the connection ends mid-answer
        self.upstream_status: int | None = None
        self.refusal: str | None = None  # why the proxy refused, when it did


class ProxyHandler:
    """Handles every request on the proxy listener. With tracing configured, server.py serves
    with ``authproxy.tracing.handler.TracedProxyHandler``, a subclass wrapping ``_serve``,
    ``_forward`` and ``_websocket`` in spans (so this class has no tracing code): a change to
    their signatures needs the same change there (tests/integration/test_tracing.py)."""

    def __init__(self, rules: Rules, forwarder: Forwarder, access_log: AccessLog, sign_in: SignIn | None = None):
        config = rules.config
        self.rules = rules
        self.sign_in = sign_in
        self.own_prefix = config.proxy_prefix + "/"
        self.forwarder = forwarder
        self.access_log = access_log
        self.idle_timeout = config.limits.client_idle_timeout
        self.stats = metrics.STATS

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        """The whole exchange: ``_serve`` answers; errors that end the request are rendered
        here, once; the metrics and the access log are written whatever happened."""
        started = time.perf_counter()
        request_id = request_id_from(request.headers)
        rules = self.rules  # this request keeps these rules, even if a reload swaps them
        exchange = _Exchange(request.raw_path)
        stats = self.stats
        stats.in_flight += 1
        try:
            try:
                response = await self._serve(request, rules, request_id, exchange)
            except ClientGone:
                raise  # control flow, not an answer: handled below
            except AuthproxyError as exc:
                if not answers(exc):
                    raise  # not an answer of its own: a bug, answered 500 by the listener
                response = error_answer(exc, request_id, request.headers.get("Accept"), exchange.route)
            exchange.status = response.status
            return response
        except ClientGone:
            exchange.status = exchange.status_if_cut
            if request.__class__ is ExpressRequest:
                return ExpressSent(exchange.status, cut=True)  # type: ignore[return-value]
            return web.Response(status=exchange.status)  # never reaches the client: its connection is gone
        except HandOff:  # to aiohttp's lane, which serves this request from its start: not counted here
            exchange = None  # type: ignore[assignment]
            raise
        finally:
            stats.in_flight -= 1
            if exchange is not None:  # None only after HandOff, which propagates
                elapsed = time.perf_counter() - started
                stats.request(exchange.route or metrics.NO_ROUTE, request.method, exchange.status, elapsed)
                if self.access_log.enabled:
                    self._log(request, rules, request_id, exchange, elapsed)

    async def _serve(
        self, request: web.BaseRequest, rules: Rules, request_id: str, exchange: _Exchange
    ) -> web.StreamResponse:
        """resolve -> identify -> decide -> the upstream's request -> forward (or relay a WebSocket)."""
        headers = request.headers
        peer = request.remote or ""
        peer_trusted = rules.trusted.contains(peer)
        path, query = split_target(request.raw_path)
        exchange.path, exchange.query = path, query
        host_header = effective_host(headers, peer_trusted)
        target = resolve(rules.routes, request.method, host_header, path, query)
        exchange.path = path = target.path
        if path == JWKS_PATH and rules.gate.signer is not None:
            if request.__class__ is ExpressRequest:
                raise HandOff()
            exchange.route = SIGN_IN_ROUTE
            return _jwks_response(rules.gate.signer)
        if rules.own_endpoints and path.startswith(self.own_prefix):
            endpoint = path[len(self.own_prefix):]
            if request.__class__ is ExpressRequest and not _is_check(endpoint):
                raise HandOff()  # sign-in reads forms and more of aiohttp's request; checks do not
            exchange.route = SIGN_IN_ROUTE
            return await self._own_endpoint(request, rules, peer, request_id, endpoint)
        route = target.route
        if route is None:
            raise RouteNotFound("no route matches this request")
        exchange.route = route.name
        if target.slash_refused:
            raise BadRequest("encoded slashes (%2F, %5C) are not allowed on this route")
        scheme = effective_scheme(headers, peer_trusted, request.scheme)
        identity: Identity | None = None
        preflight = False
        if route.auth == "public":  # decide()'s answer for public routes, without a coroutine
            self.stats.authenticated(route.name, metrics.AUTH_PUBLIC)
        else:
            preflight = route.skip_auth_preflight and _is_cors_preflight(request)
            # A signed-in request whose session is cached with nothing to do: no await.
            identity = rules.gate.known_identity(request, route) if not preflight else None
            if identity is not None:
                facts = NOTHING_ELSE
            else:
                identity, facts = await rules.gate.identify(request, route, request_id, preflight=preflight)
            if identity is not None:
                exchange.user = identity.sub
            decision = decide(route, identity, facts)
            if decision.outcome is not None:
                self.stats.authenticated(route.name, decision.outcome)
            if decision.__class__ is not Allow:
                exchange.refusal = decision.reason
                return self._refusal(decision, rules.gate, request_id, headers.get("Accept"), target, scheme)
        length = request.content_length
        if route.max_body is not None and length is not None and length > route.max_body:
            raise PayloadTooLarge(f"request body exceeds this route's limit of {route.max_body} bytes")

        sign_in = self.sign_in
        upstream_headers = upstream_request_headers(
            headers,
            peer=peer,
            peer_trusted=peer_trusted,
            scheme=scheme,
            host_header=host_header,
            upstream_host=None if route.preserve_host else route.upstream.host_header,
            request_id=request_id,
            strip=rules.strip[route],
            # The proxy's own cookies are for the proxy: an upstream never sees them.
            cookies=sign_in.cookie_memo.for_upstream if sign_in is not None else None,
        )
        if (route.injections or route.assertion) and not preflight:
            # A session's rendered block is kept (Gate.rendered_headers); an await only for a service token.
            block = rules.gate.rendered_headers(route, identity, request_id)
            if block is None:
                block = await rules.gate.identity_headers(route, identity, request_id)
            for name, value in block:
                upstream_headers[name] = value
        upstream_path = route.upstream_path(path, target.matched)
        if request.__class__ is not ExpressRequest and is_websocket_upgrade(request):  # the lane never upgrades
            return await self._websocket(request, rules, route, target, identity, upstream_headers, upstream_path,
                                         request_id, exchange)
        return await self._forward(request, route, upstream_path + "?" + query if query else upstream_path,
                                   upstream_headers, preflight, request_id, exchange)

    async def _forward(
        self, request: web.BaseRequest, route: Route, upstream_target: str, upstream_headers: CIMultiDict[str],
        preflight: bool, request_id: str, exchange: _Exchange,
    ) -> web.StreamResponse:
        """Send the request on and stream the answer back. Once the answer's head is sent,
        the only honest signal of a failure is to cut the connection."""
        body = None
        if preflight:  # a preflight has no body to pass on, whatever the client sent
            upstream_headers.popall("Content-Length", None)
        elif request.body_exists:
            await self._answer_expect(request)
            body = RequestBody(request.content, route.max_body, self.idle_timeout)
        sent = time.perf_counter()
        # The client leaving during its upload raises ClientBodyFailed, a ClientGone.
        upstream = await self.forwarder.send(request, route, upstream_target, upstream_headers, body)
        self.stats.upstream(route.name, time.perf_counter() - sent)
        exchange.upstream_status = upstream.status
        try:
            if request.__class__ is ExpressRequest:
                return await request.relay(upstream, request_id)  # type: ignore[attr-defined, no-any-return]
            return await self.forwarder.relay(request, upstream, request_id)
        except UpstreamFailedEarly as failed:
            # Nothing sent yet: answered with an error page. When the client's own body
            # failed first (too large, stalled, gone), that is the answer.
            cause = upstream.body_error
            if isinstance(cause, RequestRejected):
                raise cause from None
            if cause is not None:
                raise ClientGone() from None
            raise failed.error from None
        except ClientGone:
            upstream.close()
            raise
        except UpstreamError as exc:
            cause = upstream.body_error
            if cause is not None:  # the client's body failed, not the upstream
                exchange.status_if_cut = getattr(cause, "status", CLIENT_CLOSED)
            else:
                exchange.status_if_cut = exc.status
                metrics.UPSTREAM_ERRORS.labels(route.name, exc.kind).inc()
                log_upstream_error(request_id, route.name, exc, after_headers=True)
            upstream.close()
            if request.transport is not None:
                request.transport.abort()
            raise ClientGone() from None
        finally:
            if upstream.uploading:  # the upstream answered before the body was all sent
                await upstream.stop_upload()
            upstream.release()

    async def _websocket(
        self, request: web.BaseRequest, rules: Rules, route: Route, target: Target, identity: Identity | None,
        upstream_headers: CIMultiDict[str], upstream_path: str, request_id: str, exchange: _Exchange,
    ) -> web.StreamResponse:
        """Relay a WebSocket upgrade the route allowed; on routes with sessions, only from
        our own pages, and closed once the session ends."""
        headers = request.headers
        sign_in = self.sign_in
        watch = None
        if sign_in is not None:
            same_site = origin_allowed(headers.get("Origin"), route.config.websocket_origins,
                                       request_host(target.host_header), sign_in.redirects.is_own_host)
            refusal = decide_upgrade(route, same_site)
            if refusal is not None:
                exchange.refusal = refusal.reason
                return self._refusal(refusal, rules.gate, request_id, headers.get("Accept"), target, "")
            ticket = SessionTicket.parse(request_cookies(headers.get("Cookie")).get(sign_in.cookies.session_name))
            if identity is not None and identity.via == metrics.AUTH_SESSION and ticket is not None:
                # Closed (1008) once the session ends: checked every half cache TTL.
                watch = SessionWatch(sign_in.sessions, ticket, rules.config.store.cache.ttl / 2)
        relay = WebSocketRelay(self.forwarder.session, route.max_body, route.connect_timeout + route.read_timeout, watch)
        url = self.forwarder.websocket_url(route, upstream_path, target.query)
        response = await relay.run(request, url, upstream_headers, request_id)
        exchange.upstream_status = relay.upstream_status
        return response

    def _log(self, request: web.BaseRequest, rules: Rules, request_id: str, exchange: _Exchange, elapsed: float) -> None:
        peer = request.remote or ""
        trusted = rules.trusted
        self.access_log.write(
            request_id=request_id,
            method=request.method,
            path=loggable_path(exchange.path, exchange.query) if exchange.query else exchange.path,
            route=exchange.route,
            status=exchange.status,
            upstream_status=exchange.upstream_status,
            duration=elapsed,
            # with no trusted proxies the peer is the client: no X-Forwarded-For to read
            client=client_address(peer, request.headers.getall("X-Forwarded-For", ()), trusted)
            if trusted.networks else peer,
            user=exchange.user,
            refusal=exchange.refusal,
            idle=self.stats.in_flight == 0,  # nothing else in flight: the line leaves with this loop pass
        )

    async def _own_endpoint(
        self, request: web.BaseRequest, rules: Rules, peer: str, request_id: str, endpoint: str
    ) -> web.StreamResponse:
        """The proxy's own endpoints under ``proxy_prefix``: forward-auth, Envoy's checks, sign-in."""
        if endpoint == "auth":
            return await self._forward_auth(request, rules, peer, request_id)
        if _is_envoy_check(endpoint):
            return await self._envoy_check(request, rules, peer, request_id)
        if self.sign_in is not None:
            return await self.sign_in.handle(request, endpoint, request_id)
        raise RouteNotFound("no such endpoint")

    def _refusal(
        self, decision: Decision, gate: Gate, request_id: str, accept: str | None, target: Target, scheme: str
    ) -> web.Response:
        return answer(decision, request_id, accept,
                      sign_in_location=lambda: gate.sign_in_location(target.host_header, scheme, target.path_qs),
                      sign_in_path=gate.sign_in_path, sign_out_path=gate.sign_out_path)

    async def _forward_auth(
        self, request: web.BaseRequest, rules: Rules, peer: str, request_id: str
    ) -> web.StreamResponse:
        """``/oauth2/auth`` for nginx ``auth_request`` and Traefik ``forwardAuth``: the route
        rules for the original request, which only ``forward_auth.callers`` may describe
        (and only they receive injected headers, tokens included). Anyone else learns
        whether they are signed in, and never receives a token."""
        if not rules.forward_auth_callers.contains(peer):
            return _no_store(await self._signed_in(request, rules.gate, request_id))
        original = describe_original(request.headers)  # exactly one description, or 400
        # nginx's auth_request only understands 2xx/401/403; Traefik passes any answer on,
        # so with ?redirect=1 a browser navigation gets the sign-in redirect itself.
        redirect = request.query.get("redirect") in ("1", "true")
        return await self._check(request, rules, request_id, original, redirect=redirect, envoy=False)

    async def _envoy_check(
        self, request: web.BaseRequest, rules: Rules, peer: str, request_id: str
    ) -> web.StreamResponse:
        """``{proxy_prefix}/envoy/<original path>`` for Envoy's ext_authz HTTP service and Istio's
        envoyExtAuthzHttp provider. Envoy describes the original request by the check request
        itself (ext_authz_http_impl.cc): the original method, ``path_prefix`` + the original
        path and query, the original :authority as Host, ``Content-Length: 0``, and the
        headers its allowed_headers list. Only ``forward_auth.callers`` get route decisions
        and injected headers, as for /oauth2/auth."""
        if not rules.forward_auth_callers.contains(peer):
            return _no_store(await self._signed_in(request, rules.gate, request_id))
        prefix = self.own_prefix + ENVOY_ENDPOINT
        raw = request.raw_path
        if not raw.startswith(prefix + "/"):  # the raw target, before normalisation: ours must be literal
            raise BadRequest(f"set Envoy's path_prefix to {prefix}")
        original = OriginalRequest(method=request.method, target=raw[len(prefix):], host=request.headers.get("Host", ""))
        # Envoy passes a denial's status, headers and body to the client: browsers get the
        # sign-in redirect itself.
        return await self._check(request, rules, request_id, original, redirect=True, envoy=True)

    async def _check(
        self, request: web.BaseRequest, rules: Rules, request_id: str, original: OriginalRequest, *,
        redirect: bool, envoy: bool,
    ) -> web.StreamResponse:
        """The route rules for ``original``, answered for a forward-auth caller."""
        headers = request.headers
        gate = rules.gate
        if not valid_host_header(original.host):
            raise BadRequest("the forwarded Host is not a valid host[:port]")
        try:
            target = resolve(rules.routes, original.method, original.host, *split_target(original.target))
        except BadRequest as exc:
            return _forbidden(f"the original request is not acceptable: {exc.reason}", request_id)
        route = target.route
        if route is None or target.slash_refused:
            return _forbidden("no route admits the original request", request_id)
        # the caller passes Origin and Access-Control-Request-Method on (the shipped configs do)
        preflight = route.skip_auth_preflight and _is_cors_preflight_of(original.method, headers)
        identity, facts = await gate.identify(request, route, request_id, preflight=preflight, redirect=redirect,
                                              method=original.method)
        decision = decide(route, identity, facts)
        if decision.outcome is not None:
            self.stats.authenticated(route.name, decision.outcome)
        if decision.__class__ is not Allow:
            scheme = effective_scheme(headers, True, request.scheme)
            return _no_store(self._refusal(decision, gate, request_id, headers.get("Accept"), target, scheme))
        # a bearer issuer's identity names its own groups claim (bearer_issuers[].groups_claim)
        groups_claim = (identity.groups_claim if identity is not None else None) or gate.groups_claim
        response = _identity_response(identity, groups_claim, request_id)
        for name, value in await gate.identity_headers(route, identity, request_id):
            response.headers[name] = value
        sign_in = self.sign_in
        cookie = None
        if sign_in is not None and "Cookie" in headers:
            # The client's cookies without the proxy's own, for the caller to send the app instead.
            cookie = without_own_cookies("; ".join(headers.getall("Cookie")), sign_in.cookies)
            cookie = cookie if cookie is not None and _header_safe(cookie) else None
        if not envoy:
            if cookie is not None:
                response.headers["X-Auth-Request-Cookie"] = cookie
            return response
        # Envoy sets the answer's headers named in allowed_upstream_headers on the request and
        # removes those named in x-envoy-auth-headers-to-remove: every identity header we did
        # not set goes, so a client's own copy never reaches the app. Envoy removes by exact
        # name only (its config drops names with "_": headers_with_underscores_action).
        if cookie is not None:
            response.headers["Cookie"] = cookie  # replaces the client's Cookie: ours taken out
        sent = {name.lower() for name in response.headers}
        remove = rules.guard.exact_names(route.pass_authorization, route.allow_method_override) - sent
        if cookie is None and "Cookie" in headers:
            remove |= {"cookie"}  # nothing of theirs left once ours is out
        response.headers["X-Envoy-Auth-Headers-To-Remove"] = ", ".join(sorted(remove))
        return response

    @staticmethod
    async def _signed_in(request: web.BaseRequest, gate: Gate, request_id: str) -> web.Response:
        sign_in = gate.sign_in
        session = await sign_in.session_for_route(request, int(gate.clock()), request_id) if sign_in is not None else None
        if session is None:
            return answer(_NOT_SIGNED_IN, request_id, None, sign_in_location=str, sign_in_path=gate.sign_in_path,
                          sign_out_path=gate.sign_out_path)
        return _identity_response(session_identity(session), gate.groups_claim, request_id)

    async def _answer_expect(self, request: web.BaseRequest) -> None:
        """Answer ``Expect: 100-continue`` ourselves once the request is accepted (RFC 9110 10.1.1)."""
        expect = request.headers.get("Expect")
        if expect is None:
            return
        if expect.lower() != "100-continue":
            raise ExpectationFailed("only 'Expect: 100-continue' is supported")
        if request.version >= HttpVersion11:
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")


def _is_envoy_check(endpoint: str) -> bool:
    return endpoint == ENVOY_ENDPOINT or endpoint.startswith(ENVOY_ENDPOINT + "/")


def _is_check(endpoint: str) -> bool:
    """Forward-auth and Envoy's checks: answered from headers alone, so on either lane."""
    return endpoint == "auth" or _is_envoy_check(endpoint)


def _no_store(response: web.Response) -> web.Response:
    response.headers["Cache-Control"] = "no-store"  # a forward-auth answer is about one user
    return response


def _forbidden(message: str, request_id: str) -> web.Response:
    return _no_store(error_response(403, "forbidden", message, request_id, accept="application/json"))


def _identity_response(identity: Identity | None, groups_claim: str, request_id: str) -> web.Response:
    """Forward-auth's 200: who the user is, in the X-Auth-Request-* headers peers use."""
    response = web.Response(status=200, headers={"Cache-Control": "no-store", "X-Request-Id": request_id,
                                                 "Server": "authproxy"})
    if identity is None:
        return response
    email = identity.claims.get("email")
    groups = ",".join(groups_of(identity.claims, groups_claim))
    for name, value in (("X-Auth-Request-User", identity.sub), ("X-Auth-Request-Email", email),
                        ("X-Auth-Request-Groups", groups)):
        if isinstance(value, str) and value and _header_safe(value):  # a claim is not trusted to be a header value
            response.headers[name] = value
    return response


def _header_safe(value: str) -> bool:
    return render_safe(value) is not None


def _jwks_response(signer: AssertionSigner) -> web.Response:
    return web.Response(body=signer.jwks_document, content_type="application/json",
                        headers={"Cache-Control": "public, max-age=300"})


def _is_cors_preflight(request: web.BaseRequest) -> bool:
    """Preflights carry no credentials (Fetch standard), so they pass to the upstream."""
    return _is_cors_preflight_of(request.method, request.headers)


def _is_cors_preflight_of(method: str, headers: CIMultiDictProxy[str]) -> bool:
    return method == "OPTIONS" and "Origin" in headers and "Access-Control-Request-Method" in headers


def server_options(config: Config) -> dict[str, object]:
    """Keyword arguments for aiohttp's low-level ``web.Server`` from ``limits``."""
    limits = config.limits
    return {
        "max_line_size": limits.header_size,
        "max_field_size": limits.header_size,
        "max_headers": limits.max_headers,
        "keepalive_timeout": limits.client_idle_timeout,
        "handler_cancellation": False,  # a client leaving must not cancel the upstream write midway
        # Bodies pass as sent: decompressing them would make more bytes than the Content-Length
        # forwarded with them, and the surplus would be the upstream's next request (smuggling).
        "auto_decompress": False,
        "access_log": None,  # ours is written by the handler, with the route and request id
    }

