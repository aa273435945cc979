"""The upstream HTTP/1.1 client, under the name its callers have always used: the
parts live in ``authproxy.proxy.upstream`` (head, framing, buffer, response, protocol,
upload, pool), described in that package's docstring."""

from authproxy.proxy.upstream import ClientBodyFailed, Origin, UpstreamPool, UpstreamResponse

__all__ = ["ClientBodyFailed", "Origin", "UpstreamPool", "UpstreamResponse"]
