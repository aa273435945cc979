"""The browser's cookies: a session ticket, short-lived sign-in transactions (pure).

The session cookie is only a ticket, ``<session id>.<session secret>`` (random, 192 and
256 bits): it holds no token. The store knows the id only by its hash; the secret
enters the key that encrypts the session's tokens (see ``crypto``).

Sign-in transactions live in a few fixed cookie names, slots ``<prefix>0`` to
``<prefix>{TRANSACTION_SLOTS - 1}``, each at most ``TRANSACTION_VALUE_MAX`` characters.
So the proxy's own cookies add at most ``OWN_COOKIES_MAX`` bytes to a Cookie header,
whatever the number, order and concurrency of sign-ins: parallel sign-ins (restored tabs)
never see each other's cookies, so no count of what a request carries could bound it.
Without the bound, 25 tabs left 25 cookies, a Cookie header over the server's limit, and a
browser that got 400 for every request until they expired.
"""

from __future__ import annotations

import hashlib
import random
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

TRANSACTION_SLOTS = 3  # sign-ins one browser can have under way at once
TRANSACTION_VALUE_MAX = 1200  # characters of one sealed transaction (rd <= 512 fits: see signin)
SESSION_VALUE_MAX = 76  # a ticket: 32 + 1 + 43
_NAME_MAX = 80  # cookie_name: 64 characters and a __Secure- prefix (schema); "-txn-N" adds 6
# "name=value" pairs joined by "; " (RFC 6265 5.4): 3 slots and the session stay under 4 KiB,
# half of limits.header_size's default, the rest left to the applications' own cookies.
OWN_COOKIES_MAX = (TRANSACTION_SLOTS + 1) * (_NAME_MAX + 3) + TRANSACTION_SLOTS * TRANSACTION_VALUE_MAX + SESSION_VALUE_MAX

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

    def slot_name(self, slot: int) -> str:
        return f"{self.transaction_prefix}{slot}"

    def slot_of(self, name: str) -> int | None:
        """The slot a cookie name is, or None (not a slot, e.g. an older release's name)."""
        index = name.removeprefix(self.transaction_prefix)
        if index != name and len(index) == 1 and index.isdigit() and int(index) < TRANSACTION_SLOTS:
            return int(index)
        return None

    def is_ours(self, name: str) -> bool:
        return name == self.session_name or name.startswith(self.transaction_prefix)

    def set_session(self, value: str, max_age: int) -> str:
        return self._header(self.session_name, value, max_age, self.domain)

    def clear_session(self) -> str:
        return self._header(self.session_name, "", 0, self.domain)

    def set_transaction(self, slot: int, value: str, max_age: int) -> str:
        if not 0 <= slot < TRANSACTION_SLOTS or len(value) > TRANSACTION_VALUE_MAX:
            raise ValueError("a transaction cookie takes one of the slots, within the size bound")
        return self._header(self.slot_name(slot), value, max_age, None)

    def clear_transaction(self, slot: int) -> str:
        return self.clear_named(self.slot_name(slot))

    def clear_transactions(self) -> list[str]:
        """Set-Cookie values that delete every slot (the refusal page's way out of a
        Cookie header too long to parse: the browser's next try works)."""
        return [self.clear_transaction(slot) for slot in range(TRANSACTION_SLOTS)]

    def clear_named(self, name: str) -> str:
        return self._header(name, "", 0, None)

    def _header(self, name: str, value: str, max_age: int, domain: str | None) -> str:
        parts = [f"{name}={value}", "Path=/", f"Max-Age={max_age}", "HttpOnly", "SameSite=Lax"]
        if domain:
            parts.append(f"Domain={domain}")
        if self.secure:
            parts.append("Secure")
        return "; ".join(parts)


def choose_slot(started: Sequence[int | None], choice: Callable[[Sequence[int]], int] = random.choice) -> int:
    """The slot a new sign-in takes. ``started[i]``: when the live transaction in slot ``i``
    started, None when the slot is free (absent, unreadable or expired).

    A free slot, picked at random: sign-ins started at once all see the same cookies, so
    spreading them lets up to ``TRANSACTION_SLOTS`` of them complete rather than one.
    With none free, the oldest is overwritten: its sign-in is the least likely to come back.
    """
    free = [slot for slot, at in enumerate(started) if at is None]
    if free:
        return choice(free)
    return min(range(len(started)), key=lambda slot: (started[slot], slot))


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


class CookieMemo:
    """What the proxy reads from a Cookie header, worked out once per distinct header: its
    session ticket with that ticket's cache key, and the header without the proxy's own
    cookies (what an upstream gets). A browser sends the same header request after request,
    and parsing and hashing it every time cost ~2 µs of a ~75 µs request (bench/RESULTS.md).
    Pure functions of the header, so a memo never decides anything the parse would not:
    the session itself is looked up every time. Bounded: headers of at most
    ``MAX_HEADER`` characters, at most ``LIMIT`` of them, and it starts over when full."""

    LIMIT = 256
    MAX_HEADER = 4096
    __slots__ = ("_policy", "_key_for", "_tickets", "_upstream")

    def __init__(self, policy: CookiePolicy, key_for: Callable[[str], str]):
        self._policy = policy
        self._key_for = key_for  # the session cache's key for a ticket's cookie value
        self._tickets: dict[str, tuple[SessionTicket, str] | None] = {}
        self._upstream: dict[str, str | None] = {}

    def ticket(self, header: str | None) -> tuple[SessionTicket, str] | None:
        """The session ticket the header carries and its cache key; None: none (or malformed)."""
        if header is None:
            return None
        tickets = self._tickets
        try:
            return tickets[header]
        except KeyError:
            pass
        ticket = SessionTicket.parse(request_cookies(header).get(self._policy.session_name))
        found = (ticket, self._key_for(ticket.encode())) if ticket is not None else None
        if len(header) <= self.MAX_HEADER:
            if len(tickets) >= self.LIMIT:
                tickets.clear()
            tickets[header] = found
        return found

    def for_upstream(self, header: str) -> str | None:
        """``without_own_cookies(header)``."""
        upstream = self._upstream
        try:
            return upstream[header]
        except KeyError:
            pass
        kept = without_own_cookies(header, self._policy)
        if len(header) <= self.MAX_HEADER:
            if len(upstream) >= self.LIMIT:
                upstream.clear()
            upstream[header] = kept
        return kept

