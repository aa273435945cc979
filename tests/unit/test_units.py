import pytest

from authproxy.config.units import parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("30s", 30), ("5m", 300), ("12h", 43200), ("1d", 86400), ("1h30m", 5400), ("1.5s", 1.5), (2, 2.0), (0.5, 0.5)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "10x", "s", "1h 30m", "-5s", True, None, "30 s", "5mm"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [("10MiB", 10 * 1024**2), ("512KiB", 512 * 1024), ("1GB", 10**9), ("100B", 100), ("100", 100), (4096, 4096), ("1.5KiB", 1536)],
)
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "10MB/s", "ten", "-1", True, 1.5, "10 XB"])
def test_bad_sizes(text):
    with pytest.raises(ValueError):
        parse_size(text)

