"""The authorization code flow's pure parts: a sign-in transaction and its authorize URL.

A transaction holds what must survive the round trip through the identity provider:
``state`` (CSRF binding, RFC 6749 10.12), ``nonce`` (ID token replay, OIDC Core 3.1.2.1),
the PKCE verifier (RFC 7636) and where to send the user afterwards. It travels in an
encrypted, short-lived cookie bound to the browser, never in the URL.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from urllib.parse import urlencode

TRANSACTION_LIFETIME = 600  # seconds: a sign-in must come back within 10 minutes


@dataclass(frozen=True, slots=True)
class Transaction:
    state: str
    nonce: str
    code_verifier: str
    redirect_target: str  # already validated (see redirects.RedirectPolicy)
    started_at: int  # epoch seconds

    @classmethod
    def start(cls, redirect_target: str, now: int) -> Transaction:
        return cls(
            state=secrets.token_urlsafe(32),  # 256 bits
            nonce=secrets.token_urlsafe(32),
            code_verifier=secrets.token_urlsafe(48),  # 64 characters; RFC 7636 4.1 allows 43-128
            redirect_target=redirect_target,
            started_at=now,
        )

    def expired(self, now: int) -> bool:
        return not (self.started_at <= now < self.started_at + TRANSACTION_LIFETIME)

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Transaction:
        """Raises ValueError when ``data`` is not a transaction."""
        try:
            fields = json.loads(data)
            return cls(
                state=str(fields["state"]),
                nonce=str(fields["nonce"]),
                code_verifier=str(fields["code_verifier"]),
                redirect_target=str(fields["redirect_target"]),
                started_at=int(fields["started_at"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError("not a sign-in transaction") from exc


def code_challenge(code_verifier: str) -> str:
    """PKCE S256 (RFC 7636 4.2): BASE64URL(SHA256(ASCII(code_verifier))) without padding."""
    digest = hashlib.sha256(code_verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authorization_url(
    endpoint: str,
    *,
    client_id: str,
    redirect_uri: str,
    scopes: Iterable[str],
    transaction: Transaction,
    extra: Mapping[str, str] | None = None,
) -> str:
    """The authorize request (OIDC Core 3.1.2.1) for ``transaction``.

    ``extra`` parameters (e.g. Cognito's ``identity_provider``) never override the
    protocol's own ones.
    """
    params: dict[str, str] = dict(extra or {})
    params.update(
        response_type="code",
        client_id=client_id,
        redirect_uri=redirect_uri,
        scope=" ".join(scopes),
        state=transaction.state,
        nonce=transaction.nonce,
        code_challenge=code_challenge(transaction.code_verifier),
        code_challenge_method="S256",
    )
    separator = "&" if "?" in endpoint else "?"
    return endpoint + separator + urlencode(params)
