"""Every Prometheus metric authproxy exports, defined in this one place.

Names and labels are a documented interface. Labels stay bounded: route names and
fixed words, never paths, users or session ids. With ``workers > 1`` each worker
writes prometheus-client multiprocess files and the supervisor serves their sum;
gauges declare how they combine across workers (``multiprocess_mode``).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from authproxy import __version__

# 0.5 ms to 30 s: a proxy hop is sub-millisecond, a slow upstream can take seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# HTTP methods we label as themselves; anything else is "OTHER" so labels stay bounded.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})

REQUESTS = Counter(
    "authproxy_requests",
    "Requests answered, by route, method and status code.",
    ("route", "method", "code"),
)
REQUEST_DURATION = Histogram(
    "authproxy_request_duration_seconds",
    "Time from request received to response finished, by route.",
    ("route",),
    buckets=LATENCY_BUCKETS,
)
UPSTREAM_DURATION = Histogram(
    "authproxy_upstream_duration_seconds",
    "Time from sending a request upstream to receiving its response headers, by route.",
    ("route",),
    buckets=LATENCY_BUCKETS,
)
UPSTREAM_ERRORS = Counter(
    "authproxy_upstream_errors",
    "Upstream failures by route and kind (refused, timeout, reset, invalid_response).",
    ("route", "kind"),
)
IN_FLIGHT = Gauge(
    "authproxy_requests_in_flight",
    "Requests being handled now.",
    multiprocess_mode="livesum",
)
READY = Gauge(
    "authproxy_ready",
    "1 when this process (every worker, under a supervisor) is ready to serve.",
    multiprocess_mode="livemin",
)
BUILD_INFO = Gauge(
    "authproxy_build_info",
    "Always 1; the version label says which build runs.",
    ("version",),
    multiprocess_mode="max",
)
BUILD_INFO.labels(__version__).set(1)

NO_ROUTE = "(none)"  # route label for requests that matched no route


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "OTHER"


class RequestMetrics:
    """Records one request; label children are cached so the hot path skips the registry lock.

    Keys are bounded: route names from the config, known methods, status codes.
    """

    __slots__ = ("_requests", "_durations", "_upstream")

    def __init__(self) -> None:
        self._requests: dict[tuple[str, str, int], Counter] = {}
        self._durations: dict[str, Histogram] = {}
        self._upstream: dict[str, Histogram] = {}

    def request(self, route: str, method: str, code: int, seconds: float) -> None:
        key = (route, method_label(method), code)
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = REQUESTS.labels(key[0], key[1], str(code))
        counter.inc()
        histogram = self._durations.get(route)
        if histogram is None:
            histogram = self._durations[route] = REQUEST_DURATION.labels(route)
        histogram.observe(seconds)

    def upstream(self, route: str, seconds: float) -> None:
        histogram = self._upstream.get(route)
        if histogram is None:
            histogram = self._upstream[route] = UPSTREAM_DURATION.labels(route)
        histogram.observe(seconds)
