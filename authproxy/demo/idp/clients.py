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
DEFAULT_ACCESS_TOKEN_LIFETIME = 120  # short, so the demo shows refreshes
DEFAULT_ID_TOKEN_LIFETIME = 3600
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

    def __post_init__(self) -> None:  # accept lists too
        for name in ("redirect_uris", "logout_uris", "scopes"):
            object.__setattr__(self, name, tuple(getattr(self, name)))


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
    """A user of the demo; the password is the username."""

    username: str
    email: str
    groups: tuple[str, ...] = ()

    @property
    def sub(self) -> str:
        """Stable across restarts, uuid-shaped like Cognito's."""
        return str(uuid.uuid5(_SUB_NAMESPACE, self.username))

    def password_matches(self, password: str) -> bool:
        return hmac.compare_digest(password.encode(), self.username.encode())


DEMO_USERS = (
    DemoUser("alice", "alice@example.com", ("admins",)),
    DemoUser("bob", "bob@example.com"),
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
) -> list[Client]:
    """The demo's two clients: the proxy (web) and a service (machine)."""
    return [
        WebClient(client_id, client_secret, tuple(redirect_uris), tuple(logout_uris)),
        MachineClient(machine_client_id, machine_client_secret, tuple(machine_scopes)),
    ]


def banner(issuer: str) -> str:
    """Said once at start: what this is, that it is for development only, where it is."""
    return (
        "authproxy dev-idp: a DEVELOPMENT OpenID provider that behaves like AWS Cognito. NOT FOR PRODUCTION:\n"
        "  anyone reaching it can sign in as a demo user with one click; state is in memory; keys change at each start.\n"
        "  demo users: alice (group admins), bob; each password is the username.\n"
        f"  issuer (also the cognito_domain): {issuer}"
    )
