"""Development-only pieces for ``authproxy demo`` and ``authproxy dev-idp``.

- ``idp``: a development OpenID provider that behaves like AWS Cognito's hosted UI
  (one-click demo users, in-memory state, a signing key made at each start).
- ``echo``: an upstream that shows every request it receives, decoding JWT headers.

Neither is fit for production: they exist to try authproxy on one machine.
"""
