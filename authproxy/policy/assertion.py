"""The signed identity assertion (``X-Authproxy-Assertion``) and its public keys (pure).

An upstream that cannot trust its network (or wants proof, not a header) verifies the
assertion with the keys published at ``/.well-known/authproxy/jwks.json``: ES256 (RFC
7518 3.4), ``iss`` = public_url, ``aud`` = the route name, a lifetime of at most 60 s.
The first configured key signs; all are published, so a new key can be added
everywhere first and made the signer later without breaking a verifier (rotation).
Key ids are RFC 7638 thumbprints, so replicas sharing a key agree on its kid.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey

from authproxy.config.keys import load_signing_key

ALGORITHM = "ES256"


class AssertionSigner:
    def __init__(self, pems: Sequence[str], issuer: str, lifetime: float):
        self._keys = [load_signing_key(pem) for pem in pems]
        self._kids = [key.thumbprint() for key in self._keys]
        self.issuer = issuer
        self.lifetime = int(lifetime)
        published = []
        for key, kid in zip(self._keys, self._kids, strict=True):
            public = dict(key.as_dict(private=False))
            public.update({"kid": kid, "alg": ALGORITHM, "use": "sig"})
            published.append(public)
        # The document is the same for every request: serialised once.
        self.jwks_document = json.dumps({"keys": published}, separators=(",", ":")).encode()

    def sign(self, route: str, sub: str, email: str | None, groups: Sequence[str], now: int) -> str:
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": route,
            "sub": sub,
            "iat": now,
            "nbf": now,
            "exp": now + self.lifetime,
            "jti": uuid.uuid4().hex,
            "groups": list(groups),
        }
        if email:
            claims["email"] = email
        header = {"alg": ALGORITHM, "typ": "JWT", "kid": self._kids[0]}
        return jwt.encode(header, claims, self._keys[0], algorithms=[ALGORITHM])
