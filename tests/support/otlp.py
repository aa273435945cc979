"""A real OTLP/HTTP trace receiver for tests: ``POST /v1/traces`` on 127.0.0.1.

It decodes each ``ExportTraceServiceRequest`` (binary protobuf, optionally gzip) with
the opentelemetry-proto messages, keeps the decoded requests and a flat list of spans,
and answers as a collector does (an empty ``ExportTraceServiceResponse``). It runs its
own event loop in a thread, so it outlives each test's loop and serves processes started
by module-scoped fixtures.
"""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tests.support.processes import free_port

SERVER, CLIENT, INTERNAL = 2, 3, 1  # Span.SpanKind values in trace.proto
STATUS_ERROR = 2  # Status.StatusCode STATUS_CODE_ERROR


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind) if kind else None


def _attributes(pairs: list[KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


@dataclass
class Link:
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass
class Span:
    """One received span, ids as lowercase hex (as in a traceparent)."""

    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root
    name: str
    kind: int
    attributes: dict[str, Any]
    status_code: int
    status_message: str
    resource: dict[str, Any]
    links: list[Link] = field(default_factory=list)
    flags: int = 0

    def __getitem__(self, key: str) -> Any:
        return self.attributes[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.attributes.get(key, default)

    @property
    def service(self) -> str:
        return self.resource.get("service.name", "")


class OtlpReceiver:
    """``url``: the traces endpoint to configure; ``spans``/``requests``: what arrived."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[ExportTraceServiceRequest] = []
        self.raw: list[bytes] = []  # every body as received (decompressed)
        self.headers: list[dict[str, str]] = []
        self.spans: list[Span] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="otlp-receiver")
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("the OTLP receiver did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())  # type: ignore[union-attr]
        self._loop.close()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if request.content_type != "application/x-protobuf":
            return web.Response(status=415, text="OTLP/HTTP binary protobuf only")
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        spans = []
        for resource_spans in message.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(Span(
                        trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(), name=span.name, kind=span.kind,
                        attributes=_attributes(span.attributes), status_code=span.status.code,
                        status_message=span.status.message, resource=resource, flags=span.flags,
                        links=[Link(link.trace_id.hex(), link.span_id.hex(), _attributes(link.attributes))
                               for link in span.links]))
        with self._lock:
            self.requests.append(message)
            self.raw.append(body)
            self.headers.append({name.lower(): value for name, value in request.headers.items()})
            self.spans.extend(spans)
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    # --- what the tests ask -------------------------------------------------------------

    def snapshot(self) -> list[Span]:
        with self._lock:
            return list(self.spans)

    def everything_received(self) -> str:
        """Every export request in protobuf text form: every name, attribute, event, link
        and status message of every span, and the resources, for scanning."""
        with self._lock:
            return "\n".join(str(message) for message in self.requests)

    async def wait_for(self, predicate, timeout: float = 15.0) -> list[Span]:  # noqa: ANN001
        """The spans once ``predicate(spans)`` holds (polled; exports arrive in batches)."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.snapshot()
            if predicate(spans):
                return spans
            if time.monotonic() >= deadline:
                raise AssertionError(f"no such spans after {timeout}s; got {[(s.service, s.name) for s in spans]}")
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
