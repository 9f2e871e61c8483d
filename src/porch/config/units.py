"""Sizes and durations as people write them in config files, and back.

Sizes: a whole number of bytes with an optional unit k, M or G, case-insensitive,
1024-based like nginx (`client_max_body_size 20m` is 20 * 1024 * 1024 bytes), so
that a value copied from an nginx config means the same here.  A trailing "B" or
"iB" is accepted and changes nothing ("20M" == "20MB" == "20MiB"): people write all
three and mean the same thing.  No fractions ("1.5G"): write "1536M".

Durations: a number (fractions allowed) with an optional unit ms, s, m, h or d,
case-insensitive; a bare number is seconds ("1.5" == "1.5s").  One number and one
unit: "90s" or "1.5m", not nginx's "1m 30s".

A bad value raises ValueError whose message quotes it and shows how to write it
(the caller prefixes the key path); a value of the wrong type raises TypeError.
"""

from __future__ import annotations

import re

_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_SIZE_RE = re.compile(r"(\d+)\s*(?:([kmg])(?:i?b)?|b)?", re.IGNORECASE)
_SIZE_HELP = "write bytes as 1048576 or with a unit: 64k, 20M, 1G (1024-based)"

# (multiplier, divisor): "7ms" is 7 / 1000, closer to 0.007 than 7 * 0.001 is
_DURATION_UNITS = {"ms": (1, 1000), "": (1, 1), "s": (1, 1), "m": (60, 1), "h": (3600, 1), "d": (86400, 1),
                   "y": (365 * 86400, 1)}  # "y" for HSTS max-age: "1y" as in the guides
_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d|y)?", re.IGNORECASE)
_DURATION_HELP = "write seconds as 30 or with a unit: 250ms, 1.5s, 5m, 1h, 2d, 1y"


def parse_size(value: str | int) -> int:
    """Bytes from "64k", "20M", "1G", "512" or an int; k/M/G are powers of 1024."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"{value!r} is not a size ({_SIZE_HELP})")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative; a size is 0 or more bytes")
        return value
    match = _SIZE_RE.fullmatch(value.strip())
    if match is None:
        raise ValueError(f'"{value}" is not a size ({_SIZE_HELP})')
    number, unit = match.groups()
    return int(number) * _SIZE_UNITS[(unit or "").lower()]


def parse_duration(value: str | float) -> float:
    """Seconds from "250ms", "1.5s", "5m", "1h", "2d", "1y" (365 days), "30" or a number."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(f"{value!r} is not a duration ({_DURATION_HELP})")
    if isinstance(value, int | float):
        if not 0 <= value < float("inf"):  # also rejects NaN, which TOML allows
            raise ValueError(f"{value} is not a duration of 0 or more seconds")
        return float(value)
    match = _DURATION_RE.fullmatch(value.strip())
    if match is None:
        raise ValueError(f'"{value}" is not a duration ({_DURATION_HELP})')
    number, unit = match.groups()
    multiplier, divisor = _DURATION_UNITS[(unit or "").lower()]
    return float(number) * multiplier / divisor


def format_size(size: int) -> str:
    """The shortest exact spelling parse_size reads back: 16384 -> "16k", 1000 -> "1000"."""
    for unit, factor in (("G", 1024**3), ("M", 1024**2), ("k", 1024)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def format_duration(seconds: float) -> str:
    """The shortest exact spelling parse_duration reads back: 300.0 -> "5m", 0.25 -> "250ms"."""
    if seconds and seconds % (365 * 86400) == 0:
        return f"{int(seconds // (365 * 86400))}y"
    if seconds and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    millis = seconds * 1000
    if seconds < 1 and millis == round(millis) and round(millis) / 1000 == seconds:
        return f"{round(millis)}ms"
    return f"{seconds!r}s"
