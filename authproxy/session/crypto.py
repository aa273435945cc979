"""Sealing data with AES-256-GCM under keys derived with HKDF (RFC 5869).

A key is derived from a server secret (``session.secrets``) and, for session data, a
per-session secret that only the browser's cookie carries: a dump of the store alone
decrypts nothing, and neither does the server secret alone. Associated data binds a
ciphertext to where it belongs (e.g. the store item's key), so it cannot be moved.

Rotation: the first secret seals, every listed secret opens. Each sealed value starts
with a key id, a fingerprint (HMAC) of the secret that sealed it, not its position in
the list, so reordering or removing secrets never makes a value open with the wrong key.

Layout: key id (8 bytes) | nonce (12 bytes, random) | ciphertext with GCM tag.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from authproxy.errors import AuthproxyError

KEY_ID_SIZE = 8
NONCE_SIZE = 12  # 96-bit random nonces: at most 2**32 seals per key (NIST SP 800-38D 8.3); derive keys per use
MIN_SECRET_LENGTH = 32


class Unsealable(AuthproxyError):
    """The value was not sealed by us with these secrets and context (or was altered)."""


class SecretBox:
    """Seals and opens values for one ``purpose`` (e.g. b"session", b"transaction")."""

    def __init__(self, secrets: Sequence[str], purpose: bytes):
        if not secrets:
            raise ValueError("at least one secret is needed")
        self._purpose = purpose
        self._secrets: dict[bytes, bytes] = {}
        for secret in secrets:
            raw = secret.encode()
            if len(raw) < MIN_SECRET_LENGTH:
                raise ValueError(f"each secret needs at least {MIN_SECRET_LENGTH} characters")
            self._secrets.setdefault(key_id(raw), raw)
        self._sealing_id = key_id(secrets[0].encode())

    def seal(self, plaintext: bytes, *, context: bytes = b"", associated_data: bytes = b"") -> bytes:
        """Encrypt ``plaintext``; ``context`` (e.g. the session secret) enters the key."""
        key = self._derive(self._secrets[self._sealing_id], context)
        nonce = os.urandom(NONCE_SIZE)
        return self._sealing_id + nonce + AESGCM(key).encrypt(nonce, plaintext, self._aad(associated_data))

    def open(self, sealed: bytes, *, context: bytes = b"", associated_data: bytes = b"") -> bytes:
        """Decrypt what ``seal`` made with the same context and associated data."""
        if len(sealed) < KEY_ID_SIZE + NONCE_SIZE + 16:
            raise Unsealable("sealed value too short")
        secret = self._secrets.get(sealed[:KEY_ID_SIZE])
        if secret is None:
            raise Unsealable("sealed with a secret that is no longer configured")
        nonce = sealed[KEY_ID_SIZE : KEY_ID_SIZE + NONCE_SIZE]
        try:
            return AESGCM(self._derive(secret, context)).decrypt(
                nonce, sealed[KEY_ID_SIZE + NONCE_SIZE :], self._aad(associated_data)
            )
        except InvalidTag:
            raise Unsealable("authentication failed") from None

    def _derive(self, secret: bytes, context: bytes) -> bytes:
        # The per-session secret is HKDF's salt (RFC 5869 3.1: a random, non-secret-to-us
        # value); the purpose is its info, so one secret never yields the same key twice.
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=context or None, info=self._purpose).derive(secret)

    def _aad(self, associated_data: bytes) -> bytes:
        return self._purpose + b"\x00" + associated_data


def key_id(secret: bytes) -> bytes:
    """A fingerprint naming a secret without revealing it."""
    return hmac.new(secret, b"authproxy key id", hashlib.sha256).digest()[:KEY_ID_SIZE]
