"""OpenID Connect: the code flow's pure parts (``flow``), redirect-target checks
(``redirects``) and token verification (``verify``)."""
