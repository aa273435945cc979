"""What the configured provider's tokens must say: ``TokenRules`` built from ``OidcConfig``.

Every rule set accepts each issuer of the provider (``OidcConfig.issuers``: for Cognito,
every issuer of the user pool, see ``oidc.cognito``), so a pool switched to the updated
issuer form, or a replica region's tokens, keep signing users in and refreshing sessions.
OIDC Core 12.2 wants a refreshed ID token's ``iss`` to be the original's; with Cognito that
becomes "an issuer of the same pool", while ``sub`` stays strictly the same (the refresher
compares it).
"""

from __future__ import annotations

from authproxy.config.schema import OidcConfig
from authproxy.oidc.verify import TokenRules


def id_token_rules(oidc: OidcConfig, nonce: str | None = None) -> TokenRules:
    """An ID token for our client (OIDC Core 3.1.3.7); ``nonce`` at sign-in, none on refresh."""
    return TokenRules(
        issuer=oidc.issuer,
        issuers=frozenset(oidc.issuers),
        audiences=frozenset({oidc.client_id}),
        authorized_party=oidc.client_id,
        token_use="id" if oidc.provider == "cognito" else None,  # Cognito's ID tokens say token_use: id
        nonce=nonce,
        id_token=True,
    )
