"""Request parameters (RFC 6749 3.1, 3.2) and redirect URIs with added parameters (3.1.2)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from multidict import MultiMapping


def _form_str(params: MultiMapping[Any], name: str) -> str | None:
    value = params.get(name)
    return value if isinstance(value, str) else None


def _single(params: MultiMapping[Any], name: str) -> str | None:
    """The parameter's value when given exactly once as text (RFC 6749 3.1, 3.2)."""
    values = params.getall(name, [])
    return values[0] if len(values) == 1 and isinstance(values[0], str) else None


def _with_query(url: str, params: Mapping[str, str]) -> str:
    """RFC 6749 3.1.2: keep the redirect URI's own query and add ours."""
    return url + ("&" if "?" in url else "?") + urlencode(params)
