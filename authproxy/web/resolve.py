"""What a request is for: its method, host, normalised path and route (pure).

One function for the proxy path and for the forward-auth and Envoy checks, so a check
and the request it describes are matched by exactly the same rules.
"""

from __future__ import annotations

from typing import NamedTuple

from authproxy.errors import BadRequest
from authproxy.policy.paths import normalise_path
from authproxy.policy.routes import Route, RouteTable, request_host, valid_host_header


class Target(NamedTuple):
    method: str
    host_header: str  # host[:port] as sent (validated)
    path: str  # normalised: the path that is matched is the path that is forwarded
    query: str  # as sent, without "?"
    route: Route | None  # the first route that matches; None: none does
    matched: int  # length of the path part the route matched (for strip_prefix)
    encoded_slash: bool  # the path held %2F or %5C

    @property
    def path_qs(self) -> str:
        return self.path + "?" + self.query if self.query else self.path

    @property
    def slash_refused(self) -> bool:
        """An encoded slash on a route that does not allow them (answered 400, or 403 by a check)."""
        return self.encoded_slash and self.route is not None and not self.route.allow_encoded_slashes


def resolve(routes: RouteTable, method: str, host_header: str, raw_path: str, query: str) -> Target:
    """``raw_path`` (no query) normalised and matched; raises ``BadRequest`` for a path
    that cannot be normalised safely or a Host that is not a plain host[:port]."""
    normalised = normalise_path(raw_path)
    if not valid_host_header(host_header):
        raise BadRequest("the Host header is not a valid host[:port]")
    path = normalised.path
    host = request_host(host_header)
    # RouteTable.match, inlined: no (route, matched) tuple per request on the hot path.
    for route in routes.routes:
        matched = route.matched_length(host, path, method)
        if matched >= 0:
            return Target(method, host_header, path, query, route, matched, normalised.has_encoded_slash)
    return Target(method, host_header, path, query, None, -1, normalised.has_encoded_slash)
