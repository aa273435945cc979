"""Routes compiled once into matchers; the request path only asks questions.

First match wins. Matching is a pure function of (host, normalised path, method).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from yarl import URL

from authproxy.config.schema import Route as RouteConfig
from authproxy.config.schema import route_issuers
from authproxy.policy.allow import AllowRule
from authproxy.policy.inject import Template, parse_template
from authproxy.policy.paths import remove_dot_segments
from authproxy.proxy.upstream.origin import Origin

# RFC 9110 7.2 / RFC 3986 3.2.2: a reg-name (letters, digits, '-', '.', and '_' seen in
# practice) or a bracketed IPv6 literal, then an optional numeric port.
_HOST_HEADER = re.compile(r"(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


@dataclass(frozen=True, slots=True)
class HostPattern:
    """An exact host or a "*.example.com" wildcard (one or more labels before the suffix)."""

    exact: str | None
    suffix: str | None  # ".example.com" for "*.example.com"

    @classmethod
    def compile(cls, pattern: str) -> HostPattern:
        if pattern.startswith("*."):
            return cls(None, pattern[1:])
        return cls(pattern, None)

    def matches(self, host: str) -> bool:
        if self.exact is not None:
            return host == self.exact
        return host.endswith(self.suffix) and len(host) > len(self.suffix)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where a route forwards to: origin plus an optional base path."""

    url: URL
    origin: Origin
    base_path: str  # "" or "/base" (no trailing slash)
    host_header: str  # what the upstream expects in Host (port kept unless default)

    @classmethod
    def compile(cls, url: URL) -> Upstream:
        base_path = url.raw_path.rstrip("/")
        raw_host = url.raw_host or ""
        host = f"[{raw_host}]" if ":" in raw_host else raw_host  # IPv6 literal
        host_header = host if url.is_default_port() else f"{host}:{url.port}"
        return cls(url, Origin(url.scheme, raw_host, url.port or (443 if url.scheme == "https" else 80)), base_path,
                   host_header)


_TOKENS = frozenset({"access_token", "id_token", "service_token"})


class Route:
    """One compiled route: its matcher and everything the forwarder needs."""

    __slots__ = (
        "name",
        "config",
        "host",
        "prefix",
        "regex",
        "methods",
        "upstream",
        "strip_prefix",
        "preserve_host",
        "allow_encoded_slashes",
        "max_body",
        "connect_timeout",
        "read_timeout",
        "auth",
        "injections",
        "injects_id_token",
        "injects_tokens",
        "uses_service_token",
        "pass_authorization",
        "allow_method_override",
        "allow",
        "assertion",
        "service_token",
        "skip_auth_preflight",
        "bearer_issuers",
    )

    def __init__(self, config: RouteConfig, groups_claim: str = "groups"):
        match = config.match
        self.name = config.name
        self.config = config
        self.host = HostPattern.compile(match.host) if match.host else None
        prefix = match.path_prefix
        # "/api/a/" and "/api/a" both match the segment "/api/a" and what lies below it.
        self.prefix = prefix.rstrip("/") if prefix and prefix != "/" else None
        self.regex = re.compile(match.path_regex) if match.path_regex else None
        methods = set(match.methods) if match.methods else None
        if methods and "GET" in methods:
            methods.add("HEAD")  # HEAD is GET without the body (RFC 9110 9.3.2)
        self.methods = frozenset(methods) if methods else None
        self.upstream = Upstream.compile(config.upstream)
        self.strip_prefix = config.strip_prefix
        self.preserve_host = config.preserve_host
        self.allow_encoded_slashes = config.allow_encoded_slashes
        self.max_body = config.max_body or None
        self.connect_timeout = config.timeouts.connect
        self.read_timeout = config.timeouts.read
        self.auth = config.auth
        self.injections = _injections(config)
        self.injects_id_token = any("id_token" in template.uses for _, template in self.injections)
        # whether a rendered block holds a token (a bearer identity's is then never kept: see Gate)
        self.injects_tokens = any(template.uses & _TOKENS for _, template in self.injections)
        # a template names {service_token}: rendered per request (the token lives by its own expiry)
        self.uses_service_token = config.service_token is not None and any(
            "service_token" in template.uses for _, template in self.injections)
        self.pass_authorization = config.pass_authorization
        self.allow_method_override = config.allow_method_override
        self.allow = AllowRule.compile(config.allow, groups_claim) if config.allow is not None else None
        self.assertion = config.assertion
        self.service_token = config.service_token
        self.skip_auth_preflight = config.skip_auth_preflight
        # names of the issuers whose access tokens pass; the gate keys its iss -> issuer tables by this set
        self.bearer_issuers = frozenset(route_issuers(config))

    def __repr__(self) -> str:
        return f"Route({self.name!r})"

    def matched_length(self, host: str, path: str, method: str) -> int:
        """Length of the matched path part (>= 0) when the route applies, else -1."""
        if self.methods is not None and method not in self.methods:
            return -1
        if self.host is not None and not self.host.matches(host):
            return -1
        if self.prefix is not None:
            prefix = self.prefix
            if path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/"):
                return len(prefix)
            return -1
        if self.regex is not None:
            found = self.regex.match(path)
            return found.end() if found else -1
        return 0

    def upstream_path(self, path: str, matched: int) -> str:
        """The path sent upstream: prefix stripped if asked, base path prepended."""
        if self.strip_prefix and matched:
            path = path[matched:]
            if not path.startswith("/"):
                # A regex may stop mid-segment ("/v1" in "/v1../x"): what is left could be
                # a dot segment that would climb above the upstream's base path.
                path = remove_dot_segments("/" + path)
        base = self.upstream.base_path
        return base + path if base else path


_SERVICE_TOKEN_BEARER = parse_template("Bearer {service_token}")


def _injections(config: RouteConfig) -> tuple[tuple[str, Template], ...]:
    """The route's header templates; a service_token that no template names is sent as
    ``Authorization: Bearer {service_token}``, which is what an upstream API expects."""
    injections = list(config.inject.items())  # parsed once, by the schema
    if config.service_token is not None and not any("service_token" in template.uses for _, template in injections):
        injections.append(("Authorization", _SERVICE_TOKEN_BEARER))
    return tuple(injections)


class RouteTable:
    """The ordered routes; ``match`` returns the first that applies."""

    __slots__ = ("routes",)

    def __init__(self, routes: Sequence[RouteConfig], groups_claim: str = "groups"):
        self.routes = tuple(Route(config, groups_claim) for config in routes)

    def match(self, host: str, path: str, method: str) -> tuple[Route, int] | None:
        for route in self.routes:
            matched = route.matched_length(host, path, method)
            if matched >= 0:
                return route, matched
        return None


def valid_host_header(value: str) -> bool:
    """Whether a Host (or trusted X-Forwarded-Host) value is a host[:port] and nothing else."""
    return not value or _HOST_HEADER.fullmatch(value) is not None


def request_host(host_header: str | None) -> str:
    """The host part of a Host header value, lower-cased, without port or trailing dot."""
    if not host_header:
        return ""
    host = host_header.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    colon = host.rfind(":")
    if colon != -1:
        host = host[:colon]
    return host.rstrip(".")
