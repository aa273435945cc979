"""Parsing of the human units used in configuration: durations and byte sizes.

Pure functions; they raise ``ValueError`` with a message fit to show next to the key.
"""

from __future__ import annotations

import math
import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_MAX_DURATION = 10 * 365 * 86400.0
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "TiB": 1024**4,
}


def parse_duration(value: object) -> float:
    """Seconds from "250ms", "30s", "5m", "12h", "1d", "1h30m", or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '30s', got a boolean")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        pos, seconds = 0, 0.0
        for part in _DURATION_PART.finditer(text):
            if part.start() != pos:
                break
            seconds += float(part.group(1)) * _DURATION_UNITS[part.group(2)]
            pos = part.end()
        if not text or pos != len(text):
            raise ValueError(
                f"invalid duration {value!r}: use a number with a unit, e.g. '250ms', '30s', '5m', '12h'"
            )
    else:
        raise ValueError(f"expected a duration such as '30s', got {type(value).__name__}")
    if not math.isfinite(seconds) or seconds > _MAX_DURATION:
        raise ValueError("a duration must be finite and at most 10 years")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from "10MiB", "512KiB", "1GB", "100B", or a bare integer of bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as '10MiB', got a boolean")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        if not match:
            raise ValueError(f"invalid size {value!r}: use e.g. '10MiB', '512KiB', '1GB' or a number of bytes")
        size = int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])
    else:
        raise ValueError(f"expected a size such as '10MiB', got {type(value).__name__}")
    if size < 0:
        raise ValueError("a size cannot be negative")
    return size

