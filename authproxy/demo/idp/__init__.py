"""A development OpenID provider that behaves like AWS Cognito. DEVELOPMENT ONLY.

It serves the paths ``authproxy.oidc.endpoints.for_cognito`` derives from one URL that
is both the issuer and the "cognito domain" (``/oauth2/authorize``, ``/oauth2/token``,
``/oauth2/revoke``, ``/oauth2/userInfo``, ``/logout``, ``/.well-known/jwks.json``) plus a
discovery document, and issues Cognito-shaped tokens (see /work/shared/PEERS.md):

- ID token: RS256, ``aud`` = client id, ``token_use: id``, ``cognito:username``,
  ``cognito:groups`` (when the user has any), ``email``, ``nonce``.
- Access token: RS256 under a different ``kid``, no ``aud`` but ``client_id``,
  ``token_use: access``, space-separated ``scope``, ``username``, ``jti``, ``origin_jti``.
- Refresh tokens are opaque; a refresh returns new access and ID tokens and no new
  refresh token (Cognito without rotation); revocation (RFC 7009) ends it.

Why it is not fit for production: anyone who reaches the sign-in page can sign in as a
demo user with one click; users, codes and tokens live in memory; the signing keys are
made at each start. It binds 127.0.0.1 unless a host is given, and says so in a banner.

The package, one concern a module:

- ``clients``: defaults, the app clients (``WebClient``, ``MachineClient``), the demo
  users (``DemoUser``, ``DEMO_USERS``), ``demo_clients()`` and ``banner()``;
- ``state``: the expiring in-memory table and the sign-in records it holds;
- ``params`` and ``pages``: request parameters and redirect URIs; HTML pages and redirects;
- ``authorize``: the authorization endpoint and its sign-in page;
- ``tokens``: the token and revocation endpoints, and token minting;
- ``provider``: ``DevIdp`` (state, routes, discovery, keys, userInfo, logout), ``IDP_KEY``,
  ``create_app``;
- ``server``: ``start``, ``run_dev_idp`` and ``DevIdpServer``.

This module re-exports the public names, so ``from authproxy.demo import idp`` then
``idp.start(...)`` and ``from authproxy.demo.idp import create_app`` work as before.
"""

from __future__ import annotations

from authproxy.demo.idp.authorize import AUTHORIZE_PARAMS
from authproxy.demo.idp.clients import (
    CODE_LIFETIME,
    DEFAULT_ACCESS_TOKEN_LIFETIME,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_HOST,
    DEFAULT_ID_TOKEN_LIFETIME,
    DEFAULT_LOGOUT_URI,
    DEFAULT_MACHINE_CLIENT_ID,
    DEFAULT_MACHINE_CLIENT_SECRET,
    DEFAULT_MACHINE_SCOPES,
    DEFAULT_PORT,
    DEFAULT_REDIRECT_URI,
    DEFAULT_REFRESH_TOKEN_LIFETIME,
    DEFAULT_WEB_SCOPES,
    DEMO_USERS,
    Client,
    DemoUser,
    MachineClient,
    WebClient,
    banner,
    demo_clients,
)
from authproxy.demo.idp.provider import IDP_KEY, DevIdp, create_app
from authproxy.demo.idp.server import LOGGER, DevIdpServer, run_dev_idp, start
from authproxy.demo.idp.state import MAX_ENTRIES

__all__ = [
    "AUTHORIZE_PARAMS",
    "CODE_LIFETIME",
    "DEFAULT_ACCESS_TOKEN_LIFETIME",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_HOST",
    "DEFAULT_ID_TOKEN_LIFETIME",
    "DEFAULT_LOGOUT_URI",
    "DEFAULT_MACHINE_CLIENT_ID",
    "DEFAULT_MACHINE_CLIENT_SECRET",
    "DEFAULT_MACHINE_SCOPES",
    "DEFAULT_PORT",
    "DEFAULT_REDIRECT_URI",
    "DEFAULT_REFRESH_TOKEN_LIFETIME",
    "DEFAULT_WEB_SCOPES",
    "DEMO_USERS",
    "IDP_KEY",
    "LOGGER",
    "MAX_ENTRIES",
    "Client",
    "DemoUser",
    "DevIdp",
    "DevIdpServer",
    "MachineClient",
    "WebClient",
    "banner",
    "create_app",
    "demo_clients",
    "run_dev_idp",
    "start",
]
