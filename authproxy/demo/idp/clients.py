"""Who the provider knows, and its defaults: app clients, demo users, the banner.

Default lifetimes and address; the well-known demo credentials; ``WebClient`` and
``MachineClient`` (Cognito app clients with a secret); ``DemoUser`` and ``DEMO_USERS``;
``demo_clients()``, the demo's two clients; and ``banner()``, said once at start.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9400
# Cognito: access and ID tokens live 5 minutes to 1 day, 1 hour by default (Developer Guide,
# "Using the access token" / app client token expiration). The demo may ask for less to show refreshes.
DEFAULT_ACCESS_TOKEN_LIFETIME = 3600
MIN_TOKEN_LIFETIME = 300
DEFAULT_ID_TOKEN_LIFETIME = 3600
MAX_ROTATION_GRACE_PERIOD = 60  # Cognito: RetryGracePeriodSeconds is 0-60
DEFAULT_REFRESH_TOKEN_LIFETIME = 30 * 86400  # Cognito's default
CODE_LIFETIME = 300  # Cognito: authorization codes are valid for 5 minutes

# Well-known demo credentials, not secrets: printed in the docs and the banner.
DEFAULT_CLIENT_ID = "authproxy-demo"
DEFAULT_CLIENT_SECRET = "authproxy-demo-dev-only-secret"
DEFAULT_REDIRECT_URI = "http://127.0.0.1:8080/oauth2/callback"
DEFAULT_LOGOUT_URI = "http://127.0.0.1:8080/"
DEFAULT_MACHINE_CLIENT_ID = "authproxy-demo-machine"
DEFAULT_MACHINE_CLIENT_SECRET = "authproxy-demo-machine-dev-only-secret"
DEFAULT_MACHINE_SCOPES = ("demo-api/read", "demo-api/write")
DEFAULT_WEB_SCOPES = ("openid", "email", "profile", "phone", "aws.cognito.signin.user.admin")

_SUB_NAMESPACE = uuid.UUID("6f1c3c1e-5d0a-4c1e-9a51-0a7d2c6f9e10")


@dataclass(frozen=True, slots=True)
class WebClient:
    """An app client with a secret using the authorization code grant (Cognito "confidential client")."""

    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...]
    logout_uris: tuple[str, ...] = ()
    scopes: tuple[str, ...] = DEFAULT_WEB_SCOPES
    # EnableTokenRevocation (on by default for new app clients); off: /oauth2/revoke answers 400.
    revocation_enabled: bool = True
    # Refresh token rotation (an app client setting): every refresh returns a new refresh
    # token and the one used dies after the grace period (0-60 s; Developer Guide,
    # "Refresh tokens", rotation). Off: a refresh returns no refresh token, the old one lives on.
    refresh_token_rotation: bool = False
    rotation_grace_period: int = 0

    def __post_init__(self) -> None:  # accept lists too
        for name in ("redirect_uris", "logout_uris", "scopes"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not 0 <= self.rotation_grace_period <= MAX_ROTATION_GRACE_PERIOD:
            raise ValueError(f"rotation_grace_period must be 0-{MAX_ROTATION_GRACE_PERIOD} seconds, as Cognito's")


@dataclass(frozen=True, slots=True)
class MachineClient:
    """An app client for the client_credentials grant, limited to resource-server ``scopes``."""

    client_id: str
    client_secret: str
    scopes: tuple[str, ...] = DEFAULT_MACHINE_SCOPES

    def __post_init__(self) -> None:
        object.__setattr__(self, "scopes", tuple(self.scopes))


Client = WebClient | MachineClient


@dataclass(frozen=True, slots=True)
class DemoUser:
    """A user of the demo; the password is the username.

    ``federated``: the identity provider the user signed up through (a social or SAML
    provider of the pool), which Cognito records in the ``identities`` claim; such a
    user's username is ``{provider}_{id}``, they are in the group ``{pool}_{provider}``,
    and their mapped email is unverified unless the mapping says otherwise, so
    ``email_verified`` is None (absent) here. ``attributes``: custom attributes, which
    Cognito puts in tokens as strings whatever their type (``custom:tenant``).
    """

    username: str
    email: str
    groups: tuple[str, ...] = ()
    email_verified: bool | None = True
    federated: str | None = None
    attributes: tuple[tuple[str, str], ...] = ()

    @property
    def sub(self) -> str:
        """Stable across restarts, uuid-shaped like Cognito's."""
        return str(uuid.uuid5(_SUB_NAMESPACE, self.username))

    def password_matches(self, password: str) -> bool:
        return hmac.compare_digest(password.encode(), self.username.encode())


DEMO_USERS = (
    DemoUser("alice", "alice@example.com", ("admins",), attributes=(("custom:tenant", "acme"), ("custom:level", "3"))),
    DemoUser("bob", "bob@example.com"),
    # Signed up through a social provider: email mapped from it, email_verified absent.
    DemoUser("carol", "carol@example.com", email_verified=None, federated="Google"),
)


def demo_clients(
    *,
    client_id: str = DEFAULT_CLIENT_ID,
    client_secret: str = DEFAULT_CLIENT_SECRET,
    redirect_uris: Iterable[str] = (DEFAULT_REDIRECT_URI,),
    logout_uris: Iterable[str] = (DEFAULT_LOGOUT_URI,),
    machine_client_id: str = DEFAULT_MACHINE_CLIENT_ID,
    machine_client_secret: str = DEFAULT_MACHINE_CLIENT_SECRET,
    machine_scopes: Iterable[str] = DEFAULT_MACHINE_SCOPES,
    refresh_token_rotation: bool = False,
    rotation_grace_period: int = 0,
) -> list[Client]:
    """The demo's two clients: the proxy (web) and a service (machine)."""
    return [
        WebClient(client_id, client_secret, tuple(redirect_uris), tuple(logout_uris),
                  refresh_token_rotation=refresh_token_rotation, rotation_grace_period=rotation_grace_period),
        MachineClient(machine_client_id, machine_client_secret, tuple(machine_scopes)),
    ]


def banner(issuer: str, domain: str | None = None) -> str:
    """Said once at start: what this is, that it is for development only, where it is.
    ``domain``: the hosted UI's origin, when it is not the issuer (a pool's layout)."""
    where = f"  issuer: {issuer}\n  cognito_domain: {domain}" if domain else f"  issuer (also the cognito_domain): {issuer}"
    return (
        "authproxy dev-idp: a DEVELOPMENT OpenID provider that behaves like AWS Cognito. NOT FOR PRODUCTION:\n"
        "  anyone reaching it can sign in as a demo user with one click; state is in memory; keys change at each start.\n"
        "  demo users: alice (group admins), bob, carol (federated through Google, email not verified);\n"
        "  each password is the username.\n" + where
    )
