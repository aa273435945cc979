"""Spans for the identity provider's calls: an aiohttp ``TraceConfig`` for the provider's
``ClientSession`` (discovery, JWKS, token, refresh, revocation, userinfo).

One CLIENT span per call, from the request's start to its answer's head, under whatever
span is current (the callback's request span for a code exchange, the refresh span for a
refresh). The URL keeps only the names of its query parameters; no header or body is
read, so neither the client secret, a code, a token nor a verifier can reach a span. The
provider is not sent our trace context: it is another party's service.
"""

from __future__ import annotations

from types import SimpleNamespace

import aiohttp
from opentelemetry.trace import SpanKind, Tracer

from authproxy.tracing.otel import error_type, fail, redacted_url, span_method


def idp_trace_config(tracer: Tracer) -> aiohttp.TraceConfig:
    async def started(_session: aiohttp.ClientSession, context: SimpleNamespace,
                      params: aiohttp.TraceRequestStartParams) -> None:
        name, attributes = span_method(params.method)
        url = params.url
        attributes.update({"url.full": redacted_url(str(url)), "server.address": url.raw_host or "",
                           "authproxy.peer": "idp"})
        if url.port is not None:
            attributes["server.port"] = url.port
        context.span = tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)

    async def ended(_session: aiohttp.ClientSession, context: SimpleNamespace,
                    params: aiohttp.TraceRequestEndParams) -> None:
        span = context.span
        status = params.response.status
        span.set_attribute("http.response.status_code", status)
        if status >= 400:  # semconv: a CLIENT span fails on 4xx and 5xx
            fail(span, str(status))
        span.end()

    async def failed(_session: aiohttp.ClientSession, context: SimpleNamespace,
                     params: aiohttp.TraceRequestExceptionParams) -> None:
        span = context.span
        fail(span, error_type(params.exception))  # the type only: aiohttp's messages quote URLs
        span.end()

    config = aiohttp.TraceConfig()
    config.on_request_start.append(started)
    config.on_request_end.append(ended)
    config.on_request_exception.append(failed)
    config.freeze()
    return config
