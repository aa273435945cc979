"""An in-process issuer of signed JWTs: an EC P-256 key (fast to make), its public JWKS, and
tokens signed with it. Real providers' tokens are used where a provider's behaviour is under
test; this one mints the shapes they will not (wrong audience, another client, no typ), and
``serve_issuers`` puts issuers on a loopback server (discovery and JWKS, HTTP or HTTPS) for a
real authproxy process to fetch."""

from __future__ import annotations

import secrets
import ssl
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from tests.support.processes import free_port
from tests.support.tls import TestCA


class LocalIssuer:
    def __init__(self, iss: str, kid: str = "k1"):
        self.iss = iss
        self.key = ECKey.generate_key("P-256", parameters={"kid": kid}, private=True)
        self.fetches = 0

    @property
    def kid(self) -> str:
        return self.key.kid  # type: ignore[return-value]

    def rotate(self, kid: str) -> None:
        """Sign with a new key from now on; the JWKS publishes only the new one."""
        self.key = ECKey.generate_key("P-256", parameters={"kid": kid}, private=True)

    def jwks(self) -> KeySet:
        return KeySet.import_key_set({"keys": [self.key.as_dict(private=False)]})

    def fetcher(self) -> Callable[[], Awaitable[KeySet]]:
        """A JwksCache fetch function serving this issuer's current JWKS, counting calls."""

        async def fetch() -> KeySet:
            self.fetches += 1
            return self.jwks()

        return fetch

    def access_token(self, audience: str, lifetime: int = 600) -> str:
        """An RFC 9068 access token for ``audience``, of client "machine", unique by its jti."""
        now = int(time.time())
        return self.token({"sub": "machine-1", "aud": audience, "client_id": "machine", "iat": now,
                           "exp": now + lifetime, "jti": secrets.token_hex(8)})

    def token(self, claims: dict, typ: str | None = "at+jwt", *, iss: str | None = None) -> str:
        header = {"alg": "ES256", "kid": self.kid}
        if typ is not None:
            header["typ"] = typ
        return jwt.encode(header, {"iss": iss or self.iss, **claims}, self.key)


async def serve_issuers(names: list[str], ca: TestCA | None = None) -> tuple[web.AppRunner, dict[str, LocalIssuer]]:
    """Issuers at http(s)://127.0.0.1:PORT/NAME on one loopback server, each with its discovery
    document (its own issuer and jwks_uri) and its JWKS, counting fetches; over HTTPS with a
    certificate of ``ca`` when given. Stop with ``await runner.cleanup()``."""
    port = free_port()
    scheme = "https" if ca is not None else "http"
    issuers = {name: LocalIssuer(f"{scheme}://127.0.0.1:{port}/{name}") for name in names}

    async def discovery(request: web.Request) -> web.Response:
        issuer = issuers[request.match_info["name"]]
        return web.json_response({"issuer": issuer.iss, "jwks_uri": issuer.iss + "/jwks"})

    async def jwks(request: web.Request) -> web.Response:
        issuer = issuers[request.match_info["name"]]
        issuer.fetches += 1
        return web.json_response(issuer.jwks().as_dict(private=False))

    app = web.Application()
    app.router.add_get("/{name}/.well-known/openid-configuration", discovery)
    app.router.add_get("/{name}/jwks", jwks)
    tls = None
    if ca is not None:
        cert, key, _ = ca.issue(f"issuers-{port}")
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(cert, key)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=tls).start()
    return runner, issuers
