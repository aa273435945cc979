"""session/cookies.py CookieMemo: the Cookie header read once per distinct header, giving
exactly what parsing it every time gives."""

from __future__ import annotations

from authproxy.session.cache import SessionCache
from authproxy.session.cookies import CookieMemo, CookiePolicy, SessionTicket, request_cookies, without_own_cookies

POLICY = CookiePolicy("_authproxy", "_authproxy_tx_", False, None)


def parsed(header: str | None) -> tuple[SessionTicket, str] | None:
    ticket = SessionTicket.parse(request_cookies(header).get(POLICY.session_name))
    return (ticket, SessionCache.key_for(ticket.encode())) if ticket is not None else None


HEADERS = [
    None,
    "",
    "theme=dark",
    f"_authproxy={SessionTicket.new().encode()}",
    f"a=1; _authproxy={SessionTicket.new().encode()}; _authproxy_tx_0=x; b=2",
    f"_authproxy={SessionTicket.new().encode()}; _authproxy=not-a-ticket",  # the first one wins
    "_authproxy=short.ticket",
    f"_authproxy_tx_1=y; _authproxy={SessionTicket.new().encode()}x",  # one character too many
]


def test_the_memo_answers_as_the_parse_does_first_time_and_again():
    memo = CookieMemo(POLICY, SessionCache.key_for)
    for _ in range(2):
        for header in HEADERS:
            assert memo.ticket(header) == parsed(header), header
            if header is not None:
                assert memo.for_upstream(header) == without_own_cookies(header, POLICY), header


def test_it_stays_bounded_and_keeps_no_long_header():
    memo = CookieMemo(POLICY, SessionCache.key_for)
    for i in range(CookieMemo.LIMIT * 3):
        header = f"n={i}; _authproxy={SessionTicket.new().encode()}"
        assert memo.ticket(header) == parsed(header)
        assert memo.for_upstream(header) == "n=" + str(i)
    assert len(memo._tickets) <= CookieMemo.LIMIT and len(memo._upstream) <= CookieMemo.LIMIT
    long = "pad=" + "p" * CookieMemo.MAX_HEADER + f"; _authproxy={SessionTicket.new().encode()}"
    memo._tickets.clear()
    assert memo.ticket(long) == parsed(long) and long not in memo._tickets
