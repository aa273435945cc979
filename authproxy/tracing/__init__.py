"""OpenTelemetry traces, when ``tracing:`` is configured (docs/tracing.md).

This is the part the rest of authproxy may import: it never imports OpenTelemetry.
With tracing off nothing here runs per request and OpenTelemetry is never loaded (the
handler, gate and store are the untraced classes; tests/unit/test_tracing_off.py checks).
With tracing on, web/server.py builds one ``otel.Tracing`` per serving process at
start-up (so with ``workers: 2`` each worker exports its own spans) and serves with its
traced subclasses: ``handler.TracedProxyHandler`` (the request and upstream spans, and
the trace context sent upstream), ``handler.TracedGate`` (the identify span),
``store.TracedStore`` (store calls) and an aiohttp ``TraceConfig`` on the provider's
client session (IdP calls). A token refresh, deep in session/refresh.py, reaches the
process's ``Tracing`` through ``active``.

What spans may say: route names, modes, outcomes, status codes, paths and the names of
query parameters. Never a token, a cookie, an email, a user's ``sub``, a query value or
an exception's message (which can quote any of those): exceptions are recorded by type.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from authproxy.tracing.otel import Tracing

EXTRA = "authproxy[tracing]"
# The extra's packages, by a module each brings.
_MODULES = {
    "opentelemetry.trace": "opentelemetry-api",
    "opentelemetry.sdk.trace": "opentelemetry-sdk",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter": "opentelemetry-exporter-otlp-proto-http",
}

active: Tracing | None = None  # this process's tracing while it serves with tracing on; None: off


def missing_packages() -> list[str]:
    """The extra's packages that are not installed here (empty: all there)."""
    missing = []
    for name, package in _MODULES.items():
        try:
            found = importlib.util.find_spec(name) is not None
        except ImportError:  # a parent package is missing (find_spec imports parents)
            found = False
        if not found:
            missing.append(package)
    return missing
