import base64
import hashlib
from urllib.parse import parse_qs, urlsplit

import pytest

from authproxy.oidc.flow import TRANSACTION_LIFETIME, Transaction, authorization_url, code_challenge


def test_rfc7636_appendix_b_example():
    assert code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_transaction_values_are_fresh_and_strong():
    first, second = Transaction.start("/a", 1000), Transaction.start("/a", 1000)
    assert first.state != second.state and first.nonce != second.nonce and first.code_verifier != second.code_verifier
    assert len(base64.urlsafe_b64decode(first.state + "==")) >= 16  # >= 128 bits
    assert 43 <= len(first.code_verifier) <= 128


def test_transaction_round_trip_and_expiry():
    transaction = Transaction.start("/back?x=1", 1000)
    assert Transaction.from_bytes(transaction.to_bytes()) == transaction
    assert not transaction.expired(1000 + TRANSACTION_LIFETIME - 1)
    assert transaction.expired(1000 + TRANSACTION_LIFETIME)
    assert transaction.expired(999)  # from the future: not ours
    with pytest.raises(ValueError):
        Transaction.from_bytes(b'{"state": "x"}')
    with pytest.raises(ValueError):
        Transaction.from_bytes(b"\xff")


def test_authorization_url():
    transaction = Transaction.start("/", 1000)
    url = authorization_url(
        "https://auth.example.com/oauth2/authorize",
        client_id="abc",
        redirect_uri="https://app.example.com/oauth2/callback",
        scopes=["openid", "email"],
        transaction=transaction,
        extra={"identity_provider": "Google", "state": "attacker"},
    )
    parts = urlsplit(url)
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    assert parts.path == "/oauth2/authorize"
    assert query == {
        "identity_provider": "Google",
        "response_type": "code",
        "client_id": "abc",
        "redirect_uri": "https://app.example.com/oauth2/callback",
        "scope": "openid email",
        "state": transaction.state,  # extra parameters never override the protocol's
        "nonce": transaction.nonce,
        "code_challenge": base64.urlsafe_b64encode(hashlib.sha256(transaction.code_verifier.encode()).digest())
        .rstrip(b"=")
        .decode(),
        "code_challenge_method": "S256",
    }
    assert authorization_url("https://idp/auth?tenant=1", client_id="a", redirect_uri="r", scopes=["openid"],
                             transaction=transaction).startswith("https://idp/auth?tenant=1&")
