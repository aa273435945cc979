"""The assertion's signing keys as the configuration gives them (PEM), checked at load.

Its own module because it brings joserfc and cryptography: the schema imports it only
when an ``assertion`` section is present, and policy/assertion.py signs with what it loads.
"""

from __future__ import annotations

from joserfc.jwk import ECKey


def load_signing_key(pem: str) -> ECKey:
    """An EC P-256 private key from PEM; ValueError names what is wrong (never the key)."""
    try:
        key = ECKey.import_key(pem.strip().encode())
    except Exception:  # noqa: BLE001 - joserfc/cryptography raise many kinds for bad input
        raise ValueError("not a PEM EC private key (generate one with `openssl ecparam -name prime256v1 -genkey -noout`)") from None
    if key.curve_name != "P-256":
        raise ValueError(f"ES256 needs a P-256 key, this one is {key.curve_name}")
    if not key.is_private:
        raise ValueError("a public key cannot sign: give the private key")
    return key
