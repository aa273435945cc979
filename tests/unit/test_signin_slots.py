"""Transaction-cookie slots: a few fixed names, the oldest overwritten, each of bounded
size, so the proxy's own cookies can never push a Cookie header over the limit
(hardening item 4)."""

from __future__ import annotations

import random

import pytest

from authproxy.config.load import parse_config
from authproxy.oidc.flow import Transaction
from authproxy.oidc.redirects import MAX_TARGET_LENGTH
from authproxy.session.cookies import (
    OWN_COOKIES_MAX,
    SESSION_VALUE_MAX,
    TRANSACTION_SLOTS,
    TRANSACTION_VALUE_MAX,
    CookiePolicy,
    SessionTicket,
    choose_slot,
    request_cookies,
)
from authproxy.store.memory import MemoryStore

CONFIG = """
public_url: https://app.example.com
oidc: {issuer: "https://idp.example.com", client_id: c, client_secret: s}
session: {secrets: ["0123456789abcdef0123456789abcdef"], cookie_name: "__Secure-%s"}
routes: [{name: app, upstream: "http://127.0.0.1:9", auth: login}]
"""


def test_a_free_slot_is_taken_at_random_the_oldest_overwritten_when_none_is_free():
    assert choose_slot([None, None, None], choice=lambda free: free[-1]) == 2
    assert choose_slot([5, None, 7], choice=lambda free: free[0]) == 1
    assert choose_slot([30, 10, 20]) == 1
    assert choose_slot([10, 10, 20]) == 0  # a tie: the lowest
    picked = {choose_slot([None, 3, None]) for _ in range(200)}
    assert picked == {0, 2}  # spread: parallel sign-ins that see the same cookies


@pytest.mark.parametrize("https", [True, False])
def test_slot_names_and_their_clearing_match_how_they_are_set(https):
    policy = CookiePolicy.build(https=https, cookie_name=None, cookie_domain="example.com" if https else None)
    names = [policy.slot_name(slot) for slot in range(TRANSACTION_SLOTS)]
    assert len(set(names)) == TRANSACTION_SLOTS
    assert all(policy.slot_of(name) == slot for slot, name in enumerate(names))
    assert all(policy.is_ours(name) for name in names)
    for stray in (policy.transaction_prefix + "0123456789abcdef", policy.transaction_prefix + str(TRANSACTION_SLOTS),
                  policy.transaction_prefix, "authproxy", "other-txn-0"):
        assert policy.slot_of(stray) is None
    for slot, cleared in enumerate(policy.clear_transactions()):
        set_line = policy.set_transaction(slot, "v", 600)
        assert cleared.split(";")[0] == f"{names[slot]}="
        # the same attributes (Path, HttpOnly, SameSite, Secure, no Domain: host-only) with Max-Age=0
        assert cleared.split(";")[1] == set_line.split(";")[1] and cleared.split(";")[3:] == set_line.split(";")[3:]
        assert cleared.split(";")[2] == " Max-Age=0"
        assert "Domain" not in cleared
    if https:
        assert all(name.startswith("__Host-") for name in names)


def test_set_transaction_refuses_what_would_break_the_bound():
    policy = CookiePolicy.build(https=False, cookie_name=None, cookie_domain=None)
    with pytest.raises(ValueError):
        policy.set_transaction(TRANSACTION_SLOTS, "v", 600)
    with pytest.raises(ValueError):
        policy.set_transaction(0, "v" * (TRANSACTION_VALUE_MAX + 1), 600)


def _sign_in(cookie_name: str):
    from authproxy.web.signin import SignIn

    config = parse_config(CONFIG % cookie_name, "test.yaml", {})

    class NoProvider:
        client = None

    return SignIn(config, NoProvider(), MemoryStore())  # type: ignore[arg-type]


def test_the_longest_valid_rd_fits_a_slot_and_all_cookies_fit_half_the_header_limit():
    longest_name = "n" * 64
    sign_in = _sign_in(longest_name)
    for target in ("/" + "a" * (MAX_TARGET_LENGTH - 1), "https://app.example.com/" + "b" * (MAX_TARGET_LENGTH - 24)):
        assert sign_in.redirects.safe_target(target) == target
        transaction = Transaction.start(target, 1_700_000_000)
        sealed = sign_in._seal_transaction(transaction)
        assert len(sealed) <= TRANSACTION_VALUE_MAX
        assert sign_in._open_transaction(sealed)[1] == transaction
    # the worst case: every slot full at the bound, the session ticket, the longest names
    policy = sign_in.cookies
    pairs = [f"{policy.slot_name(slot)}={'v' * TRANSACTION_VALUE_MAX}" for slot in range(TRANSACTION_SLOTS)]
    pairs.append(f"{policy.session_name}={SessionTicket.new().encode()}")
    header = "; ".join(pairs)
    assert len(SessionTicket.new().encode()) <= SESSION_VALUE_MAX
    assert len(header) <= OWN_COOKIES_MAX <= 4096  # half of limits.header_size's default


def test_a_browser_holds_at_most_the_slots_whatever_the_order_and_concurrency():
    """A model browser: batches of parallel /start that each see only the cookies set
    before the batch left, answers applied in any order."""
    sign_in = _sign_in("authproxy")
    rng = random.Random(7)
    jar: dict[str, str] = {}

    class Request:
        def __init__(self, cookie: str):
            self.headers = {"Cookie": cookie}

    for _ in range(40):
        sent = "; ".join(f"{n}={v}" for n, v in jar.items())
        answers = []
        for _ in range(rng.randint(1, 30)):
            pending, strays = sign_in._pending_sign_ins(Request(sent))  # type: ignore[arg-type]
            assert strays == []
            slot = choose_slot([at if t is not None else None for at, t in pending])
            value = sign_in._seal_transaction(Transaction.start("/" + "x" * rng.randint(0, 500), 1_700_000_000))
            answers.append(sign_in.cookies.set_transaction(slot, value, 600))
        rng.shuffle(answers)
        for line in answers:
            name, _, value = line.split(";")[0].partition("=")
            jar[name] = value
        assert len(jar) <= TRANSACTION_SLOTS
        assert len("; ".join(f"{n}={v}" for n, v in jar.items())) <= OWN_COOKIES_MAX
        assert all(sign_in.cookies.slot_of(name) is not None for name in request_cookies(sent))


def test_an_earlier_release_s_transaction_cookies_are_cleared_on_the_next_start():
    sign_in = _sign_in("authproxy")

    prefix = sign_in.cookies.transaction_prefix

    class Request:
        headers = {"Cookie": f"{prefix}0123456789abcdef=old; {prefix}1=garbage; theirs=1"}

    pending, strays = sign_in._pending_sign_ins(Request())  # type: ignore[arg-type]
    assert strays == [f"{prefix}0123456789abcdef"]
    assert all(t is None for _, t in pending)  # an unreadable slot is free
