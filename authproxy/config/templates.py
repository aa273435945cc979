"""The header template language of ``inject`` (pure): parsed once, when the configuration
loads, into ``Template`` values that the request path only renders.

Templates are parsed by this small parser (never ``str.format``, which would let a
template reach attributes):

    "Bearer {access_token}"  "{claims.email}"  "{claims.cognito:groups}"
    "{claims["https://example.com/roles"]}"    "{{literal braces}}"

Placeholders: access_token, id_token, sub, email, iss (the issuer that vouched for the identity:
the token's ``iss``, RFC 7519 4.1.1), service_token, claims.NAME (dotted
path; a name in ["..."] may hold dots). A list claim is joined with ","; a missing value leaves the
header out; a value that cannot be a header value (CR, LF, non-Latin-1) is dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_SIMPLE = frozenset({"access_token", "id_token", "sub", "email", "iss", "service_token"})
_SEGMENT = re.compile(r"""\.([^.\[\]{}"']+)|\["([^"]+)"\]|\['([^']+)'\]""")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 5.6.2 token


UNSAFE = "\x00unsafe"  # render()'s answer for a value that must not become a header


@dataclass(frozen=True, slots=True)
class Placeholder:
    name: str  # access_token | id_token | sub | email | iss | service_token | claims
    path: tuple[str, ...] = ()  # claim path for "claims"


class Template(str):
    """A header template: the text as the configuration wrote it (so it compares, prints
    and serialises as that text), and its ``parts``, parsed once."""

    parts: tuple[str | Placeholder, ...]

    def __new__(cls, text: str, parts: tuple[str | Placeholder, ...] | None = None) -> Template:
        template = super().__new__(cls, text)
        # parts None: made from the text alone (copy and pickle do that): parse it.
        template.parts = parse_template(text).parts if parts is None else parts
        return template

    def __repr__(self) -> str:
        return f"Template({str.__repr__(self)})"

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


def parse_template(text: str | Template) -> Template:
    """Raise ValueError naming the problem; the caller adds the config path. A ``Template``
    (the configuration holds them parsed) is returned as it is."""
    if isinstance(text, Template):
        return text
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
    return Template(text, tuple(parts))


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
        f"unknown placeholder {{{body}}}: use access_token, id_token, sub, email, iss, service_token, claims.NAME or "
        "claims['NAME']"
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
