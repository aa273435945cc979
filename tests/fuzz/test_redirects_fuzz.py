"""The rd validator on hostile targets: a validated rd never leaves our hosts, however a
browser or a later hop resolves or decodes it, and it is always short."""

from __future__ import annotations

from urllib.parse import unquote, urljoin, urlsplit

from hypothesis import example, given
from hypothesis import strategies as st

from authproxy.oidc.redirects import MAX_TARGET_LENGTH, RedirectPolicy

OWN = ["app.example.com", "*.tenants.example.com"]
ALLOWED = ["docs.example.org"]
POLICY = RedirectPolicy(OWN, ALLOWED)
BASE = "https://app.example.com/current/page"

pieces = st.sampled_from([
    "/", "//", "\\", "/\\", "%2F", "%2f", "%5C", "%252F", "%25", "%", "..", ".", "@", ":", "#", "?", "&", "=",
    "http:", "https:", "javascript:", "data:", "app.example.com", "evil.example", "acme.tenants.example.com",
    "tenants.example.com", "docs.example.org", "user:pw@", "\t", "\n", "\r", "\x00", " ", "\u3002", "\uff0f",
    "\u00e9", "a", "x" * 100, "[::1]", ":99999", ":443",
])
targets = st.lists(pieces, max_size=12).map("".join) | st.text(max_size=80)


def host_is_ours(host: str) -> bool:
    host = host.lower().rstrip(".")
    return (host in ("app.example.com", "docs.example.org")
            or (host.endswith(".tenants.example.com") and len(host) > len(".tenants.example.com")))


@given(targets)
@example("/%2F%2Fevil.example")
@example("/\t/evil.example")
@example("https://app.example.com@evil.example/")
def test_a_validated_rd_never_leaves_our_hosts(target):
    safe = POLICY.safe_target(target)
    assert len(safe) <= MAX_TARGET_LENGTH and "#" not in safe and safe.isascii() and " " not in safe
    # as the browser resolves the Location, and after every decoding a later hop may apply
    decoded = safe
    for _ in range(4):
        resolved = urlsplit(urljoin(BASE, decoded))
        assert resolved.scheme in ("http", "https")
        assert host_is_ours(resolved.hostname or ""), (target, safe, decoded)
        assert "\\" not in decoded and not any(ord(c) < 0x20 or ord(c) == 0x7F for c in decoded)
        decoded = unquote(decoded)
    if safe.startswith("/"):
        assert not safe.startswith("//")


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/?", max_size=600))
def test_a_plain_path_and_query_is_kept_when_short(tail):
    target = "/" + tail.lstrip("/")
    safe = POLICY.safe_target(target)
    if len(target) <= MAX_TARGET_LENGTH and "//" not in target[:2]:
        assert safe == target
    else:
        assert safe == "/"


@given(st.text(max_size=200))
def test_own_hosts_are_a_subset_of_the_allowed_ones(host):
    if POLICY.is_own_host(host):
        assert host_is_ours(host)
