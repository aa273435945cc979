"""What Envoy's ext_authz HTTP filter does around an authorization service, for tests
(no Envoy binary is packaged for these machines). Taken from Envoy's source:

- source/extensions/filters/common/ext_authz/ext_authz_http_impl.cc, ``RawHttpClientImpl::check``:
  the check request carries the original request's headers that ``allowed_headers`` match,
  plus always ``:authority`` (Host), ``:method``, ``:path`` and ``authorization``
  (``toRequestMatchers``); ``:path`` gets ``path_prefix`` in front; ``content-length`` is 0
  (no body is sent unless with_request_body is set).
- ``toResponse``: a 5xx answer is an error (``status_on_error`` to the client); 200 is OK:
  ``x-envoy-auth-headers-to-remove`` (comma-separated) names request headers to remove,
  and the answer's headers that ``allowed_upstream_headers`` match are set on the request;
  any other status is a denial passed to the client with its headers and body.
- source/extensions/filters/http/ext_authz/ext_authz.cc, ``Filter::onComplete``: headers to
  set replace the request's values; removals are applied after them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml

ALWAYS_SENT = ("authorization",)  # besides :authority, :method and :path


def ext_authz_filter(envoy_yaml: Path) -> dict:
    """The ext_authz filter's typed_config in an Envoy static config."""
    found: list[dict] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("name") == "envoy.filters.http.ext_authz" and "typed_config" in node:
                found.append(node["typed_config"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(yaml.safe_load(envoy_yaml.read_text()))
    assert len(found) == 1, "exactly one ext_authz filter"
    return found[0]


def _exact_names(matcher_list: Mapping | None) -> set[str]:
    patterns = (matcher_list or {}).get("patterns", [])
    names = set()
    for pattern in patterns:
        assert set(pattern) <= {"exact", "ignore_case"}, f"only exact matchers are modelled: {pattern}"
        names.add(pattern["exact"].lower())
    return names


class EnvoyExtAuthz:
    """The ext_authz filter configured as in ``envoy_yaml``."""

    def __init__(self, envoy_yaml: Path):
        config = ext_authz_filter(envoy_yaml)
        service = config["http_service"]
        self.path_prefix = service.get("path_prefix", "")
        # The filter-level list, or the older http_service one (ext_authz.cc takes whichever is
        # set and refuses both).
        self.request_headers = _exact_names(service.get("authorization_request", {}).get("allowed_headers")
                                            or config.get("allowed_headers"))
        self.upstream_headers = _exact_names(service.get("authorization_response", {}).get("allowed_upstream_headers"))

    def check_request(self, method: str, path: str, host: str, headers: Iterable[tuple[str, str]]) -> tuple[str, str, list]:
        """``(method, path, headers)`` of the check request Envoy sends for a client's request."""
        sent = [("Host", host), ("Content-Length", "0")]
        for name, value in headers:
            lower = name.lower()
            if lower in ("host", "content-length"):
                continue
            if lower in self.request_headers or lower in ALWAYS_SENT:
                sent.append((name, value))
        return method, self.path_prefix + path, sent

    def upstream_request_headers(self, headers: Iterable[tuple[str, str]], answer: Mapping[str, str] | list) -> list:
        """The client's request headers as the app receives them after an OK (200) answer."""
        items = list(answer.items()) if isinstance(answer, Mapping) else list(answer)
        result = [(name, value) for name, value in headers]
        for name, value in items:  # set: replace the request's values
            if name.lower() in self.upstream_headers:
                result = [(n, v) for n, v in result if n.lower() != name.lower()] + [(name, value)]
        removals = set()
        for name, value in items:
            if name.lower() == "x-envoy-auth-headers-to-remove":
                removals |= {part.strip().lower() for part in value.split(",") if part.strip()}
        return [(n, v) for n, v in result if n.lower() not in removals]
