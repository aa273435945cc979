"""The upstream HTTP/1.1 client: pooled keep-alive connections, streaming both ways.

Why our own and not aiohttp's ClientSession: a reverse proxy needs a fraction of a
general client (no cookies, redirects, auth, proxies, compression, multipart), and
that general machinery was the largest single cost per proxied request (bench/RESULTS.md).
What is left is small, one part per module, as uvicorn and aiohttp split theirs:

- ``origin``: where connections go (the pool's key).
- ``head``: the request head, serialised (pure). A body of unknown length goes chunked
  (RFC 9112 7.1); a bodiless POST says ``Content-Length: 0`` (RFC 9110 8.6).
- ``framing``: how a response's body ends, from its status, headers and the request's
  method, or why it cannot be framed (pure; RFC 9112 6.3). Never guessed: only
  ``chunked`` is an accepted transfer coding, a status outside 100-599 or more than 256
  header lines are refused (RFC 9112 11.2: request smuggling).
- ``buffer``: a response body that arrived and is not read yet; reading from the
  upstream pauses above ``HIGH_WATER`` unread bytes.
- ``response``: ``UpstreamResponse``, the proxy's view: status, headers, the body, the upload.
- ``protocol``: one connection, its bytes parsed by llhttp (through httptools, the parser
  uvicorn uses). 1xx responses are skipped (RFC 9110 15.2); heads over 64 KiB and any
  byte after a complete response make the connection unusable.
- ``upload``: the request body, written while the response is awaited (so an upstream
  may answer early), with backpressure.
- ``pool``: ``UpstreamPool``, connections per origin and the request itself; a request
  that finds a reused connection closed is sent again on a new one when that is safe
  (idempotent, no body: RFC 9110 9.2.2).

Failures are typed: ``UpstreamUnavailable`` (refused, reset, invalid_response) and
``UpstreamTimeout``; a client body that fails its limits raises its own refusal, and a
client that left during its upload ``ClientBodyFailed``. Timeouts as nginx's: ``read``
between two reads from the upstream, counted once the request is sent; the same span
for each write of the request body (send timeout).

Imports go one way: pool → upload → protocol → response → buffer; head, framing and
origin import none of the others, and nothing here imports ``policy`` (routes build
their origins from this package's ``Origin``).
"""

from authproxy.proxy.upstream.origin import Origin
from authproxy.proxy.upstream.pool import UpstreamPool
from authproxy.proxy.upstream.response import UpstreamResponse
from authproxy.proxy.upstream.upload import ClientBodyFailed

__all__ = ["ClientBodyFailed", "Origin", "UpstreamPool", "UpstreamResponse"]
