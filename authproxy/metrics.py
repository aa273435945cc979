"""Every Prometheus metric authproxy exports, defined in this one place.

Names and labels are a documented interface. Labels stay bounded: route names and
fixed words, never paths, users or session ids.

Per-request metrics (request counts, latencies, in-flight) are kept in plain
integers by ``RequestStats`` and turned into metric families only when scraped
(``RequestStatsCollector``): the hot path takes no lock and builds no objects.
Rare events use prometheus-client's own Counter and Gauge.

With ``workers > 1`` every worker writes its exposition to a snapshot file once a
second (``write_snapshot``) and the supervisor serves their sum (``aggregate``):
counters and histograms are summed over every worker that ever ran, so a restart
never makes a counter go backwards; gauges combine over live workers only.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from authproxy import __version__

# _created series double the output and no dashboard of ours reads them.
disable_created_metrics()

# 0.5 ms to 30 s: a proxy hop is sub-millisecond, a slow upstream can take seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BUCKET_LABELS = tuple(repr(bound) for bound in LATENCY_BUCKETS)

# HTTP methods labelled as themselves; anything else is "OTHER" so labels stay bounded.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})

NO_ROUTE = "(none)"  # route label for requests that matched no route

UPSTREAM_ERRORS = Counter(
    "authproxy_upstream_errors",
    "Upstream failures by route and kind (refused, timeout, reset, invalid_response).",
    ("route", "kind"),
)
READY = Gauge("authproxy_ready", "1 when this process (every worker, under a supervisor) is ready to serve.")
BUILD_INFO = Gauge("authproxy_build_info", "Always 1; the version label says which build runs.", ("version",))
BUILD_INFO.labels(__version__).set(1)

# Sign-in, sessions, the identity provider and the store. Label values are fixed words.
LOGINS = Counter("authproxy_logins", "Sign-in callbacks by result (success, state_mismatch, idp_error, token_invalid, ...).",
                 ("result",))
LOGOUTS = Counter("authproxy_logouts", "Sign-outs that ended a session.")
# OpenID Connect Back-Channel Logout (web/backchannel.py).
BACKCHANNEL_LOGOUTS = Counter(
    "authproxy_backchannel_logouts",
    "Logout tokens the provider posted, by outcome (success, invalid_token, replayed, bad_request, unavailable).",
    ("outcome",))
for _outcome in ("success", "invalid_token", "replayed", "bad_request", "unavailable"):
    BACKCHANNEL_LOGOUTS.labels(_outcome)
BACKCHANNEL_SESSIONS_ENDED = Counter("authproxy_backchannel_logout_sessions_ended",
                                     "Sessions ended by back-channel logout tokens.")
TOKEN_REFRESH = Counter("authproxy_token_refresh",
                        "Token refreshes by result (success, invalid_grant, transient_error, lease_lost).", ("result",))
TOKEN_REFRESH_DURATION = Histogram("authproxy_token_refresh_duration_seconds",
                                   "Time of the refresh_token grant at the provider.", buckets=LATENCY_BUCKETS)
IDP_DURATION = Histogram("authproxy_idp_request_duration_seconds", "Calls to the identity provider, by endpoint.",
                         ("endpoint",), buckets=LATENCY_BUCKETS)
IDP_ERRORS = Counter("authproxy_idp_errors", "Failed calls to the identity provider, by endpoint.", ("endpoint",))
JWKS_REFRESH = Counter("authproxy_jwks_refresh", "Fetches of the provider's signing keys, by result.", ("result",))
STORE_DURATION = Histogram("authproxy_store_operation_duration_seconds", "Session store operations.",
                           ("backend", "operation"), buckets=LATENCY_BUCKETS)
STORE_ERRORS = Counter("authproxy_store_errors", "Session store operations that failed (unavailable).",
                       ("backend", "operation"))
STORE_CIRCUIT_OPEN = Gauge("authproxy_store_circuit_open",
                           "1 while store calls fail fast (circuit open or half-open: one probe at a time), else 0.",
                           ("backend",))
STORE_CIRCUIT_REJECTED = Counter("authproxy_store_circuit_rejected",
                                 "Store calls failed at once because the circuit was open.", ("backend",))
CONFIG_RELOADS = Counter("authproxy_config_reloads", "Configuration reloads, by result (success, failure).", ("result",))
for _result in ("success", "failure"):  # present from the start, so alerts and rate() see a zero
    CONFIG_RELOADS.labels(_result)
CACHE_ENTRIES = Gauge("authproxy_session_cache_entries", "Sessions in the local cache.")
CACHE_BYTES = Gauge("authproxy_session_cache_bytes", "Estimated memory of the sessions in the local cache (bound: store.cache.max_bytes).")
SESSION_PENDING_WRITES = Gauge("authproxy_session_pending_writes",
                               "Refreshed sessions whose new tokens are not in the store yet (kept and retried).")
SESSION_WRITES_LOST = Counter("authproxy_session_writes_lost",
                              "Refreshed tokens never saved: the process exited or the session expired first.",
                              ("reason",))
for _reason in ("shutdown", "expired"):
    SESSION_WRITES_LOST.labels(_reason)

# authproxy_auth_total outcomes
AUTH_PUBLIC, AUTH_SESSION, AUTH_REDIRECTED, AUTH_UNAUTHORIZED = "public", "session", "redirected", "unauthorized"
AUTH_BEARER, AUTH_FORBIDDEN = "bearer", "forbidden"

# How a gauge combines across live workers (default: sum, e.g. memory and open fds).
GAUGE_MODES = {
    "authproxy_ready": min,
    "authproxy_build_info": max,
    "python_info": max,
    "process_max_fds": max,
    "process_virtual_memory_max_bytes": max,
    "process_start_time_seconds": min,
}


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "OTHER"


class LatencyHistogram:
    """Counts per bucket (the last one is +Inf) and the sum, as plain numbers."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        buckets, running = [], 0
        for label, count in zip(_BUCKET_LABELS, self.counts[:-1], strict=True):
            running += count
            buckets.append((label, running))
        buckets.append(("+Inf", running + self.counts[-1]))
        return buckets


class RequestStats:
    """Per-request metrics of this process. Used from the event loop thread only."""

    __slots__ = ("requests", "durations", "upstream_durations", "in_flight", "auth")

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        self.auth: dict[tuple[str, str], int] = {}  # (route, outcome)
        self.durations: dict[str, LatencyHistogram] = {}
        self.upstream_durations: dict[str, LatencyHistogram] = {}
        self.in_flight = 0

    def request(self, route: str, method: str, code: int, seconds: float) -> None:
        key = (route, method if method in KNOWN_METHODS else "OTHER", code)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        histogram = self.durations.get(route)
        if histogram is None:
            histogram = self.durations[route] = LatencyHistogram()
        histogram.observe(seconds)

    def authenticated(self, route: str, outcome: str) -> None:
        key = (route, outcome)
        self.auth[key] = self.auth.get(key, 0) + 1

    def upstream(self, route: str, seconds: float) -> None:
        histogram = self.upstream_durations.get(route)
        if histogram is None:
            histogram = self.upstream_durations[route] = LatencyHistogram()
        histogram.observe(seconds)


class RequestStatsCollector(Collector):
    """Turns ``RequestStats`` into metric families at scrape time."""

    def __init__(self, stats: RequestStats):
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        requests = CounterMetricFamily(
            "authproxy_requests", "Requests answered, by route, method and status code.", labels=("route", "method", "code")
        )
        for (route, method, code), count in sorted(stats.requests.items()):
            requests.add_metric((route, method, str(code)), count)
        yield requests
        yield _histogram_family(
            "authproxy_request_duration_seconds",
            "Time from request received to response finished, by route.",
            stats.durations,
        )
        yield _histogram_family(
            "authproxy_upstream_duration_seconds",
            "Time from sending a request upstream to receiving its response headers, by route.",
            stats.upstream_durations,
        )
        yield GaugeMetricFamily("authproxy_requests_in_flight", "Requests being handled now.", value=stats.in_flight)
        auth = CounterMetricFamily(
            "authproxy_auth", "Authentication decisions by route and outcome.", labels=("route", "outcome")
        )
        for (route, outcome), count in sorted(stats.auth.items()):
            auth.add_metric((route, outcome), count)
        yield auth


def _histogram_family(name: str, documentation: str, histograms: dict[str, LatencyHistogram]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=("route",))
    for route, histogram in sorted(histograms.items()):
        family.add_metric((route,), histogram.cumulative(), histogram.total)
    return family


STATS = RequestStats()
REGISTRY.register(RequestStatsCollector(STATS))


class ExpressStats:
    """The express lane (web/express.py), in plain integers: requests it served, and the
    connections it handed to aiohttp's server, by why."""

    __slots__ = ("requests", "handoffs")

    def __init__(self) -> None:
        self.requests = 0
        self.handoffs: dict[str, int] = {}

    def handed_off(self, reason: str) -> None:
        self.handoffs[reason] = self.handoffs.get(reason, 0) + 1


class ExpressStatsCollector(Collector):
    def __init__(self, stats: ExpressStats):
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily("authproxy_express_requests",
                                  "Requests the express lane served (the rest: aiohttp's server).",
                                  value=self.stats.requests)
        handoffs = CounterMetricFamily(
            "authproxy_express_handoffs",
            "Connections the express lane handed to aiohttp's server, by the first request it did not serve: "
            "body, upgrade, expect, http_version, host, duplicate, limits, pipelined, malformed, own_endpoint.",
            labels=("reason",))
        for reason, count in sorted(self.stats.handoffs.items()):
            handoffs.add_metric((reason,), count)
        yield handoffs


EXPRESS = ExpressStats()
REGISTRY.register(ExpressStatsCollector(EXPRESS))


class VerifiedTokenStats:
    """The bearer routes' cache of verified tokens (oidc/token_cache.py), in plain integers
    like ``RequestStats``: a hit costs an increment, and families are built at scrape time."""

    __slots__ = ("hits", "misses", "entries")

    def __init__(self) -> None:
        self.hits = 0  # answered without signature work
        self.misses = 0  # verified in full (absent, expired, its key gone, or another issuer's rules)
        self.entries = 0  # tokens held by the current configuration's cache


class VerifiedTokenStatsCollector(Collector):
    def __init__(self, stats: VerifiedTokenStats):
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        yield CounterMetricFamily("authproxy_verified_token_cache_hits",
                                  "Bearer tokens accepted from the cache of verified tokens, without signature work.",
                                  value=stats.hits)
        yield CounterMetricFamily("authproxy_verified_token_cache_misses",
                                  "Bearer token checks the cache of verified tokens could not answer.", value=stats.misses)
        yield GaugeMetricFamily("authproxy_verified_token_cache_entries", "Tokens in the cache of verified tokens.",
                                value=stats.entries)


VERIFIED_TOKENS = VerifiedTokenStats()
REGISTRY.register(VerifiedTokenStatsCollector(VERIFIED_TOKENS))


class SessionCacheStats:
    """Session cache lookups in plain integers, as ``RequestStats``: a hit is on every
    signed-in request, and prometheus_client's Counter.inc takes a lock each time."""

    __slots__ = ("hits", "misses")

    def __init__(self) -> None:
        self.hits = 0  # answered by the local cache
        self.misses = 0  # went to the store


class SessionCacheStatsCollector(Collector):
    def __init__(self, stats: SessionCacheStats):
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily("authproxy_session_cache_hits", "Session lookups answered by the local cache.",
                                  value=self.stats.hits)
        yield CounterMetricFamily("authproxy_session_cache_misses", "Session lookups that went to the store.",
                                  value=self.stats.misses)


SESSION_CACHE = SessionCacheStats()
REGISTRY.register(SessionCacheStatsCollector(SESSION_CACHE))


def exposition() -> bytes:
    return generate_latest(REGISTRY)


# --- workers under a supervisor ------------------------------------------------------


def write_snapshot(directory: str, name: str, text: bytes | None = None) -> None:
    """Atomically replace ``directory/name.prom`` with ``text``, by default this process's
    whole exposition."""
    target = Path(directory) / f"{name}.prom"
    temporary = target.with_suffix(".tmp")
    temporary.write_bytes(exposition() if text is None else text)
    os.replace(temporary, target)


def aggregate(snapshots: Iterable[tuple[str, bool]]) -> bytes:
    """Sum worker snapshots (text, alive): counters and histograms over all, gauges over live ones."""
    families: dict[str, Metric] = {}
    values: dict[tuple[str, str, tuple[tuple[str, str], ...]], list[float]] = {}
    for text, alive in snapshots:
        for family in text_string_to_metric_families(text):
            if family.type == "gauge" and not alive:
                continue
            families.setdefault(family.name, Metric(family.name, family.documentation, family.type))
            for sample in family.samples:
                key = (family.name, sample.name, tuple(sorted(sample.labels.items())))
                values.setdefault(key, []).append(sample.value)
    for (family_name, sample_name, labels), found in values.items():
        family = families[family_name]
        if family.type == "gauge":
            value = GAUGE_MODES.get(family_name, sum)(found)  # type: ignore[operator]
        else:
            value = sum(found)
        family.add_sample(sample_name, dict(labels), value)

    class _Snapshot(Collector):
        def collect(self) -> Iterator[Metric]:
            return iter(families.values())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot())
    return generate_latest(registry)
