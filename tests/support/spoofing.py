"""Identity headers a client may send to pass for someone else: every test of what reaches
an upstream sends them all."""

SPOOFED = {
    "Authorization": "Bearer spoofed",
    "X-User-Email": "ceo@example.com",
    "X_User_Email": "ceo@example.com",
    "x-user-groups": "root",
    "X-Auth-Request-User": "ceo",
    "X-Auth-Request-Email": "ceo@example.com",
    "X-Authproxy-Assertion": "forged",
    "X-Authproxy-Anything": "forged",
    "X-Forwarded-User": "ceo",
    "X-Forwarded-Email": "ceo@example.com",
    "X-Forwarded-Access-Token": "spoofed",
    "X-Amzn-Oidc-Data": "forged",
    "X-Amzn-Oidc-Identity": "ceo",
    "X-Sub": "ceo",
    "X_Sub": "ceo",
    "X-Who": "ceo",
}
