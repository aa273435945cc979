"""One exception tree: every public exception class of the package descends from
AuthproxyError and is drawn in errors.py's docstring; errors that end a request say how."""

import importlib
import inspect
import pkgutil

import pytest

import authproxy
from authproxy import errors
from authproxy.errors import RETRY_AFTER, AuthproxyError, ClientGone


def exception_classes():
    for module_info in pkgutil.walk_packages(authproxy.__path__, "authproxy."):
        if module_info.name.endswith("__main__"):
            continue
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module.__name__:
                yield module.__name__, name, value


def test_every_public_exception_is_in_the_tree_and_drawn():
    outside, undrawn = [], []
    for module, name, cls in exception_classes():
        if name.startswith("_"):
            continue  # private control flow that never leaves its module
        if not issubclass(cls, AuthproxyError):
            outside.append(f"{module}.{name}")
        if f" {name} " not in errors.__doc__ and f"── {name}" not in errors.__doc__:
            undrawn.append(f"{module}.{name}")
    assert not outside, f"outside the tree: {outside}"
    assert not undrawn, f"missing from errors.py's drawing: {undrawn}"


def test_the_walk_finds_classes_defined_outside_errors_py():
    found = {name for _, name, _ in exception_classes()}
    assert {"StoreError", "DiscoveryInvalid", "Unsealable", "ClientBodyFailed", "KeyNotInJwks",
            "UpstreamFailedEarly", "RecordTooLarge"} <= found


def test_closing_without_an_answer_is_not_an_answer():
    from authproxy.proxy.http_client import ClientBodyFailed

    assert issubclass(ClientBodyFailed, ClientGone)
    assert ClientGone.status is None


@pytest.mark.parametrize(("cls", "status", "error", "retry_after"), [
    ("authproxy.store.base.StoreUnavailable", 503, "session_store_unavailable", RETRY_AFTER),
    ("authproxy.store.base.StoreRejected", 500, "session_store_rejected", None),
    ("authproxy.store.base.RecordTooLarge", 500, "session_store_rejected", None),
    ("authproxy.errors.RefreshUnavailable", 503, "refresh_unavailable", RETRY_AFTER),
    ("authproxy.errors.ServiceTokenUnavailable", 503, "service_token_unavailable", RETRY_AFTER),
    ("authproxy.errors.PayloadTooLarge", 413, "payload_too_large", None),
    ("authproxy.errors.UpstreamTimeout", 504, "gateway_timeout", None),
])
def test_errors_that_end_a_request_carry_their_answer(cls, status, error, retry_after):
    module, _, name = cls.rpartition(".")
    error_class = getattr(importlib.import_module(module), name)
    assert (error_class.status, error_class.error, error_class.retry_after) == (status, error, retry_after)
    assert error_class.message


def test_an_answer_is_rendered_in_one_place_with_its_retry_after():
    from authproxy.store.base import StoreUnavailable
    from authproxy.web.render import answers, error_answer

    response = error_answer(StoreUnavailable("timeout talking to the store"), "rid", "application/json", "r")
    assert response.status == 503 and response.headers["Retry-After"] == str(RETRY_AFTER)
    assert b"timeout talking" not in response.body  # the cause is logged, never shown
    assert not answers(ClientGone()) and not answers(errors.TokenInvalid("expired"))
    # The provider's own status on IdpRejected is not an answer of ours.
    assert not answers(errors.IdpRejected("token", "invalid_grant", 400))


def test_no_literal_retry_after_values_left_in_the_edge():
    from pathlib import Path

    root = Path(authproxy.__file__).parent
    for path in [*root.joinpath("web").glob("*.py"), root / "proxy" / "pages.py"]:
        assert '"Retry-After": "' not in path.read_text(), path
