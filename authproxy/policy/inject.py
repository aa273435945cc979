"""Identity injection's request side, and the headers nobody may spoof (pure).

The template language itself (``Template``, ``parse_template``) lives in
config/templates.py: templates are parsed once, when the configuration loads.
"""

from __future__ import annotations

import functools

from collections.abc import Iterable, Mapping
from typing import Any

from authproxy.config.templates import (  # noqa: F401 - re-exported: the injection vocabulary in one import
    UNSAFE,
    Placeholder,
    Template,
    parse_template,
    render_safe,
    valid_header_name,
)

# Identity headers that peers (oauth2-proxy, ALB, Pomerium) or we set: never from a client.
SPOOFABLE_PREFIXES = ("x-auth-request-", "x-authproxy-", "x-amzn-oidc-")
SPOOFABLE_NAMES = frozenset(
    {"x-forwarded-user", "x-forwarded-email", "x-forwarded-groups", "x-forwarded-access-token", "x-forwarded-preferred-username"}
)
# The names under SPOOFABLE_PREFIXES that peers and we use, for callers that can only remove
# headers by exact name (Envoy's x-envoy-auth-headers-to-remove).
KNOWN_PREFIXED_NAMES = frozenset({
    "x-auth-request-user", "x-auth-request-email", "x-auth-request-groups", "x-auth-request-access-token",
    "x-auth-request-preferred-username", "x-auth-request-cookie", "x-auth-request-redirect",
    "x-authproxy-assertion", "x-amzn-oidc-data", "x-amzn-oidc-identity", "x-amzn-oidc-accesstoken",
})


def normalised(name: str) -> str:
    """Header names compared case-insensitively with "_" equal to "-" (servers that map
    one to the other would otherwise let X_User_Email through)."""
    return name.lower().replace("_", "-")


# Headers by which Rails, Express (method-override), Symfony, Spring and others let a
# request claim another method: the route matched and its rules admitted the method on the
# request line, so another one must not reach the upstream unless the route allows it.
METHOD_OVERRIDE_NAMES = frozenset({"x-http-method-override", "x-http-method", "x-method-override"})


class SpoofGuard:
    """Decides, per route, which client headers never reach the upstream."""

    def __init__(self, injected_anywhere: Iterable[str]):
        self._names = SPOOFABLE_NAMES | {normalised(name) for name in injected_anywhere}
        # Four possible answers, asked on every Envoy check: worked out once each.
        self.exact_names = functools.lru_cache(maxsize=4)(self._exact_names)

    def _exact_names(self, pass_authorization: bool, allow_method_override: bool) -> frozenset[str]:
        """Every name ``strips`` refuses that can be written out (prefixes cannot: see
        KNOWN_PREFIXED_NAMES), lower-case."""
        names = set(self._names | KNOWN_PREFIXED_NAMES)
        names.discard("authorization")  # injected somewhere, but decided per route below
        if not pass_authorization:
            names.add("authorization")
        if not allow_method_override:
            names |= METHOD_OVERRIDE_NAMES
        return frozenset(names)

    def strips(self, name: str, pass_authorization: bool, allow_method_override: bool = False) -> bool:
        key = normalised(name)
        if key == "authorization":
            return not pass_authorization
        if key in METHOD_OVERRIDE_NAMES:
            return not allow_method_override
        return key in self._names or key.startswith(SPOOFABLE_PREFIXES)


def groups_of(claims: Mapping[str, Any], claim: str) -> list[str]:
    """The groups claim as a list of strings (a single string counts as one group)."""
    value = claims.get(claim)
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, (list, tuple)):
        return [str(item) for item in value]
    return []
