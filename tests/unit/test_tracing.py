"""The tracing module's rules, with the real SDK and an in-memory exporter: what may be
said in a span, whose trace context is believed, what decides sampling, how the store's
calls are traced, and which settings win."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import ValidationError

from authproxy import tracing
from authproxy.config.schema import TracingConfig
from authproxy.store.base import SessionRecord, StoreUnavailable, VersionConflict
from authproxy.store.memory import MemoryStore
from authproxy.tracing.otel import Tracing, query_names, redacted_url, replace_trace_headers, span_method
from authproxy.tracing.store import TRACED, TracedStore
from tests.support.otlp import OtlpReceiver

THEIR_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
THEIR_SPAN = "00f067aa0ba902b7"
SAMPLED = f"00-{THEIR_TRACE}-{THEIR_SPAN}-01"
OTEL_VARIABLES = ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
                  "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SDK_DISABLED")


_MADE: list[Tracing] = []


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    yield
    while _MADE:  # each has an exporting thread
        _MADE.pop().shutdown()


def make(**settings) -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    traced = Tracing(TracingConfig(**settings), exporter=exporter)
    _MADE.append(traced)
    return traced, exporter


def finished(traced: Tracing, exporter: InMemorySpanExporter):
    traced.provider.force_flush()
    return exporter.get_finished_spans()


def headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


@pytest.mark.parametrize(("query", "shown"), [
    ("", ""),
    ("code=abc&state=xyz", "code=REDACTED&state=REDACTED"),
    ("flag&x=", "flag&x=REDACTED"),
    ("email=a%40b.example&email=c", "email=REDACTED&email=REDACTED"),
    ("a=b=c", "a=REDACTED"),
])
def test_query_values_never_shown(query, shown):
    assert query_names(query) == shown


@pytest.mark.parametrize(("url", "shown"), [
    ("https://idp.example/token", "https://idp.example/token"),
    ("https://idp.example/auth?code=c0de&state=s7&iss=x#frag",
     "https://idp.example/auth?code=REDACTED&state=REDACTED&iss=REDACTED"),
    ("https://user:pass@idp.example:8443/x?t=secret", "https://idp.example:8443/x?t=REDACTED"),
    ("http://127.0.0.1:9/a/b?", "http://127.0.0.1:9/a/b"),
])
def test_urls_keep_only_query_names(url, shown):
    assert redacted_url(url) == shown


def test_unknown_methods_do_not_name_spans():
    assert span_method("GET") == ("GET", {"http.request.method": "GET"})
    name, attributes = span_method("X-MY-OWN-METHOD-WITH-A-LONG-NAME-PAST-32")
    assert name == "HTTP" and attributes["http.request.method"] == "_OTHER"
    assert len(attributes["http.request.method_original"]) == 32


def serve(traced: Tracing, incoming: CIMultiDictProxy[str], trusted: bool):
    span, token = traced.request_started(incoming, trusted, "GET", "https", "rid-1")
    context = span.get_span_context()
    traced.request_ended(span, token, path="/p", query="q=1", route="app", status=200, outcome="allowed")
    return span, context


def test_a_trusted_proxys_traceparent_is_continued_with_its_tracestate():
    traced, exporter = make(sampling_ratio=0)  # the parent's decision, not the ratio, applies
    span, context = serve(traced, headers(("traceparent", SAMPLED), ("tracestate", "a=1"), ("TraceState", "b=2")),
                          trusted=True)
    assert format(context.trace_id, "032x") == THEIR_TRACE and context.trace_flags.sampled
    assert context.trace_state.to_header() == "a=1,b=2"  # split over two lines, one list (3.3.1.1)
    (exported,) = finished(traced, exporter)
    assert format(exported.parent.span_id, "016x") == THEIR_SPAN and exported.kind == SpanKind.SERVER
    assert exported.attributes["url.query"] == "q=REDACTED" and exported.attributes["authproxy.route"] == "app"


def test_an_untrusted_caller_gets_a_new_trace_linked_to_theirs_and_cannot_force_sampling():
    traced, exporter = make(sampling_ratio=0)
    _, context = serve(traced, headers(("traceparent", SAMPLED), ("tracestate", "evil=1")), trusted=False)
    assert format(context.trace_id, "032x") != THEIR_TRACE
    assert not context.trace_flags.sampled and not context.trace_state  # ratio 0: their sampled flag did not count
    assert finished(traced, exporter) == ()
    traced, exporter = make(sampling_ratio=1)
    serve(traced, headers(("traceparent", SAMPLED)), trusted=False)
    (exported,) = finished(traced, exporter)
    assert exported.parent is None
    (link,) = exported.links
    assert format(link.context.trace_id, "032x") == THEIR_TRACE and format(link.context.span_id, "016x") == THEIR_SPAN


@pytest.mark.parametrize("incoming", [
    [("traceparent", SAMPLED), ("traceparent", f"00-{'1' * 32}-{'2' * 16}-01")],  # several: none believed
    [("traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01")],  # all-zero trace id (3.2.2.3)
    [("traceparent", "garbage")],
    [("tracestate", "a=1")],  # tracestate without traceparent is not parsed (3.3)
])
def test_an_invalid_trace_context_starts_a_new_trace_without_link(incoming):
    traced, exporter = make(sampling_ratio=1)
    _, context = serve(traced, headers(*incoming), trusted=True)
    assert format(context.trace_id, "032x") not in (THEIR_TRACE, "1" * 32)
    (exported,) = finished(traced, exporter)
    assert exported.parent is None and not exported.links and not context.trace_state


def test_a_server_span_fails_on_5xx_only():
    traced, exporter = make(sampling_ratio=1)
    for status in (404, 503):
        span, token = traced.request_started(headers(), False, "GET", "http", "r")
        traced.request_ended(span, token, path="/", query="", route=None, status=status, outcome="x")
    not_found, unavailable = finished(traced, exporter)
    assert not_found.status.status_code == StatusCode.UNSET and "error.type" not in not_found.attributes
    assert unavailable.status.status_code == StatusCode.ERROR and unavailable.attributes["error.type"] == "503"
    assert unavailable.status.description is None  # never a message


def test_upstream_headers_carry_our_context_only():
    traced, exporter = make(sampling_ratio=1)
    outgoing = CIMultiDict([("Traceparent", SAMPLED), ("tracestate", "evil=1"), ("X-Other", "1")])
    span = traced.upstream_started("POST", "http://10.0.0.1:8080/x?token=t0ken", "10.0.0.1", 8080, "app", outgoing)
    traced.upstream_ended(span, 502, None)
    (exported,) = finished(traced, exporter)
    (sent,) = outgoing.getall("traceparent")
    assert sent.startswith(f"00-{exported.context.trace_id:032x}-{exported.context.span_id:016x}-")
    assert int(sent[-2:], 16) & 1  # sampled (a recent SDK adds the random-trace-id flag, 0x02)
    assert "tracestate" not in outgoing and outgoing["X-Other"] == "1"
    assert exported.attributes["url.full"] == "http://10.0.0.1:8080/x?token=REDACTED"
    assert exported.kind == SpanKind.CLIENT and exported.status.status_code == StatusCode.ERROR
    replace_trace_headers(outgoing, None)
    assert "traceparent" not in outgoing


def test_settings_win_over_the_environment_which_wins_over_defaults(monkeypatch):
    traced, _ = make()
    assert traced.provider.resource.attributes["service.name"] == "authproxy"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=prod")
    traced, _ = make()
    assert traced.provider.resource.attributes["service.name"] == "from-env"
    assert traced.provider.resource.attributes["deployment.environment.name"] == "prod"
    traced, _ = make(service_name="configured")
    assert traced.provider.resource.attributes["service.name"] == "configured"
    # the sampler: OTEL_TRACES_SAMPLER when sampling_ratio is not set, the ratio when it is
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    traced, exporter = make()
    serve(traced, headers(), trusted=False)
    assert finished(traced, exporter) == ()
    traced, exporter = make(sampling_ratio=1)
    serve(traced, headers(), trusted=False)
    assert len(finished(traced, exporter)) == 1


def test_the_exporter_takes_the_configured_endpoint_and_headers_over_the_environment(monkeypatch):
    receiver = OtlpReceiver()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-key=env,x-env-only=1")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:9/not-here")
        configured = Tracing(TracingConfig(endpoint=receiver.url, headers={"X-Key": "configured"}, sampling_ratio=1))
        serve(configured, headers(), trusted=False)
        configured.shutdown()  # exports what is queued
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.url)
        from_env = Tracing(TracingConfig(sampling_ratio=1))
        serve(from_env, headers(), trusted=False)
        from_env.shutdown()
        first, second = receiver.headers
        assert first["x-key"] == "configured" and first["x-env-only"] == "1"
        assert second["x-key"] == "env"
        assert len(receiver.snapshot()) == 2
    finally:
        receiver.stop()


def test_tracing_settings_are_checked():
    with pytest.raises(ValidationError, match="less than or equal to 1"):
        TracingConfig(sampling_ratio=1.5)
    with pytest.raises(ValidationError, match="not a valid header name"):
        TracingConfig(headers={"bad header": "x"})
    with pytest.raises(ValidationError, match="http"):
        TracingConfig(endpoint="collector:4318")
    assert "key" not in repr(TracingConfig(headers={"X-Key": "key"}))  # a secret, masked


def test_without_the_extra_the_key_says_what_to_install(monkeypatch):
    monkeypatch.setattr(tracing, "_MODULES", {"opentelemetry_not_installed.sdk": "opentelemetry-sdk"})
    with pytest.raises(ValidationError) as caught:
        TracingConfig()
    assert "missing: opentelemetry-sdk" in str(caught.value) and "pip install 'authproxy[tracing]'" in str(caught.value)


def record(key: str = "k") -> SessionRecord:
    return SessionRecord(key=key, sub="someone@example.com", payload=b"sealed", expires_at=2_000_000_000, version=1,
                         created_at=1, last_seen_at=1)


async def test_store_calls_are_client_spans_that_say_no_key_or_sub():
    traced, exporter = make(sampling_ratio=1)
    store = TracedStore(MemoryStore(), traced.tracer)
    assert store.name == "memory" and store.write_budget == 0.0  # the rest passes through
    assert await store.get("k", 1) is None
    await store.create(record(), "w1")
    with pytest.raises(VersionConflict):
        await store.update("k", 7, b"x", "w2")
    lease = await store.acquire_refresh_lease("k", 1, 10, 20, "owner")
    assert lease.acquired
    await store.close()
    spans = {span.name: span for span in finished(traced, exporter)}
    assert set(spans) == {"authproxy.store get", "authproxy.store create", "authproxy.store update",
                          "authproxy.store acquire_refresh_lease"}
    assert spans["authproxy.store get"].attributes["authproxy.outcome"] == "absent"
    assert spans["authproxy.store create"].attributes["authproxy.outcome"] == "ok"
    conflict = spans["authproxy.store update"]
    assert conflict.attributes["authproxy.outcome"] == "conflict" and conflict.status.status_code == StatusCode.UNSET
    assert spans["authproxy.store acquire_refresh_lease"].attributes["authproxy.outcome"] == "acquired"
    for span in spans.values():
        assert span.kind == SpanKind.CLIENT and span.attributes["db.system.name"] == "other"
        assert not {"k", "someone@example.com"} & {str(value) for value in span.attributes.values()}


async def test_a_failing_store_call_fails_its_span_by_type():
    class Down(MemoryStore):
        async def get(self, key, now):
            raise StoreUnavailable("connect timeout to https://dynamodb... with key k")

    traced, exporter = make(sampling_ratio=1)
    store = TracedStore(Down(), traced.tracer)
    with pytest.raises(StoreUnavailable):
        await store.get("k", 1)
    (span,) = finished(traced, exporter)
    assert span.status.status_code == StatusCode.ERROR and span.attributes["error.type"] == "unavailable"
    assert not span.events and span.status.description is None


def test_every_store_operation_is_traced():
    assert TRACED >= {"get", "create", "update", "touch", "acquire_refresh_lease", "renew_refresh_lease",
                      "release_refresh_lease", "delete"}
    assert "close" not in TRACED
