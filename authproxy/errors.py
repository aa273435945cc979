"""The one exception tree of authproxy.

::

    AuthproxyError                   status, error, message, retry_after: how a request it ends is answered
    ├── ConfigError                  configuration cannot be used; carries every problem found
    ├── RequestRejected              a client request refused before any upstream call
    │   ├── BadRequest               400: malformed or hostile request target
    │   ├── RouteNotFound            404: no route matches
    │   ├── RequestTimeout           408: the client stopped sending its body
    │   ├── PayloadTooLarge          413: body over the route's max_body
    │   └── ExpectationFailed        417: an Expect other than 100-continue
    ├── SessionEnded                 the provider refused a session's refresh token: sign in again
    ├── RefreshUnavailable           503: tokens expired and could not be refreshed now
    ├── TokenInvalid                 a token must not be trusted; ``reason`` is a short safe code
    │   ├── UnknownSigningKey        signed with a kid our JWKS copy lacks (refetch once)
    │   └── KeyNotInJwks             (oidc/verify.py) the kid is not in the refetched JWKS either
    ├── IdpError                     a call to the identity provider failed; ``endpoint`` names it
    │   ├── IdpRejected              the provider answered with an OAuth error (invalid_grant, ...)
    │   ├── IdpUnavailable           network, timeout, 5xx: transient
    │   └── ServiceTokenUnavailable  503: no machine token for a service_token route
    ├── DiscoveryInvalid             (oidc/endpoints.py) the discovery document cannot be used
    ├── Unsealable                   (session/crypto.py) not sealed by us with these secrets, or altered
    ├── StoreError                   (store/base.py) a session store operation failed
    │   ├── StoreUnavailable         503: unreachable, timed out, 5xx, circuit open (transient)
    │   ├── StoreRejected            500: refused for good (missing table, access denied, validation)
    │   │   └── RecordTooLarge       the session does not fit in one item
    │   └── VersionConflict          the item changed since it was read: re-read and decide again
    ├── UpstreamError                the upstream failed; ``kind`` labels metrics
    │   ├── UpstreamUnavailable      502: refused, reset or an answer that cannot be framed
    │   └── UpstreamTimeout          504: no answer in time
    ├── UpstreamFailedEarly          (proxy/forward.py) an ``UpstreamError`` before any byte reached
    │                                the client, so it can still be answered
    ├── ClientGone                   the client left: close the connection, never answer
    │   └── ClientBodyFailed         (proxy/upstream/upload.py) reading the client's body failed
    └── HandOff                      (web/express.py) control flow: aiohttp's lane serves this
                                     request from its first byte; never answered, never counted

Errors that end a request say how: ``status`` (None for the others, which never reach a
client as such: an edge that meets one has a bug), ``error`` (a short code for the JSON
body), ``message`` (safe to show to anyone) and ``retry_after`` (seconds, for 503s). The
request edge answers them in one place (``web.render.error_answer``). ``ClientGone`` is
control flow, not an answer: the connection is closed, and the access log says 499.

Third-party exceptions (aiohttp, pydantic, yaml) are translated into these at the
boundary where they occur, so callers decide by type, never by message text.
Private control-flow exceptions that never leave their module (``_Definite``,
``_ConditionFailed``, the HTTP client's parser signals) stay outside the tree.
"""

from __future__ import annotations

from dataclasses import dataclass

RETRY_AFTER = 5  # seconds a client is asked to wait after a passing outage (503 Retry-After)


class AuthproxyError(Exception):
    """Base of every error authproxy raises on purpose."""

    status: int | None = None  # the answer's status when this error ends a request
    error = "internal_error"  # the JSON body's "error"
    message = "the request could not be handled"  # safe to show to anyone
    retry_after: int | None = None  # seconds; sent as Retry-After


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a configuration file: where it is and what is wrong."""

    path: str  # dotted path, e.g. "routes[1].upstream"; "" for the whole document
    message: str
    line: int | None = None  # 1-based line in the file, when known

    def render(self, filename: str) -> str:
        where = f"{filename}:{self.line}" if self.line else filename
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(AuthproxyError):
    """The configuration is unusable; ``issues`` lists every problem found in one pass."""

    def __init__(self, filename: str, issues: list[ConfigIssue]):
        self.filename = filename
        self.issues = issues
        super().__init__("\n".join(issue.render(filename) for issue in issues))


class RequestRejected(AuthproxyError):
    """A client request refused by the proxy itself; the message is safe to show."""

    status = 400
    error = "bad_request"

    def __init__(self, reason: str):
        self.reason = reason
        self.message = reason
        super().__init__(reason)


class BadRequest(RequestRejected):
    status = 400
    error = "bad_request"


class RouteNotFound(RequestRejected):
    status = 404
    error = "not_found"


class RequestTimeout(RequestRejected):
    status = 408
    error = "request_timeout"


class PayloadTooLarge(RequestRejected):
    status = 413
    error = "payload_too_large"


class ExpectationFailed(RequestRejected):
    status = 417
    error = "expectation_failed"


class SessionEnded(AuthproxyError):
    """The provider refused the refresh token (invalid_grant): the session is over."""


class RefreshUnavailable(AuthproxyError):
    """The tokens are expired and could not be refreshed now: 503, try again shortly."""

    status = 503
    error = "refresh_unavailable"
    message = "the sign-in could not be renewed right now; try again"
    retry_after = RETRY_AFTER


class TokenInvalid(AuthproxyError):
    """The token must not be trusted; ``reason`` is a short code safe to log and show."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


class UnknownSigningKey(TokenInvalid):
    """Signed with a key id our JWKS copy lacks: the caller may refetch the JWKS once."""


class IdpError(AuthproxyError):
    """A call to the identity provider failed; ``endpoint`` names which (for metrics)."""

    def __init__(self, endpoint: str, message: str):
        self.endpoint = endpoint
        super().__init__(message)


class IdpRejected(IdpError):
    """The provider answered with an OAuth error (RFC 6749 5.2), e.g. invalid_grant."""

    def __init__(self, endpoint: str, error: str, status: int):
        self.error = error
        self.status = status
        super().__init__(endpoint, f"{endpoint}: {error} ({status})")


class IdpUnavailable(IdpError):
    """The provider could not be reached or failed on its side; worth retrying later."""


class ServiceTokenUnavailable(IdpError):
    """No machine token could be obtained for a service_token route: 503. ``rejected``:
    the provider refused the client (a configuration problem), not a passing outage."""

    status = 503
    error = "service_token_unavailable"
    message = "the service token could not be obtained; try again"
    retry_after = RETRY_AFTER

    def __init__(self, endpoint: str, message: str, rejected: bool = False):
        self.rejected = rejected
        super().__init__(endpoint, message)


class UpstreamError(AuthproxyError):
    """The upstream could not be reached or did not answer; ``kind`` labels metrics."""

    status = 502
    error = "bad_gateway"

    def __init__(self, kind: str, reason: str):
        self.kind = kind
        self.reason = reason
        self.message = reason
        super().__init__(reason)


class UpstreamUnavailable(UpstreamError):
    status = 502
    error = "bad_gateway"


class UpstreamTimeout(UpstreamError):
    status = 504
    error = "gateway_timeout"


class ClientGone(AuthproxyError):
    """The client closed its connection (or stopped reading, or its body broke off): the
    request ends without an answer. Never rendered; logged as 499."""
