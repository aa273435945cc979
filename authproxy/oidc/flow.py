"""The authorization code flow's pure parts: a sign-in transaction, its authorize URL, and
the checks of the provider's answer (``check_callback``).

A transaction holds what must survive the round trip through the identity provider:
``state`` (CSRF binding, RFC 6749 10.12), ``nonce`` (ID token replay, OIDC Core 3.1.2.1),
the PKCE verifier (RFC 7636) and where to send the user afterwards. It travels in an
encrypted, short-lived cookie bound to the browser, never in the URL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Collection, Container, Iterable, Mapping, Sequence
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


# --- the callback's checks (OIDC Core 3.1.2.5-7, RFC 6749 10.12, RFC 9207) ----------------

@dataclass(frozen=True, slots=True)
class CallbackAccepted:
    """The response belongs to the transaction in cookie ``slot``: exchange ``code``."""

    slot: int
    transaction: Transaction
    code: str


@dataclass(frozen=True, slots=True)
class CallbackRefused:
    """Why a sign-in response is refused; ``reason`` is the error code and the metric's label."""

    reason: str
    message: str  # safe to show: quotes only printable parts of what the provider said
    status: int = 400
    slot: int | None = None  # the transaction cookie to clear, once known (never another tab's)


def check_callback(
    query: Mapping[str, str],
    pending: Sequence[Transaction | None],
    *,
    now: int,
    used_states: Container[str],
    issuers: Collection[str],
    iss_required: bool,
) -> CallbackAccepted | CallbackRefused:
    """The checks of a sign-in response before its code is exchanged: ``pending`` holds
    the transaction of each cookie slot (None: free or unreadable), ``used_states`` the
    states already completed, ``issuers`` ours, ``iss_required`` whether the provider
    promised the RFC 9207 ``iss`` parameter."""
    state = query.get("state", "")
    if not state:
        if "error" in query:  # Cognito omits state from some error redirects: still say what it refused
            return CallbackRefused("idp_error", "the identity provider refused the sign-in: "
                                   f"{printable(query.get('error', '')[:64])} (its answer carries no state)", 403)
        return CallbackRefused("state_missing", "the sign-in response carries no state")
    slot = next((i for i, t in enumerate(pending)
                 if t is not None and hmac.compare_digest(t.state.encode(), state.encode())), None)
    if slot is None:
        return CallbackRefused("state_mismatch", "this sign-in was not started in this browser, or it expired; start again")
    transaction = pending[slot]
    assert transaction is not None
    if transaction.expired(now):
        return CallbackRefused("state_mismatch", "this sign-in expired; start again", slot=slot)
    if state in used_states:
        return CallbackRefused("replayed", "this sign-in response was already used", slot=slot)
    # RFC 9207 2.4: the iss parameter, when present (or promised), must be our issuer.
    iss = query.get("iss")
    if (iss is not None or iss_required) and iss not in issuers:
        return CallbackRefused("issuer_mismatch", "the sign-in response came from an unexpected issuer", slot=slot)
    if "error" in query:
        return CallbackRefused("idp_error", "the identity provider refused the sign-in: "
                               f"{printable(query.get('error', '')[:64])}", 403, slot=slot)
    code = query.get("code")
    if not code:
        return CallbackRefused("code_missing", "the sign-in response carries no code", slot=slot)
    return CallbackAccepted(slot, transaction, code)


def printable(text: str) -> str:
    """A provider's error code as safe to show: letters, digits, "_-." only, at most 64."""
    return "".join(ch for ch in text if ch.isalnum() or ch in "_-.")[:64]
