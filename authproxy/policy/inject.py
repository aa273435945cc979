"""Header templates for identity injection, and the headers nobody may spoof (pure).

Templates are parsed by this small parser (never ``str.format``, which would let a
template reach attributes) and compiled once at start-up:

    "Bearer {access_token}"  "{claims.email}"  "{claims.cognito:groups}"
    "{claims["https://example.com/roles"]}"    "{{literal braces}}"

Placeholders: access_token, id_token, sub, email, service_token, claims.NAME (dotted
path; a name in ["..."] may hold dots). A list claim is joined with ","; a missing value leaves the
header out; a value that cannot be a header value (CR, LF, non-Latin-1) is dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_SIMPLE = frozenset({"access_token", "id_token", "sub", "email", "service_token"})
_SEGMENT = re.compile(r"""\.([^.\[\]{}"']+)|\["([^"]+)"\]|\['([^']+)'\]""")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 5.6.2 token

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


UNSAFE = "\x00unsafe"  # render()'s answer for a value that must not become a header


@dataclass(frozen=True, slots=True)
class Placeholder:
    name: str  # access_token | id_token | sub | email | service_token | claims
    path: tuple[str, ...] = ()  # claim path for "claims"


@dataclass(frozen=True, slots=True)
class Template:
    parts: tuple[str | Placeholder, ...]

    @property
    def uses(self) -> frozenset[str]:
        return frozenset(part.name for part in self.parts if isinstance(part, Placeholder))

    def render(self, values: Mapping[str, Any], claims: Mapping[str, Any]) -> str | None:
        """The header value; None when a placeholder has no value; ``UNSAFE`` when the
        value cannot be a header value (CR, LF, NUL, non-Latin-1)."""
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value: Any = _claim(claims, part.path) if part.name == "claims" else values.get(part.name)
            if value is None or value == "":
                return None
            if isinstance(value, (list, tuple)):
                value = ",".join(_text(item) for item in value)
            out.append(_text(value))
        text = render_safe("".join(out))
        return UNSAFE if text is None else text


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # every control character but HTAB (RFC 9110 5.5)


def render_safe(text: str) -> str | None:
    """``text`` when it can be a header value as it is (no control characters, Latin-1), else None."""
    if _CONTROL.search(text):
        return None
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return None
    return text


def _text(value: Any) -> str:
    """A claim as header text: booleans as JSON spells them, objects as compact JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def parse_template(text: str) -> Template:
    """Raise ValueError naming the problem; the caller adds the config path."""
    if "\r" in text or "\n" in text:
        raise ValueError("a header value cannot hold CR or LF")
    parts: list[str | Placeholder] = []
    literal, index = [], 0
    while index < len(text):
        char = text[index]
        if text.startswith("{{", index) or text.startswith("}}", index):
            literal.append(char)
            index += 2
            continue
        if char == "}":
            raise ValueError("unmatched '}' (write '}}' for a literal brace)")
        if char != "{":
            literal.append(char)
            index += 1
            continue
        end = _closing(text, index)
        if literal:
            parts.append("".join(literal))
            literal = []
        parts.append(_placeholder(text[index + 1 : end]))
        index = end + 1
    if literal:
        parts.append("".join(literal))
    return Template(tuple(parts))


def _closing(text: str, start: int) -> int:
    in_quotes = False
    for index in range(start + 1, len(text)):
        char = text[index]
        if char == '"':
            in_quotes = not in_quotes
        elif char == "}" and not in_quotes:
            return index
    raise ValueError("unclosed '{'")


def _placeholder(body: str) -> Placeholder:
    body = body.strip()
    if body in _SIMPLE:
        return Placeholder(body)
    if body.startswith("claims") and len(body) > len("claims"):
        rest, path = body[len("claims") :], []
        position = 0
        for match in _SEGMENT.finditer(rest):
            if match.start() != position:
                break
            path.append(match.group(1) or match.group(2) or match.group(3))
            position = match.end()
        if position == len(rest) and path:
            return Placeholder("claims", tuple(path))
    raise ValueError(
        f"unknown placeholder {{{body}}}: use access_token, id_token, sub, email, service_token, claims.NAME or claims['NAME']"
    )


def _claim(claims: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = claims
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def valid_header_name(name: str) -> bool:
    return _HEADER_NAME.fullmatch(name) is not None


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

    def exact_names(self, pass_authorization: bool, allow_method_override: bool) -> frozenset[str]:
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
