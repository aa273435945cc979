"""A stub identity provider that mints the ID tokens a real provider never would.

    python -m tests.peers.stub_idp --port N

POST /scenario?name=NAME chooses what the next token responses hold: good, alg_none,
hs256_public_key, wrong_nonce, wrong_aud, wrong_iss, expired, unknown_kid, no_id_token.
Optional ``&expires_in=SECONDS`` sets access tokens' lifetime (default 300), and
``&refresh=up|down`` makes refresh_token grants succeed or answer 503 (a provider outage);
GET /refreshes counts the refresh_token grants asked for.
/authorize answers at once with a redirect back (no login page), like a provider that
remembers the user.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import secrets
import time
from urllib.parse import urlencode

from aiohttp import web
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

KEY = RSAKey.generate_key(2048, parameters={"kid": "stub-1"}, private=True)
STRANGER = RSAKey.generate_key(2048, parameters={"kid": "not-published"}, private=True)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_app(issuer: str) -> web.Application:
    state = {"scenario": "good", "codes": {}, "expires_in": 300, "refresh": "up", "refreshes": 0}

    async def discovery(_: web.Request) -> web.Response:
        return web.json_response({
            "issuer": issuer,
            "authorization_endpoint": issuer + "/authorize",
            "token_endpoint": issuer + "/token",
            "jwks_uri": issuer + "/jwks",
            "code_challenge_methods_supported": ["S256"],
        })

    async def jwks(_: web.Request) -> web.Response:
        return web.json_response(KeySet([KEY]).as_dict(private=False))

    async def scenario(request: web.Request) -> web.Response:
        state["scenario"] = request.query["name"]
        state["expires_in"] = int(request.query.get("expires_in", 300))
        state["refresh"] = request.query.get("refresh", "up")
        return web.Response(text="ok")

    async def refreshes(_: web.Request) -> web.Response:
        return web.json_response({"refreshes": state["refreshes"]})

    async def authorize(request: web.Request) -> web.Response:
        code = secrets.token_urlsafe(16)
        state["codes"][code] = (request.query["nonce"], request.query["client_id"])
        back = request.query["redirect_uri"] + "?" + urlencode({"code": code, "state": request.query["state"]})
        raise web.HTTPFound(back)

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") == "refresh_token":
            state["refreshes"] += 1
            if state["refresh"] == "down":
                return web.json_response({"error": "temporarily_unavailable"}, status=503)
            return web.json_response({"access_token": secrets.token_urlsafe(24), "token_type": "Bearer",
                                      "expires_in": state["expires_in"]})
        nonce, client_id = state["codes"].pop(str(form["code"]))
        now = int(time.time())
        claims = {"iss": issuer, "aud": client_id, "sub": "mallory", "nonce": nonce, "iat": now, "exp": now + 300}
        name = state["scenario"]
        header = {"alg": "RS256", "kid": "stub-1"}
        key = KEY
        if name == "wrong_nonce":
            claims["nonce"] = "some-other-nonce"
        elif name == "wrong_aud":
            claims["aud"] = "another-client"
        elif name == "wrong_iss":
            claims["iss"] = "https://evil.example"
        elif name == "expired":
            claims.update(iat=now - 7200, exp=now - 3600)
        elif name == "no_sub":
            del claims["sub"]
        elif name == "no_iat":
            del claims["iat"]
        elif name == "unknown_kid":
            header, key = {"alg": "RS256", "kid": "not-published"}, STRANGER
        body = {"access_token": secrets.token_urlsafe(24), "token_type": "Bearer", "expires_in": state["expires_in"],
                "refresh_token": secrets.token_urlsafe(24)}
        if name == "alg_none":
            body["id_token"] = f"{b64(json.dumps({'alg': 'none'}).encode())}.{b64(json.dumps(claims).encode())}."
        elif name == "hs256_public_key":
            signing_input = f"{b64(json.dumps({'alg': 'HS256', 'kid': 'stub-1'}).encode())}.{b64(json.dumps(claims).encode())}"
            mac = hmac.new(KEY.as_pem(private=False), signing_input.encode(), hashlib.sha256).digest()
            body["id_token"] = f"{signing_input}.{b64(mac)}"
        elif name != "no_id_token":
            body["id_token"] = jwt.encode(header, claims, key)
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", discovery)
    app.router.add_get("/jwks", jwks)
    app.router.add_post("/scenario", scenario)
    app.router.add_get("/refreshes", refreshes)
    app.router.add_get("/authorize", authorize)
    app.router.add_post("/token", token)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    web.run_app(make_app(f"http://127.0.0.1:{port}"), host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
