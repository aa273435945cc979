"""An in-process issuer of signed JWTs for unit tests: an EC P-256 key (fast to make), its
public JWKS, and tokens signed with it. Real providers' tokens are used in the integration
tests; this one mints the shapes they will not (wrong audience, another client, no typ)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from joserfc import jwt
from joserfc.jwk import ECKey, KeySet


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

    def token(self, claims: dict, typ: str | None = "at+jwt", *, iss: str | None = None) -> str:
        header = {"alg": "ES256", "kid": self.kid}
        if typ is not None:
            header["typ"] = typ
        return jwt.encode(header, {"iss": iss or self.iss, **claims}, self.key)
