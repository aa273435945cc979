"""The configuration loader on hostile documents: whatever the YAML holds, loading gives
a ``Config`` or a ``ConfigError`` listing issues, never another exception, and no value
that came from the environment is ever echoed in an error."""

from __future__ import annotations

import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from authproxy.config.load import parse_config
from authproxy.errors import ConfigError

CANARY = "CANARYc0ffee1234567890abcdefghijklmnop"  # long enough to pass as a secret
ENV = {"SECRET": CANARY, "PORT": "8080", "EMPTY": ""}

scalars = (st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False)
           | st.text(max_size=12) | st.sampled_from(["${SECRET}", "${PORT}", "${EMPTY}", "${MISSING}", "$${x}",
                                                     "${SECRET:-d}", "127.0.0.1:${PORT}", "30s", "10m", "1GiB",
                                                     "http://127.0.0.1:9", "https://idp.example.com", "login",
                                                     "public", "bearer", "*.example.com", "/api", "{file: /x}"]))
keys = st.sampled_from([
    "listen", "admin_listen", "public_url", "proxy_prefix", "workers", "routes", "oidc", "session", "store",
    "limits", "log", "trusted_proxies", "forward_auth", "assertion", "tls", "reload", "runtime_dir",
    "name", "match", "upstream", "auth", "path_prefix", "path_regex", "host", "methods", "inject", "allow",
    "issuer", "client_id", "client_secret", "secrets", "cookie_name", "lifetime", "backend", "cache", "ttl",
    "websocket_origins", "strip_prefix", "max_body", "timeouts", "header_size", "file",
]) | st.text(max_size=6)
documents = st.recursive(scalars, lambda children: st.lists(children, max_size=4)
                         | st.dictionaries(keys, children, max_size=6), max_leaves=25)
base = {"routes": [{"name": "a", "upstream": "http://127.0.0.1:9", "auth": "public"}]}


def check(text: str) -> None:
    try:
        parse_config(text, "fuzz.yaml", ENV)
    except ConfigError as exc:
        assert exc.issues and CANARY not in str(exc)


@given(st.dictionaries(keys, documents, max_size=8))
def test_any_document_loads_or_is_refused_with_issues(document):
    check(yaml.safe_dump(document))


@given(st.dictionaries(keys, documents, max_size=4), st.dictionaries(keys, documents, max_size=4))
@example({}, {"auth": ["${SECRET}"]})  # found by this test: an env value inside a list was echoed
@example({}, {"websocket_origins": ["${SECRET}"]})
@example({"public_url": {"a": "${SECRET}"}}, {})
def test_documents_near_a_valid_one(top, route):
    document = {**base, **top}
    document["routes"] = [{**base["routes"][0], **route}]
    check(yaml.safe_dump(document))


@given(st.text(max_size=200))
def test_any_text_loads_or_is_refused_with_issues(text):
    check(text)
