"""The original request a forward-auth caller asks about (pure).

nginx ``auth_request`` and Traefik ``forwardAuth`` call ``/oauth2/auth`` with headers that
describe the request they are about to serve: nginx by whatever ``proxy_set_header``
lines the operator wrote (``X-Original-URI``/``-Method`` by convention), Traefik with
``X-Forwarded-Uri``/``-Method``/``-Host``. Both also pass on every header of the client's
own request, so a client can add a description of its own. If we believed one header
set and the caller set the other, the client would choose what is checked while the
caller serves something else: ``GET /admin`` with ``X-Forwarded-Uri: /public`` would be
judged as ``/public``.

So the description is read from every header that can carry it, and a request whose
headers describe the original request in two different ways is refused: whichever one
the caller wrote, the other is the client's, and we cannot tell which. A caller that sets
every description header itself (the shipped examples do) overwrites the client's copies,
so a client's addition can only make its own request fail, never change what is checked.
The same goes for a header sent twice, and for a host list with two different hosts.
"""

from __future__ import annotations

from dataclasses import dataclass

from multidict import CIMultiDictProxy

from authproxy.errors import BadRequest

URI_HEADERS = ("X-Forwarded-Uri", "X-Original-URI")
METHOD_HEADERS = ("X-Forwarded-Method", "X-Original-Method")
HOST_HEADERS = ("X-Forwarded-Host",)


@dataclass(frozen=True, slots=True)
class OriginalRequest:
    method: str
    target: str  # path and query, as sent (normalised by the caller of describe())
    host: str  # host[:port] as sent; validated by the caller


def _one(headers: CIMultiDictProxy[str], names: tuple[str, ...], what: str, *, split_commas: bool = False,
         fold_case: bool = False) -> str | None:
    values = []
    for name in names:
        for value in headers.getall(name, ()):
            parts = value.split(",") if split_commas else (value,)
            values.extend(part.strip() for part in parts)
    distinct = {value.upper() if fold_case else value for value in values}
    if len(distinct) > 1:
        raise BadRequest(f"the original request's {what} is described more than once, differently "
                         f"({', '.join(names)}); a forward-auth caller must set these itself")
    return values[0] if values else None


def describe(headers: CIMultiDictProxy[str]) -> OriginalRequest:
    """The one description of the original request in ``headers``, or ``BadRequest``."""
    target = _one(headers, URI_HEADERS, "URI")
    if not target:
        raise BadRequest("forward-auth needs X-Forwarded-Uri or X-Original-URI describing the original request")
    method = (_one(headers, METHOD_HEADERS, "method", fold_case=True) or "GET").upper()
    host = _one(headers, HOST_HEADERS, "host", split_commas=True) or headers.get("Host", "")
    return OriginalRequest(method=method, target=target, host=host)
