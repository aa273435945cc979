"""The request edge with spans: what web/server.py serves with when tracing is on.

Subclasses, so the untraced ``ProxyHandler`` and ``Gate`` carry no tracing code at all:
with tracing off a request pays nothing, not even a check. They wrap the edge's own
steps and change nothing else:

- ``TracedProxyHandler._serve``: the request's SERVER span, current while it is served,
  so every span below nests under it (identify, store, refresh, IdP, upstream).
- ``TracedProxyHandler._forward``: the upstream call's CLIENT span, and its trace context
  in the upstream's headers in place of the client's (``_websocket``: the request span's).
- ``TracedGate.identify``: the session load or bearer check (``authproxy.identify``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web
from opentelemetry import trace

from authproxy.errors import AuthproxyError, ClientGone
from authproxy.policy.decide import Facts, Identity
from authproxy.policy.routes import Route
from authproxy.tracing.otel import Tracing, error_type, replace_trace_headers
from authproxy.web.gate import Gate
from authproxy.web.handler import ProxyHandler, Rules
from authproxy.web.render import answers

if TYPE_CHECKING:
    from multidict import CIMultiDict

    from authproxy.web.handler import _Exchange

ALLOWED = "allowed"  # the request span's outcome when nothing was refused


class TracedProxyHandler(ProxyHandler):
    def __init__(self, tracing: Tracing, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.tracing = tracing

    async def _serve(
        self, request: web.BaseRequest, rules: Rules, request_id: str, exchange: _Exchange
    ) -> web.StreamResponse:
        trusted = rules.trusted.contains(request.remote or "")
        span, token = self.tracing.request_started(request.headers, trusted, request.method, request.scheme,
                                                   request_id)
        status = 500
        outcome = ALLOWED
        try:
            response = await super()._serve(request, rules, request_id, exchange)
            status = response.status
            return response
        except ClientGone:
            status = exchange.status_if_cut
            outcome = "client_gone"
            raise
        except AuthproxyError as exc:
            # Answered by ProxyHandler.__call__ (error_answer) with the error's own status.
            status = exc.status if answers(exc) and exc.status is not None else 500
            outcome = exc.error
            raise
        except BaseException as exc:
            outcome = error_type(exc)
            raise
        finally:
            if exchange.refusal is not None:
                outcome = exchange.refusal
            # Before _serve resolved the target, exchange.path is the raw target: keep its path.
            path, _, query = exchange.path.partition("?")
            self.tracing.request_ended(span, token, path=path, query=exchange.query or query, route=exchange.route,
                                       status=status, outcome=outcome)

    async def _forward(
        self, request: web.BaseRequest, route: Route, upstream_target: str, upstream_headers: CIMultiDict[str],
        preflight: bool, request_id: str, exchange: _Exchange,
    ) -> web.StreamResponse:
        origin = route.upstream.origin
        url = f"{origin.scheme}://{route.upstream.host_header}{upstream_target}"
        span = self.tracing.upstream_started(request.method, url, origin.host, origin.port, route.name,
                                             upstream_headers)
        error: BaseException | None = None
        try:
            return await super()._forward(request, route, upstream_target, upstream_headers, preflight, request_id,
                                          exchange)
        except BaseException as exc:
            # ClientGone from a client that left is not the upstream's failure.
            error = None if isinstance(exc, ClientGone) and exchange.upstream_status is not None else exc
            raise
        finally:
            self.tracing.upstream_ended(span, exchange.upstream_status, error)

    async def _websocket(
        self, request: web.BaseRequest, rules: Rules, route: Route, target: Any, identity: Identity | None,
        upstream_headers: CIMultiDict[str], upstream_path: str, request_id: str, exchange: _Exchange,
    ) -> web.StreamResponse:
        # The upgrade is relayed within the request span: the upstream's parent is that span.
        replace_trace_headers(upstream_headers, trace.set_span_in_context(trace.get_current_span()))
        return await super()._websocket(request, rules, route, target, identity, upstream_headers, upstream_path,
                                        request_id, exchange)


class TracedGate(Gate):
    def __init__(self, tracing: Tracing, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.tracing = tracing

    def known_identity(self, request: web.BaseRequest, route: Route) -> Identity | None:
        """Never: every request's identity comes through ``identify``, in its span."""
        return None

    async def identify(
        self, request: web.BaseRequest, route: Route, request_id: str, **options: Any
    ) -> tuple[Identity | None, Facts]:
        """``Gate.identify`` in an ``authproxy.identify`` span: the route, its auth mode, how
        the caller was identified (session, bearer or none) and the outcome."""
        span, token = self.tracing.child("authproxy.identify", {"authproxy.route": route.name,
                                                                "authproxy.auth_mode": route.auth})
        outcome, failed = "anonymous", False
        via = "none"
        try:
            identity, facts = await super().identify(request, route, request_id, **options)
        except AuthproxyError as exc:
            outcome, failed = exc.error, True
            raise
        except BaseException as exc:
            outcome, failed = error_type(exc), True
            raise
        else:
            if identity is not None:
                outcome, via = "identified", identity.via
            elif facts.problem is not None:
                outcome = facts.problem  # a short code (policy/decide.py), as is its detail
                if facts.detail:
                    span.set_attribute("authproxy.problem_detail", facts.detail)
            elif facts.preflight:
                outcome = "preflight"
            return identity, facts
        finally:
            span.set_attribute("authproxy.via", via)
            self.tracing.child_ended(span, token, outcome, failed)
