"""Where upstream connections go: scheme, host and port, the connection pool's key."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Origin:
    """Where upstream connections go; the connection pool's key."""

    scheme: str
    host: str  # as for connecting: an IPv6 literal without brackets
    port: int

    @property
    def tls(self) -> bool:
        return self.scheme == "https"
