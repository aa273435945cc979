"""The one place where decisions and errors become responses.

A refusal decision (policy/decide.py) or an error that ends a request (errors.py: one
with a ``status``) is answered here: an HTML page for browsers, JSON for API clients
(proxy/pages.py), ``Retry-After`` from the error or decision itself, and the log line or
metric that kind of failure calls for.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from authproxy import metrics
from authproxy.errors import RETRY_AFTER, AuthproxyError, UpstreamError
from authproxy.logs import log
from authproxy.policy.decide import BEARER, Decision, Forbidden, Identity, Refused, SignIn, Unauthorized, Unavailable
from authproxy.proxy.pages import error_response
from authproxy.store.base import StoreRejected, StoreUnavailable

JSON = "application/json"


def answer(
    decision: Decision,
    request_id: str,
    accept: str | None,
    *,
    sign_in_location: Callable[[], str],
    sign_in_path: str,
    sign_out_path: str,
) -> web.Response:
    """The response for a refusal ``decision`` (anything but ``Allow``).
    ``sign_in_location``: where a browser goes to sign in, computed only when it does."""
    if isinstance(decision, SignIn):
        return web.Response(status=302, headers={"Location": sign_in_location(), "Cache-Control": "no-store"})
    if isinstance(decision, Unauthorized):
        return error_response(401, "unauthorized", decision.message, request_id, accept=JSON if decision.api else accept,
                              headers={"WWW-Authenticate": decision.challenge},
                              links=[("Sign in", sign_in_path)] if decision.sign_in_link else ())
    if isinstance(decision, Forbidden):
        identity = decision.identity
        challenge = decision.challenge
        return error_response(403, "forbidden", f"access denied: {decision.denial.reason}", request_id,
                              accept=JSON if identity.via == BEARER else accept,
                              headers={"WWW-Authenticate": challenge} if challenge else None,
                              signed_in_as=display_name(identity),
                              links=[("Sign out, to use another account", sign_out_path)])
    if isinstance(decision, Unavailable):
        # API clients' checks (bearer tokens): JSON whatever they accept (RFC 6750 3).
        return error_response(503, decision.error, decision.message, request_id, accept=JSON, retry_after=RETRY_AFTER)
    if isinstance(decision, Refused):
        return error_response(decision.status, decision.error, decision.message, request_id, accept=JSON)
    raise TypeError(f"not a refusal: {decision!r}")


def error_answer(exc: AuthproxyError, request_id: str, accept: str | None, route: str | None) -> web.Response:
    """The response for an error that ends a request (``type(exc).status`` set), with the
    log line (or metric) its kind calls for. The cause of an internal failure is logged,
    never shown."""
    status = type(exc).status  # the class's: IdpRejected's own ``status`` is the provider's
    assert status is not None, f"{type(exc).__name__} is not an answer"
    if isinstance(exc, UpstreamError):
        metrics.UPSTREAM_ERRORS.labels(route or metrics.NO_ROUTE, exc.kind).inc()
        log_upstream_error(request_id, route, exc, after_headers=False)
    elif isinstance(exc, StoreUnavailable):
        log().warning("store_unavailable", extra={"fields": {"request_id": request_id, "route": route}})
    elif isinstance(exc, StoreRejected):
        log().error("store_rejected", extra={"fields": {"request_id": request_id, "route": route, "error": str(exc)}})
    return error_response(status, exc.error, exc.message, request_id, accept=accept, retry_after=exc.retry_after)


def answers(exc: BaseException) -> bool:
    """Whether ``exc`` is an error this module answers (the others propagate)."""
    return isinstance(exc, AuthproxyError) and type(exc).status is not None


def log_upstream_error(request_id: str, route: str | None, exc: UpstreamError, *, after_headers: bool) -> None:
    log().warning(
        "upstream_error",
        extra={"fields": {"request_id": request_id, "route": route, "kind": exc.kind, "after_headers": after_headers}},
    )


def display_name(identity: Identity) -> str:
    """Who a person is signed in as, in their own words: email, else a username, else sub."""
    for claim in ("email", "preferred_username", "cognito:username", "username", "name"):
        value = identity.claims.get(claim)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return identity.sub
