"""The header template parser on hostile templates and claims: a template either parses
or is refused with ValueError, and a parsed one renders a valid header value (or none)
whatever the claims hold; literal text survives the round trip."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from authproxy.policy.inject import UNSAFE, parse_template, render_safe

pieces = st.sampled_from([
    "{", "}", "{{", "}}", "{access_token}", "{id_token}", "{sub}", "{email}", "{service_token}", "{claims.email}",
    "{claims.a.b}", '{claims["x.y"]}', "{claims['q']}", "{claims}", "{claims.}", '{claims["}', "{ sub }", "{nope}",
    '"', "'", ".", "[", "]", "Bearer ", "a", "\t", "\u00e9", "\u2603", "\r", "\n", "\x00",
])
templates = st.lists(pieces, max_size=10).map("".join) | st.text(max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)
claims = st.dictionaries(st.sampled_from(["email", "a", "x.y", "q", "sub", "groups"]) | st.text(max_size=5),
                         json_values, max_size=6)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@given(templates, claims, st.dictionaries(st.sampled_from(["access_token", "id_token", "sub", "email", "service_token"]),
                                          st.text(max_size=20) | st.none(), max_size=5))
def test_templates_parse_or_are_refused_and_render_safe_values(text, claim_values, values):
    try:
        template = parse_template(text)
    except ValueError:
        return
    assert template.uses <= {"access_token", "id_token", "sub", "email", "service_token", "claims"}
    rendered = template.render(values, claim_values)
    if rendered is not None and rendered != UNSAFE:
        assert not _CONTROL.search(rendered)
        rendered.encode("latin-1")


@given(st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=40))
def test_literal_text_survives(text):
    escaped = text.replace("{", "{{").replace("}", "}}")
    template = parse_template(escaped)
    assert template.uses == frozenset()
    assert template.render({}, {}) == (text if render_safe(text) is not None else UNSAFE)
