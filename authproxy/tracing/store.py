"""The session store with a CLIENT span per call (applied by web/server.py when tracing is on).

Every coroutine of the ``SessionStore`` protocol (store/base.py) is traced, so an
operation added to the protocol is traced without a change here; everything else
(``name``, ``write_budget``, ``close``, backend extras) passes through untouched. Spans
name the operation and the backend and say how it went; never the key (a hash of the
cookie's session id), the ``sub``, or anything of the sealed record.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry.trace import SpanKind, Tracer

from authproxy.store.base import LeaseResult, SessionStore, StoreRejected, StoreUnavailable, VersionConflict
from authproxy.tracing.otel import error_type, fail

# The protocol's operations (close is lifecycle, not a call worth a span).
TRACED = frozenset(name for name, value in vars(SessionStore).items()
                   if inspect.iscoroutinefunction(value) and name != "close")
# DynamoDB's value of semconv's db.system.name; the memory backend has none of its own.
_DB_SYSTEM = {"dynamodb": "aws.dynamodb"}


_FINDS = frozenset({"get", "delete"})  # None from these: nothing was there


def outcome_of(operation: str, result: object) -> str:
    if result is None:
        return "absent" if operation in _FINDS else "ok"
    if isinstance(result, LeaseResult):
        return "acquired" if result.acquired else "lost"
    if operation == "logout_token_seen":  # a lookup: False is "not there", not a refusal
        return "found" if result else "absent"
    if result is False:
        return "refused"
    return "ok"


def failure_of(exc: BaseException) -> str:
    if isinstance(exc, VersionConflict):
        return "conflict"
    if isinstance(exc, StoreUnavailable):
        return "unavailable"
    if isinstance(exc, StoreRejected):
        return "rejected"
    return error_type(exc)


class TracedStore:
    """Delegates to ``store``; each protocol operation in a span ``authproxy.store <op>``."""

    def __init__(self, store: SessionStore, tracer: Tracer):
        self.store = store
        self._tracer = tracer
        backend = getattr(store, "name", type(store).__name__)
        self._attributes = {"authproxy.store.backend": backend, "db.system.name": _DB_SYSTEM.get(backend, "other")}
        for name in TRACED:
            operation = getattr(store, name, None)
            if operation is not None:
                setattr(self, name, functools.partial(self._call, name, operation))

    def __getattr__(self, name: str) -> Any:  # only for what __init__ did not set
        return getattr(self.store, name)

    async def _call(self, operation: str, call: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        # Not made current: nothing nests under a store call.
        span = self._tracer.start_span(f"authproxy.store {operation}", kind=SpanKind.CLIENT,
                                       attributes={**self._attributes, "db.operation.name": operation})
        try:
            result = await call(*args, **kwargs)
        except BaseException as exc:
            outcome = failure_of(exc)
            span.set_attribute("authproxy.outcome", outcome)
            if outcome != "conflict":  # a conflict is the protocol answering, not the store failing
                fail(span, outcome)
            raise
        else:
            span.set_attribute("authproxy.outcome", outcome_of(operation, result))
            return result
        finally:
            span.end()
