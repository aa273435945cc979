import pytest

from authproxy.session.crypto import KEY_ID_SIZE, SecretBox, Unsealable

SECRET_A = "a" * 32 + "-first-server-secret"
SECRET_B = "b" * 32 + "-second-server-secret"


def test_round_trip_with_context_and_associated_data():
    box = SecretBox([SECRET_A], b"session")
    sealed = box.seal(b"tokens", context=b"session-secret-1", associated_data=b"pk-1")
    assert b"tokens" not in sealed
    assert box.open(sealed, context=b"session-secret-1", associated_data=b"pk-1") == b"tokens"


@pytest.mark.parametrize(
    ("context", "associated_data", "purpose"),
    [(b"other-session-secret", b"pk-1", b"session"), (b"session-secret-1", b"pk-2", b"session"),
     (b"session-secret-1", b"pk-1", b"transaction")],
)
def test_wrong_context_item_or_purpose_cannot_open(context, associated_data, purpose):
    sealed = SecretBox([SECRET_A], b"session").seal(b"tokens", context=b"session-secret-1", associated_data=b"pk-1")
    with pytest.raises(Unsealable):
        SecretBox([SECRET_A], purpose).open(sealed, context=context, associated_data=associated_data)


def test_server_secret_alone_is_not_enough():
    sealed = SecretBox([SECRET_A], b"session").seal(b"tokens", context=b"session-secret-1")
    with pytest.raises(Unsealable):
        SecretBox([SECRET_A], b"session").open(sealed)


def test_rotation_first_seals_all_open_and_key_id_is_a_fingerprint():
    old = SecretBox([SECRET_A], b"session").seal(b"old")
    rotated = SecretBox([SECRET_B, SECRET_A], b"session")
    assert rotated.open(old) == b"old"
    new = rotated.seal(b"new")
    assert new[:KEY_ID_SIZE] != old[:KEY_ID_SIZE]
    assert SecretBox([SECRET_A, SECRET_B], b"session").open(new) == b"new"  # order does not matter
    with pytest.raises(Unsealable):
        SecretBox([SECRET_A], b"session").open(new)  # its secret was removed


def test_tampering_and_garbage():
    box = SecretBox([SECRET_A], b"session")
    sealed = bytearray(box.seal(b"tokens"))
    sealed[-1] ^= 1
    for value in (bytes(sealed), b"", b"short", bytes(64)):
        with pytest.raises(Unsealable):
            box.open(value)


def test_nonces_differ():
    box = SecretBox([SECRET_A], b"session")
    assert box.seal(b"x") != box.seal(b"x")


def test_short_secret_refused():
    with pytest.raises(ValueError):
        SecretBox(["too-short"], b"session")
    with pytest.raises(ValueError):
        SecretBox([], b"session")
