"""The OpenTelemetry SDK, set up from ``tracing:`` (imported only when it is configured).

One ``Tracing`` per serving process: its own ``TracerProvider`` (the global one is left
alone), a ``BatchSpanProcessor`` whose thread exports over OTLP/HTTP off the request
path, and the span helpers the traced classes use.

Which settings win: a key in ``tracing:`` over the standard environment variables, and
those over the SDK's defaults (the OTel SDK's own rule: what the program is given
explicitly beats the environment). The exporter reads OTEL_EXPORTER_OTLP_(TRACES_)*
(endpoint, headers, timeout, compression, certificates), the resource
OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, the sampler OTEL_TRACES_SAMPLER(_ARG)
when ``sampling_ratio`` is not set, the batch processor OTEL_BSP_*, and
OTEL_SDK_DISABLED=true turns every span into a no-op.

Trace context (W3C Trace Context, https://www.w3.org/TR/trace-context/): only
``traceparent`` and ``tracestate`` are read and written, whatever OTEL_PROPAGATORS says;
another propagation format would let another header steer our traces.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from multidict import CIMultiDict, CIMultiDictProxy
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from authproxy import __version__
from authproxy.config.schema import TracingConfig
from authproxy.errors import RefreshUnavailable, SessionEnded

if TYPE_CHECKING:
    import aiohttp

    from authproxy.store.base import SessionStore
    from authproxy.tracing.handler import TracedGate, TracedProxyHandler

DEFAULT_SERVICE_NAME = "authproxy"
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
REDACTED = "REDACTED"  # what OTel's semantic conventions put in place of a sensitive url.query value
# Methods semconv knows (HTTP semantic conventions, http.request.method); any other is
# "_OTHER", with the original in http.request.method_original, so a client cannot make
# span names of its own choosing.
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
_PROPAGATOR = TraceContextTextMapPropagator()
_Value = TypeVar("_Value")


class _AllValues(Getter[CIMultiDictProxy[str]]):
    """Every value of a header (aiohttp's multidict), as the propagator expects a list:
    tracestate may come split over several header lines (Trace Context 3.3.1.1)."""

    def get(self, carrier: CIMultiDictProxy[str], key: str) -> list[str] | None:
        values = carrier.getall(key, None)
        return list(values) if values else None

    def keys(self, carrier: CIMultiDictProxy[str]) -> list[str]:
        return list(carrier.keys())


_GETTER = _AllValues()


def span_method(method: str) -> tuple[str, dict[str, str]]:
    """The span name and method attributes for ``method`` (semconv: unknown methods are _OTHER)."""
    if method in _KNOWN_METHODS:
        return method, {"http.request.method": method}
    return "HTTP", {"http.request.method": "_OTHER", "http.request.method_original": method[:32]}


def query_names(query: str) -> str:
    """A query string with every value replaced by REDACTED, names kept as sent (OTel HTTP
    semantic conventions, url.query: sensitive values "SHOULD be redacted"; here every value
    is, since ``code``, ``state``, tokens and emails all travel as query values)."""
    if not query:
        return ""
    names = []
    for part in query.split("&"):
        name, equals, _ = part.partition("=")
        names.append(f"{name}={REDACTED}" if equals else name)
    return "&".join(names)


def redacted_url(url: str) -> str:
    """``url`` without user info or fragment, its query values REDACTED (url.full)."""
    base, _, query = url.partition("?")
    query = query.partition("#")[0]
    base = base.partition("#")[0]
    scheme, sep, rest = base.partition("://")
    if sep:
        authority, slash, path = rest.partition("/")
        base = f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"
    return f"{base}?{query_names(query)}" if query else base


def error_type(exc: BaseException) -> str:
    """An exception as a span may say it: its type's name, never its message."""
    return type(exc).__name__


def fail(span: Span, kind: str) -> None:
    """Mark ``span`` failed with a type, never a message (semconv error.type)."""
    span.set_attribute("error.type", kind)
    span.set_status(Status(StatusCode.ERROR))


class Tracing:
    """This process's tracer, exporter and the helpers for each kind of span."""

    def __init__(self, config: TracingConfig, exporter: SpanExporter | None = None):
        attributes: dict[str, str] = {SERVICE_VERSION: __version__}
        if config.service_name is not None:
            attributes[SERVICE_NAME] = config.service_name
        resource = Resource.create(attributes)  # OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME under these
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
        # Parent-based: a span with a parent (a trusted proxy's, or ours) is sampled as the
        # parent was; a new root by the ratio of its trace id. sampler=None: the SDK reads
        # OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG (default parentbased_always_on).
        ratio = config.sampling_ratio
        sampler = ParentBased(TraceIdRatioBased(ratio)) if ratio is not None else None
        self.provider = TracerProvider(resource=resource, sampler=sampler, shutdown_on_exit=False)  # ours: Parts.close
        if exporter is None:
            headers = {name: value.get_secret_value() for name, value in config.headers.items()}
            exporter = OTLPSpanExporter(endpoint=config.endpoint, headers=headers or None)
        # Spans are queued when they end and sent by the processor's own thread.
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("authproxy", __version__)

    # --- the pieces web/server.py wires in --------------------------------------------

    def proxy_handler(self, *args: Any, **kwargs: Any) -> TracedProxyHandler:
        from authproxy.tracing.handler import TracedProxyHandler

        return TracedProxyHandler(self, *args, **kwargs)

    def gate(self, *args: Any, **kwargs: Any) -> TracedGate:
        from authproxy.tracing.handler import TracedGate

        return TracedGate(self, *args, **kwargs)

    def store(self, store: SessionStore) -> SessionStore:
        from authproxy.tracing.store import TracedStore

        return TracedStore(store, self.tracer)  # type: ignore[return-value]

    def client_trace_configs(self) -> list[aiohttp.TraceConfig]:
        """For the provider's ``aiohttp.ClientSession``: a CLIENT span per call."""
        from authproxy.tracing.idp import idp_trace_config

        return [idp_trace_config(self.tracer)]

    def shutdown(self) -> None:
        """Export what is queued and stop (blocking: run it off the event loop)."""
        self.provider.shutdown()

    # --- the request span ---------------------------------------------------------------

    def request_started(self, headers: CIMultiDictProxy[str], trusted: bool, method: str, scheme: str,
                        request_id: str) -> tuple[Span, object]:
        """The SERVER span of one request, made current (its token for ``request_ended``).

        Its parent: the caller's ``traceparent`` only when the TCP peer is a trusted proxy.
        From anyone else, a new root with a link to their span context, so they can neither
        join our traces nor force sampling. Trace Context names "crossing of a trust
        boundary" as the reason to restart a trace (Processing Model), warns that an
        untrusted caller may set trace-flags maliciously (3.2.2.5) and that naively
        continuing any sampled trace invites denial of service (Security Considerations)."""
        parent: Context | None = Context()  # empty: a new root
        links: Iterable[Link] = ()
        if TRACEPARENT in headers:
            # traceparent is one value (3.2); only tracestate may be split over lines (3.3.1.1):
            # several traceparent lines are an invalid one, so none is believed.
            if len(headers.getall(TRACEPARENT)) == 1:
                carried = _PROPAGATOR.extract(headers, getter=_GETTER)
                if trusted:
                    parent = carried
                else:
                    theirs = trace.get_current_span(carried).get_span_context()
                    if theirs.is_valid:
                        links = (Link(theirs, {"authproxy.link": "untrusted_traceparent"}),)
        name, attributes = span_method(method)
        attributes["url.scheme"] = scheme
        attributes["authproxy.request_id"] = request_id
        span = self.tracer.start_span(name, context=parent, kind=SpanKind.SERVER, links=links,
                                      attributes=attributes)
        return span, otel_context.attach(trace.set_span_in_context(span))

    @staticmethod
    def request_ended(span: Span, token: object, *, path: str, query: str, route: str | None, status: int,
                      outcome: str) -> None:
        span.set_attribute("url.path", path)
        if query:
            span.set_attribute("url.query", query_names(query))
        if route is not None:
            span.set_attribute("authproxy.route", route)
        span.set_attribute("http.response.status_code", status)
        span.set_attribute("authproxy.outcome", outcome)
        if status >= 500:  # semconv: a SERVER span fails on 5xx only (4xx are the client's)
            fail(span, str(status))
        span.end()
        otel_context.detach(token)  # type: ignore[arg-type]

    # --- the upstream call ----------------------------------------------------------------

    def upstream_started(self, method: str, url: str, host: str, port: int, route: str,
                         upstream_headers: CIMultiDict[str]) -> Span:
        """The CLIENT span of the upstream call, a child of the current (request) span, and
        its context written into the upstream's headers in place of whatever the client sent:
        the upstream sees our span as its parent (Trace Context, Processing Model: a
        participant sets parent-id to its own operation's id)."""
        name, attributes = span_method(method)
        attributes.update({"url.full": redacted_url(url), "server.address": host, "server.port": port,
                           "authproxy.route": route})
        span = self.tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)
        replace_trace_headers(upstream_headers, trace.set_span_in_context(span))
        return span

    @staticmethod
    def upstream_ended(span: Span, status: int | None, error: BaseException | None) -> None:
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        if error is not None:
            fail(span, getattr(error, "kind", None) or error_type(error))
        elif status is not None and status >= 400:  # semconv: a CLIENT span fails on 4xx and 5xx
            fail(span, str(status))
        span.end()

    # --- identify ---------------------------------------------------------------------------

    def child(self, name: str, attributes: Mapping[str, Any]) -> tuple[Span, object]:
        """An INTERNAL span under the current one, made current (its children nest under it)."""
        span = self.tracer.start_span(name, attributes=attributes)
        return span, otel_context.attach(trace.set_span_in_context(span))

    @staticmethod
    def child_ended(span: Span, token: object, outcome: str, failed: bool = False) -> None:
        span.set_attribute("authproxy.outcome", outcome)
        if failed:
            fail(span, outcome)
        span.end()
        otel_context.detach(token)  # type: ignore[arg-type]

    # --- a token refresh ----------------------------------------------------------------------

    async def refresh(self, work: Callable[[], Awaitable[_Value]], session: object) -> _Value:
        """``work`` (session/refresh.py's refresh of ``session``) in an ``authproxy.refresh``
        span; the provider's token call and the lease's store calls nest under it."""
        span, token = self.child("authproxy.refresh", {})
        outcome, failed = "new_tokens", False
        try:
            result = await work()
        except SessionEnded:
            outcome = "session_ended"  # the provider refused the refresh token: an answer, not a failure
            raise
        except RefreshUnavailable:
            outcome, failed = "unavailable", True
            raise
        except BaseException as exc:
            outcome, failed = error_type(exc), True
            raise
        else:
            if result is session:
                outcome = "kept"  # deferred (backoff, lease held elsewhere, store down): the current token serves
            return result
        finally:
            self.child_ended(span, token, outcome, failed)


def replace_trace_headers(headers: CIMultiDict[str], context: Context | None) -> None:
    """Drop any traceparent/tracestate in ``headers`` and write ``context``'s (none when it
    has no valid span)."""
    headers.popall(TRACEPARENT, None)
    headers.popall(TRACESTATE, None)
    if context is not None:
        _PROPAGATOR.inject(headers, context=context)
