import pytest

from authproxy.oidc.client import JwksCache
from authproxy.oidc.endpoints import DiscoveryInvalid, for_cognito, from_discovery, logout_url

ISSUER = "https://idp.example.com"
DOCUMENT = {
    "issuer": ISSUER,
    "authorization_endpoint": ISSUER + "/auth",
    "token_endpoint": ISSUER + "/token",
    "jwks_uri": ISSUER + "/jwks",
    "revocation_endpoint": ISSUER + "/revoke",
    "end_session_endpoint": ISSUER + "/logout",
    "code_challenge_methods_supported": ["S256"],
    "authorization_response_iss_parameter_supported": True,
}


def test_discovery():
    endpoints = from_discovery(DOCUMENT, ISSUER, {})
    assert endpoints.token == ISSUER + "/token" and endpoints.end_session == ISSUER + "/logout"
    assert endpoints.iss_parameter_supported and endpoints.cognito_logout is None


def test_overrides_win():
    endpoints = from_discovery(DOCUMENT, ISSUER, {"jwks_uri": "https://keys.example.com/jwks", "token": None})
    assert endpoints.jwks_uri == "https://keys.example.com/jwks" and endpoints.token == ISSUER + "/token"


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"issuer": ISSUER + "/"}, "issuer"),  # exact match (OIDC Discovery 4.3)
        ({"token_endpoint": None}, "token"),
        ({"code_challenge_methods_supported": ["plain"]}, "S256"),
    ],
)
def test_unusable_discovery(change, words):
    document = {**DOCUMENT, **change}
    with pytest.raises(DiscoveryInvalid) as caught:
        from_discovery({k: v for k, v in document.items() if v is not None}, ISSUER, {})
    assert words in str(caught.value)


def test_cognito_profile():
    issuer = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123"
    endpoints = for_cognito(issuer, "https://auth.example.com/", {})
    assert endpoints.authorization == "https://auth.example.com/oauth2/authorize"
    assert endpoints.token == "https://auth.example.com/oauth2/token"
    assert endpoints.revocation == "https://auth.example.com/oauth2/revoke"
    assert endpoints.cognito_logout == "https://auth.example.com/logout"
    assert endpoints.jwks_uri == issuer + "/.well-known/jwks.json"
    assert not endpoints.iss_parameter_supported  # Cognito sends no RFC 9207 iss
    assert for_cognito(issuer, "https://a", {"jwks_uri": "http://127.0.0.1:5000/p/.well-known/jwks.json"}).jwks_uri.startswith("http://127")


def test_logout_urls():
    cognito = for_cognito("https://cognito-idp.eu-west-1.amazonaws.com/p", "https://auth.example.com", {})
    assert logout_url(cognito, client_id="c1", after="https://app.example.com/", id_token="t", fallback="/") == (
        "https://auth.example.com/logout?client_id=c1&logout_uri=https%3A%2F%2Fapp.example.com%2F"
    )  # no id_token_hint: Cognito's /logout is not RP-initiated logout
    generic = from_discovery(DOCUMENT, ISSUER, {})
    url = logout_url(generic, client_id="c1", after="https://app.example.com/", id_token="t", fallback="/")
    assert url == (ISSUER + "/logout?post_logout_redirect_uri=https%3A%2F%2Fapp.example.com%2F&client_id=c1&id_token_hint=t")
    bare = from_discovery({k: v for k, v in DOCUMENT.items() if k != "end_session_endpoint"}, ISSUER, {})
    assert logout_url(bare, client_id="c1", after="x", id_token="t", fallback="/back") == "/back"


async def test_jwks_refetch_is_rate_limited():
    now = [100.0]
    calls = []

    async def fetch():
        calls.append(now[0])
        return f"keys-{len(calls)}"

    cache = JwksCache(fetch, min_interval=10, clock=lambda: now[0])
    assert await cache.load() == "keys-1"
    assert await cache.refresh_if_allowed() is False  # just fetched
    now[0] += 9.9
    assert await cache.refresh_if_allowed() is False
    now[0] += 0.2
    assert await cache.refresh_if_allowed() is True and cache.keys == "keys-2"
    assert calls == [100.0, pytest.approx(110.1)]
