"""The browser's cookies: a session ticket, short-lived sign-in transactions (pure).

The session cookie is only a ticket, ``<session id>.<session secret>`` (random, 192 and
256 bits): it holds no token. The store knows the id only by its hash; the secret
enters the key that encrypts the session's tokens (see ``crypto``).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

_TICKET = re.compile(r"([A-Za-z0-9_-]{32})\.([A-Za-z0-9_-]{43})")


@dataclass(frozen=True, slots=True)
class SessionTicket:
    session_id: str
    secret: str

    @classmethod
    def new(cls) -> SessionTicket:
        return cls(secrets.token_urlsafe(24), secrets.token_urlsafe(32))

    @classmethod
    def parse(cls, value: str | None) -> SessionTicket | None:
        match = _TICKET.fullmatch(value or "")
        return cls(match.group(1), match.group(2)) if match else None

    def encode(self) -> str:
        return f"{self.session_id}.{self.secret}"

    @property
    def key(self) -> str:
        """The store key: a hash of the id, so the cookie cannot be rebuilt from the store."""
        return hashlib.sha256(self.session_id.encode()).hexdigest()

    def __repr__(self) -> str:
        return "SessionTicket(***)"


@dataclass(frozen=True, slots=True)
class CookiePolicy:
    """Names and attributes of the proxy's cookies, fixed at start-up."""

    session_name: str
    transaction_prefix: str
    secure: bool
    domain: str | None

    @classmethod
    def build(cls, *, https: bool, cookie_name: str | None, cookie_domain: str | None) -> CookiePolicy:
        if cookie_name is None:
            base = "authproxy"
            # __Host- pins the cookie to this host, path / and Secure; a shared domain
            # cookie can only be __Secure- (RFC 6265bis 4.1.3).
            prefix = ("__Secure-" if cookie_domain else "__Host-") if https else ""
            cookie_name = prefix + base
        transaction_prefix = cookie_name.removeprefix("__Host-").removeprefix("__Secure-") + "-txn-"
        if https:
            transaction_prefix = "__Host-" + transaction_prefix
        return cls(cookie_name, transaction_prefix, https, cookie_domain)

    def transaction_name(self, state: str) -> str:
        # One cookie per sign-in, so sign-ins started in parallel tabs all complete.
        return self.transaction_prefix + hashlib.sha256(state.encode()).hexdigest()[:16]

    def is_ours(self, name: str) -> bool:
        return name == self.session_name or name.startswith(self.transaction_prefix)

    def set_session(self, value: str, max_age: int) -> str:
        return self._header(self.session_name, value, max_age, self.domain)

    def clear_session(self) -> str:
        return self._header(self.session_name, "", 0, self.domain)

    def set_transaction(self, state: str, value: str, max_age: int) -> str:
        return self._header(self.transaction_name(state), value, max_age, None)

    def clear_transaction(self, state: str) -> str:
        return self.clear_named(self.transaction_name(state))

    def clear_named(self, name: str) -> str:
        return self._header(name, "", 0, None)

    def _header(self, name: str, value: str, max_age: int, domain: str | None) -> str:
        parts = [f"{name}={value}", "Path=/", f"Max-Age={max_age}", "HttpOnly", "SameSite=Lax"]
        if domain:
            parts.append(f"Domain={domain}")
        if self.secure:
            parts.append("Secure")
        return "; ".join(parts)


def request_cookies(header: str | None) -> dict[str, str]:
    """name -> value from a Cookie header (RFC 6265 5.4). Split by hand: one malformed
    cookie of someone else's (SimpleCookie drops the whole header then) must not hide
    ours. The first of two same-named cookies wins: browsers send the most specific
    (longest path, host-only) first, so a cookie tossed from a sibling domain loses."""
    cookies: dict[str, str] = {}
    for pair in (header or "").split(";"):
        name, sep, value = pair.partition("=")
        name = name.strip()
        if sep and name and name not in cookies:
            cookies[name] = value.strip()
    return cookies


def without_own_cookies(header: str, policy: CookiePolicy) -> str | None:
    """The Cookie header with the proxy's own cookies removed (None when nothing is left)."""
    kept = []
    for pair in header.split(";"):
        name = pair.split("=", 1)[0].strip()
        if name and not policy.is_ours(name):
            kept.append(pair.strip())
    return "; ".join(kept) or None
