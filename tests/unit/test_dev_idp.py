"""The development OpenID provider (authproxy.demo.idp): Cognito's endpoints and token shapes."""

from __future__ import annotations

import base64
import hashlib
import json
import signal
import subprocess
import sys
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from joserfc.jwk import KeySet

from authproxy.demo.idp import (
    CODE_LIFETIME,
    IDP_KEY,
    MachineClient,
    WebClient,
    create_app,
)
from authproxy.oidc.endpoints import for_cognito
from authproxy.oidc.verify import TokenInvalid, TokenRules, verify_token
from tests.support.forms import Forms
from tests.support.processes import (
    ROOT,
    child_env,
    free_port,
    http_get,
    stop_process,
    wait_for_port,
)

ISSUER = "http://idp.test:9400"
CLIENT_ID = "web-client"
CLIENT_SECRET = "web-secret"
REDIRECT_URI = "http://app.test/oauth2/callback"
LOGOUT_URI = "http://app.test/"
MACHINE_ID = "machine-client"
MACHINE_SECRET = "machine-secret"
VERIFIER = "v" * 43 + "-verifier._~"
NONCE = "nonce-123"
STATE = "state-<&>-456"


def challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def idp(aiohttp_client, clock):
    clients = [
        WebClient(CLIENT_ID, CLIENT_SECRET, [REDIRECT_URI], [LOGOUT_URI]),
        MachineClient(MACHINE_ID, MACHINE_SECRET, ["demo-api/read", "demo-api/write"]),
    ]
    return await aiohttp_client(create_app(ISSUER, clients, clock=clock))


def authorize_params(**change: str | None) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "scope": "openid email profile",
        "state": STATE,
        "nonce": NONCE,
        "code_challenge": challenge(VERIFIER),
        "code_challenge_method": "S256",
        **change,
    }
    return {name: value for name, value in params.items() if value is not None}


def callback_params(response: aiohttp.ClientResponse) -> dict[str, str]:
    assert response.status == 302, response.status
    location = response.headers["Location"]
    assert location.startswith(REDIRECT_URI + "?")
    return {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}


async def sign_in(idp, user: str = "alice", **change: str | None) -> str:
    """GET the sign-in page, click the user's button, return the code from the redirect.
    A new browser each time: the hosted UI's own cookie would sign the user in silently."""
    idp.session.cookie_jar.clear()
    page = await idp.get("/oauth2/authorize", params=authorize_params(**change))
    assert page.status == 200
    form = next(form for form in Forms(await page.text()).forms if ("pick", user) in form["buttons"])
    response = await idp.post(form["action"], data={**form["hidden"], "pick": user}, allow_redirects=False)
    params = callback_params(response)
    assert params["state"] == STATE
    return params["code"]


async def token_request(idp, form: dict[str, str], auth: dict[str, str] | None = None) -> tuple[int, dict]:
    headers = basic(CLIENT_ID, CLIENT_SECRET) if auth is None else auth
    response = await idp.post("/oauth2/token", data=form, headers=headers)
    return response.status, await response.json()


async def exchange(idp, code: str, verifier: str = VERIFIER, redirect_uri: str = REDIRECT_URI) -> tuple[int, dict]:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "code_verifier": verifier}
    return await token_request(idp, form)


async def public_keys(idp) -> KeySet:
    response = await idp.get("/.well-known/jwks.json")
    return KeySet.import_key_set(await response.json())


def id_rules(nonce: str | None = NONCE) -> TokenRules:
    return TokenRules(issuer=ISSUER, audiences=frozenset({CLIENT_ID}), token_use="id", nonce=nonce, id_token=True)


def access_rules(client_id: str = CLIENT_ID) -> TokenRules:
    return TokenRules(issuer=ISSUER, client_ids=frozenset({client_id}), token_use="access")


# ---------------------------------------------------------------- discovery and keys


async def test_discovery_names_the_paths_the_cognito_profile_derives(idp):
    response = await idp.get("/.well-known/openid-configuration")
    assert response.status == 200
    document = await response.json()
    derived = for_cognito(ISSUER, ISSUER + "/", {})
    assert document["issuer"] == ISSUER
    assert document["authorization_endpoint"] == derived.authorization
    assert document["token_endpoint"] == derived.token
    assert document["revocation_endpoint"] == derived.revocation
    assert document["userinfo_endpoint"] == derived.userinfo
    assert document["jwks_uri"] == derived.jwks_uri
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert set(document["grant_types_supported"]) == {"authorization_code", "refresh_token", "client_credentials"}
    for url in (derived.authorization, derived.jwks_uri, derived.cognito_logout):
        assert (await idp.get(urlsplit(url).path, allow_redirects=False)).status != 404


async def test_jwks_holds_two_rsa_signing_keys(idp):
    response = await idp.get("/.well-known/jwks.json")
    keys = (await response.json())["keys"]
    assert len(keys) == 2 and len({key["kid"] for key in keys}) == 2  # ID and access tokens: different kids
    for key in keys:
        assert (key["kty"], key["alg"], key["use"]) == ("RSA", "RS256", "sig")
        assert "d" not in key and "p" not in key  # public halves only


# ---------------------------------------------------------------- the code flow


async def test_sign_in_page_lists_the_demo_users_and_carries_the_request(idp):
    response = await idp.get("/oauth2/authorize", params=authorize_params())
    assert response.status == 200 and response.content_type == "text/html"
    assert response.headers["X-Frame-Options"] == "DENY"
    page = await response.text()
    assert "alice@example.com" in page and "bob@example.com" in page and "<script" not in page
    forms = Forms(page).forms
    buttons = [button for form in forms for button in form["buttons"]]
    assert ("pick", "alice") in buttons and ("pick", "bob") in buttons
    assert any({"username", "password"} <= set(form["inputs"]) for form in forms)
    assert all(form["hidden"] == authorize_params() for form in forms)  # state "<&>" survives escaping
    assert "state-&lt;&amp;&gt;-456" in page


async def test_code_flow_tokens_verify_under_cognito_rules(idp, clock):
    code = await sign_in(idp, "alice")
    status, body = await exchange(idp, code)
    assert status == 200, body
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600 and body["refresh_token"]
    keys = await public_keys(idp)
    now = int(clock())
    claims = verify_token(body["id_token"], keys, id_rules(), now)
    assert claims["email"] == "alice@example.com" and claims["email_verified"] is True
    assert claims["cognito:groups"] == ["admins"] and claims["cognito:username"] == "alice"
    assert claims["aud"] == CLIENT_ID and claims["exp"] - claims["iat"] == 3600 and claims["auth_time"] == now
    access = verify_token(body["access_token"], keys, access_rules(), now)
    assert "aud" not in access and access["client_id"] == CLIENT_ID
    assert access["username"] == "alice" and access["cognito:groups"] == ["admins"]
    assert access["scope"].split() == ["openid", "email", "profile"] and access["jti"]
    assert access["sub"] == claims["sub"] and access["exp"] - access["iat"] == 3600  # Cognito default, >= its 5-minute minimum
    with pytest.raises(TokenInvalid):  # an ID token is no access token
        verify_token(body["id_token"], keys, access_rules(), now)


async def test_a_user_without_groups_gets_no_groups_claim(idp, clock):
    status, body = await exchange(idp, await sign_in(idp, "bob"))
    assert status == 200
    claims = verify_token(body["id_token"], await public_keys(idp), id_rules(), int(clock()))
    assert claims["cognito:username"] == "bob" and "cognito:groups" not in claims
    alice = verify_token((await exchange(idp, await sign_in(idp, "alice")))[1]["id_token"], await public_keys(idp), id_rules(), int(clock()))
    assert alice["sub"] != claims["sub"]


async def test_client_secret_post_works_too(idp):
    code = await sign_in(idp)
    form = {
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": VERIFIER,
        "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
    }
    status, body = await token_request(idp, form, auth={})
    assert status == 200 and body["id_token"]


async def test_wrong_pkce_verifier_is_invalid_grant(idp):
    code = await sign_in(idp)
    status, body = await exchange(idp, code, verifier="w" * 43)
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_a_code_is_single_use_and_reuse_revokes_its_refresh_token(idp):
    code = await sign_in(idp)
    status, first = await exchange(idp, code)
    assert status == 200
    status, again = await exchange(idp, code)
    assert (status, again["error"]) == (400, "invalid_grant")
    status, refreshed = await token_request(idp, {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
    assert (status, refreshed["error"]) == (400, "invalid_grant")  # RFC 6749 4.1.2


async def test_code_expires_after_five_minutes(idp, clock):
    code = await sign_in(idp)
    clock.now += CODE_LIFETIME + 1
    status, body = await exchange(idp, code)
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_code_needs_the_same_redirect_uri(idp):
    code = await sign_in(idp)
    status, body = await exchange(idp, code, redirect_uri=REDIRECT_URI + "/other")
    assert (status, body["error"]) == (400, "invalid_grant")


@pytest.mark.parametrize(
    "change",
    [
        {"redirect_uri": "http://evil.test/oauth2/callback"},
        {"redirect_uri": REDIRECT_URI + "/"},  # exact match only
        {"redirect_uri": None},
        {"client_id": "nobody"},
        {"client_id": MACHINE_ID},
    ],
)
async def test_bad_client_or_redirect_uri_shows_an_error_and_never_redirects(idp, change):
    response = await idp.get("/oauth2/authorize", params=authorize_params(**change), allow_redirects=False)
    assert response.status == 400 and "Location" not in response.headers
    assert "evil.test" not in await response.text()


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": "email profile"}, "invalid_scope"),
        ({"scope": "openid demo-api/admin"}, "invalid_scope"),
        ({"code_challenge": None}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),
    ],
)
async def test_other_authorize_errors_go_back_to_the_client(idp, change, error):
    response = await idp.get("/oauth2/authorize", params=authorize_params(**change), allow_redirects=False)
    params = callback_params(response)
    assert params["error"] == error and "code" not in params
    # Like Cognito's, some error redirects carry no state (here: scope errors).
    assert params.get("state") == (None if error == "invalid_scope" else STATE)


async def test_wrong_password_gives_no_code(idp):
    page = await idp.get("/oauth2/authorize", params=authorize_params())
    form = next(form for form in Forms(await page.text()).forms if "password" in form["inputs"])
    data = {**form["hidden"], "username": "alice", "password": "bob"}
    response = await idp.post(form["action"], data=data, allow_redirects=False)
    assert response.status == 401 and "Location" not in response.headers
    text = await response.text()
    assert "Incorrect username or password" in text
    assert all(again["hidden"]["state"] == STATE for again in Forms(text).forms)  # kept for the next try
    response = await idp.post(form["action"], data={**data, "password": "alice"}, allow_redirects=False)
    assert callback_params(response)["code"]


async def test_signing_in_as_an_unknown_user_gives_no_code(idp):
    response = await idp.post("/oauth2/authorize", data={**authorize_params(), "pick": "mallory"}, allow_redirects=False)
    assert response.status == 401 and "Location" not in response.headers


async def test_a_forged_sign_in_post_is_validated_like_the_authorize_request(idp):
    data = {**authorize_params(redirect_uri="http://evil.test/"), "pick": "alice"}
    response = await idp.post("/oauth2/authorize", data=data, allow_redirects=False)
    assert response.status == 400 and "Location" not in response.headers


# ---------------------------------------------------------------- refresh, revocation, userInfo


async def test_refresh_returns_new_tokens_and_keeps_the_refresh_token(idp, clock):
    _, first = await exchange(idp, await sign_in(idp))
    auth_time = int(clock())
    clock.now += 100
    status, body = await token_request(idp, {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
    assert status == 200, body
    assert "refresh_token" not in body  # Cognito without rotation: keep the old one
    keys = await public_keys(idp)
    claims = verify_token(body["id_token"], keys, id_rules(nonce=None), int(clock()))
    assert "nonce" not in claims and claims["auth_time"] == auth_time and claims["iat"] == int(clock())
    access = verify_token(body["access_token"], keys, access_rules(), int(clock()))
    assert access["jti"] != verify_token(first["access_token"], keys, access_rules(), int(clock()))["jti"]
    status, again = await token_request(idp, {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
    assert status == 200 and again["access_token"]


async def test_revoked_refresh_token_is_invalid_grant(idp):
    _, tokens = await exchange(idp, await sign_in(idp))
    response = await idp.post("/oauth2/revoke", data={"token": tokens["refresh_token"]}, headers=basic(CLIENT_ID, CLIENT_SECRET))
    assert response.status == 200
    status, body = await token_request(idp, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert (status, body["error"]) == (400, "invalid_grant")
    response = await idp.post("/oauth2/revoke", data={"token": tokens["refresh_token"]}, headers=basic(CLIENT_ID, CLIENT_SECRET))
    assert response.status == 200  # RFC 7009 2.2: revoking again is fine


async def test_revocation_needs_client_authentication(idp):
    _, tokens = await exchange(idp, await sign_in(idp))
    response = await idp.post("/oauth2/revoke", data={"token": tokens["refresh_token"]}, headers=basic(CLIENT_ID, "wrong"))
    assert response.status == 400 and (await response.json())["error"] == "invalid_client"
    status, _ = await token_request(idp, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert status == 200


async def test_userinfo_answers_for_a_live_access_token_until_revoked(idp):
    _, tokens = await exchange(idp, await sign_in(idp))
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    response = await idp.get("/oauth2/userInfo", headers=bearer)
    assert response.status == 200
    assert (await response.json())["email"] == "alice@example.com"
    assert (await idp.get("/oauth2/userInfo", headers={"Authorization": f"Bearer {tokens['id_token']}"})).status == 401
    await idp.post("/oauth2/revoke", data={"token": tokens["refresh_token"]}, headers=basic(CLIENT_ID, CLIENT_SECRET))
    response = await idp.get("/oauth2/userInfo", headers=bearer)
    assert response.status == 401 and "invalid_token" in response.headers["WWW-Authenticate"]


# ---------------------------------------------------------------- client authentication and client_credentials


async def test_client_credentials_for_the_machine_client(idp, clock):
    form = {"grant_type": "client_credentials", "scope": "demo-api/read"}
    status, body = await token_request(idp, form, auth=basic(MACHINE_ID, MACHINE_SECRET))
    assert status == 200, body
    assert "id_token" not in body and "refresh_token" not in body and body["token_type"] == "Bearer"
    claims = verify_token(body["access_token"], await public_keys(idp), access_rules(MACHINE_ID), int(clock()))
    assert claims["sub"] == MACHINE_ID and claims["scope"] == "demo-api/read" and "username" not in claims


async def test_client_credentials_defaults_to_every_allowed_scope(idp, clock):
    status, body = await token_request(idp, {"grant_type": "client_credentials"}, auth=basic(MACHINE_ID, MACHINE_SECRET))
    assert status == 200
    claims = verify_token(body["access_token"], await public_keys(idp), access_rules(MACHINE_ID), int(clock()))
    assert set(claims["scope"].split()) == {"demo-api/read", "demo-api/write"}


@pytest.mark.parametrize(
    ("scope", "auth", "status", "error"),
    [
        ("demo-api/admin", basic(MACHINE_ID, MACHINE_SECRET), 400, "invalid_scope"),
        ("demo-api/read", basic(MACHINE_ID, "wrong"), 400, "invalid_client"),  # Cognito: 400, not RFC 6749's 401
        ("demo-api/read", basic(CLIENT_ID, CLIENT_SECRET), 400, "unauthorized_client"),
        ("demo-api/read", {}, 400, "invalid_client"),
    ],
)
async def test_client_credentials_refusals(idp, scope, auth, status, error):
    got_status, body = await token_request(idp, {"grant_type": "client_credentials", "scope": scope}, auth=auth)
    assert (got_status, body["error"]) == (status, error)
    assert "access_token" not in body


async def test_wrong_client_secret_is_400_invalid_client_as_cognito_answers(idp):
    code = await sign_in(idp)
    response = await idp.post(
        "/oauth2/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": VERIFIER},
        headers=basic(CLIENT_ID, "wrong"),
    )
    # Cognito's token endpoint answers 400 invalid_client, with no challenge (RFC 6749 5.2 would say 401)
    assert response.status == 400 and (await response.json())["error"] == "invalid_client"
    assert "WWW-Authenticate" not in response.headers


async def test_unknown_grant_type(idp):
    status, body = await token_request(idp, {"grant_type": "password", "username": "alice", "password": "alice"})
    assert (status, body["error"]) == (400, "unsupported_grant_type")


# ---------------------------------------------------------------- logout


async def test_logout_redirects_to_an_allowed_logout_uri(idp):
    response = await idp.get("/logout", params={"client_id": CLIENT_ID, "logout_uri": LOGOUT_URI}, allow_redirects=False)
    assert response.status == 302 and response.headers["Location"] == LOGOUT_URI


@pytest.mark.parametrize(
    "params",
    [
        {"client_id": CLIENT_ID, "logout_uri": "http://evil.test/"},
        {"client_id": "nobody", "logout_uri": LOGOUT_URI},
        {"client_id": CLIENT_ID},
    ],
)
async def test_logout_refuses_other_uris(idp, params):
    response = await idp.get("/logout", params=params, allow_redirects=False)
    assert response.status == 400 and "Location" not in response.headers


# ---------------------------------------------------------------- the state stays bounded


async def test_unredeemed_codes_expire_out_of_memory(idp, clock):
    provider = idp.server.app[IDP_KEY]
    await sign_in(idp)
    assert len(provider._codes) == 1
    clock.now += CODE_LIFETIME + 1
    await sign_in(idp)
    assert len(provider._codes) == 1  # the expired one went when the new one came


# ---------------------------------------------------------------- the command


def test_dev_idp_command_serves_discovery_and_stops_on_sigterm():
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "authproxy", "dev-idp", "--port", str(port)],
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port, process=process)
        status, body = http_get(f"http://127.0.0.1:{port}/.well-known/openid-configuration")
        assert status == 200
        assert json.loads(body)["issuer"] == f"http://127.0.0.1:{port}"
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=15)
    finally:
        stop_process(process)
    assert process.returncode == 0, stderr
    assert "NOT FOR PRODUCTION" in stdout and f"issuer: http://127.0.0.1:{port}" in stdout
    assert "dev-only-secret" not in stdout + stderr  # client secrets are never printed


# ---------------------------------------------------------------- behaving like Cognito (issue 17, item 5)


async def test_basic_credentials_are_not_url_decoded_as_cognito_documents(aiohttp_client, clock):
    """Cognito: Basic Base64Encode(client_id:client_secret), nothing URL-encoded. A secret
    with '+' passes as it is and fails when form-urlencoded first (RFC 6749 2.3.1's '%2B')."""
    secret = "s3cret+with/slash=="
    idp = await aiohttp_client(create_app(ISSUER, [MachineClient(MACHINE_ID, secret)], clock=clock))
    form = {"grant_type": "client_credentials"}
    assert (await token_request(idp, form, auth=basic(MACHINE_ID, secret)))[0] == 200
    status, body = await token_request(idp, form, auth=basic(MACHINE_ID, "s3cret%2Bwith%2Fslash%3D%3D"))
    assert (status, body["error"]) == (400, "invalid_client")


async def test_refresh_token_rotation_with_grace_zero(aiohttp_client, clock):
    client = WebClient(CLIENT_ID, CLIENT_SECRET, [REDIRECT_URI], [LOGOUT_URI], refresh_token_rotation=True)
    idp = await aiohttp_client(create_app(ISSUER, [client], clock=clock))
    _, tokens = await exchange(idp, await sign_in(idp))
    status, first = await token_request(idp, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert status == 200 and first["refresh_token"] != tokens["refresh_token"]  # a new one every refresh
    status, body = await token_request(idp, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert (status, body["error"]) == (400, "invalid_grant")  # grace 0: the used one died at once
    status, second = await token_request(idp, {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
    assert status == 200 and second["refresh_token"] not in (first["refresh_token"], tokens["refresh_token"])


async def test_refresh_token_rotation_grace_period(aiohttp_client, clock):
    client = WebClient(CLIENT_ID, CLIENT_SECRET, [REDIRECT_URI], refresh_token_rotation=True, rotation_grace_period=10)
    idp = await aiohttp_client(create_app(ISSUER, [client], clock=clock))
    _, tokens = await exchange(idp, await sign_in(idp))
    old = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    assert (await token_request(idp, old))[0] == 200
    clock.now += 9
    status, again = await token_request(idp, old)  # a retry within the grace period still works
    assert status == 200 and again["refresh_token"]
    clock.now += 2
    assert (await token_request(idp, old))[1]["error"] == "invalid_grant"
    with pytest.raises(ValueError):
        WebClient(CLIENT_ID, CLIENT_SECRET, [REDIRECT_URI], refresh_token_rotation=True, rotation_grace_period=61)


async def test_without_rotation_a_refresh_returns_no_refresh_token(idp):
    _, tokens = await exchange(idp, await sign_in(idp))
    status, body = await token_request(idp, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert status == 200 and "refresh_token" not in body


async def test_revoke_answers_as_cognito_does(aiohttp_client, clock):
    disabled = WebClient("no-revoke", "no-revoke-secret", [REDIRECT_URI], revocation_enabled=False)
    idp = await aiohttp_client(create_app(ISSUER, [WebClient(CLIENT_ID, CLIENT_SECRET, [REDIRECT_URI]), disabled],
                                          clock=clock))
    _, tokens = await exchange(idp, await sign_in(idp))
    response = await idp.post("/oauth2/revoke", data={"token": tokens["access_token"]}, headers=basic(CLIENT_ID, CLIENT_SECRET))
    assert (response.status, (await response.json())["error"]) == (400, "unsupported_token_type")
    response = await idp.post("/oauth2/revoke", data={"token": "anything"}, headers=basic("no-revoke", "no-revoke-secret"))
    assert (response.status, (await response.json())["error"]) == (400, "invalid_request")
    response = await idp.post("/oauth2/revoke", data={"token": tokens["refresh_token"]}, headers=basic(CLIENT_ID, CLIENT_SECRET))
    assert response.status == 200


async def test_claims_as_cognito_writes_them(idp, clock):
    keys_now = int(clock())
    _, tokens = await exchange(idp, await sign_in(idp, "alice"))
    keys = await public_keys(idp)
    access = verify_token(tokens["access_token"], keys, access_rules(), keys_now)
    claims = verify_token(tokens["id_token"], keys, id_rules(), keys_now)
    assert access["version"] == 2 and access["event_id"] == claims["event_id"]
    assert claims["custom:tenant"] == "acme" and claims["custom:level"] == "3"  # custom attributes: strings
    assert claims["email_verified"] is True and "identities" not in claims


async def test_a_federated_user_has_identities_and_no_email_verified(idp, clock):
    _, tokens = await exchange(idp, await sign_in(idp, "carol"))
    claims = verify_token(tokens["id_token"], await public_keys(idp), id_rules(), int(clock()))
    assert "email_verified" not in claims and claims["email"] == "carol@example.com"
    assert claims["cognito:username"].startswith("Google_")
    identity = claims["identities"][0]
    assert identity["providerName"] == "Google" and identity["primary"] == "true"
    assert any(group.endswith("_Google") for group in claims["cognito:groups"])


async def test_discovery_names_cognitos_logout_as_end_session(idp):
    document = await (await idp.get("/.well-known/openid-configuration")).json()
    assert document["end_session_endpoint"] == ISSUER + "/logout"


async def test_the_hosted_ui_cookie_signs_in_again_silently_until_logout(idp):
    await sign_in(idp)  # on the page: the hosted UI remembers it
    response = await idp.get("/oauth2/authorize", params=authorize_params(), allow_redirects=False)
    params = callback_params(response)  # no page: straight back with a code
    assert params["state"] == STATE and params["code"]
    response = await idp.get("/oauth2/authorize", params=authorize_params(prompt="login"), allow_redirects=False)
    assert response.status == 200  # prompt=login always asks
    await idp.get("/logout", params={"client_id": CLIENT_ID, "logout_uri": LOGOUT_URI}, allow_redirects=False)
    response = await idp.get("/oauth2/authorize", params=authorize_params(), allow_redirects=False)
    assert response.status == 200 and "Sign in" in await response.text()


async def test_a_pools_layout_issuer_on_another_origin_and_both_issuer_forms(clock):
    from authproxy.demo.idp import start

    server = await start(demo_clients_for_tests(), port=0, pool_id="eu-west-1_DevPool1", announce=lambda _: None)
    try:
        assert server.issuer.endswith("/eu-west-1_DevPool1") and not server.issuer.startswith(server.domain)
        async with aiohttp.ClientSession() as http:
            for issuer in (server.issuer, server.updated_issuer):
                async with http.get(issuer + "/.well-known/openid-configuration") as response:
                    document = await response.json()
                assert document["issuer"] == issuer and document["jwks_uri"] == issuer + "/.well-known/jwks.json"
                assert document["authorization_endpoint"] == server.domain + "/oauth2/authorize"
            async with http.get(server.domain + "/.well-known/jwks.json") as response:
                assert response.status == 404  # the keys live at the issuer, not on the domain
        assert server.idp.issuer == server.issuer
        server.idp.issuer_format = "updated"  # the pool was switched
        assert server.idp.issuer == server.updated_issuer
    finally:
        await server.close()


def demo_clients_for_tests():
    return [WebClient(CLIENT_ID, CLIENT_SECRET, [REDIRECT_URI], [LOGOUT_URI])]


async def test_revoke_takes_the_secret_only_by_basic(idp):
    _, tokens = await exchange(idp, await sign_in(idp))
    form = {"token": tokens["refresh_token"], "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    response = await idp.post("/oauth2/revoke", data=form)
    assert (response.status, (await response.json())["error"]) == (400, "invalid_client")
