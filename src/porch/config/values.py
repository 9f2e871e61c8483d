"""Parsers of plain values shared by every config front-end: ports, sizes,
durations, strings, booleans, address lists.

A parser takes a value as the front-end read it (TOML's types: str, int, float, bool,
list, dict) and returns the model's value, or raises ValueError whose message quotes
the value and says what to write instead; the caller (config/validate.py) prefixes
the key path and, when known, the file and line.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Iterable
from typing import Any

from porch._compiled import HTTP2_ENGINES, http2_engine as _engine
from porch.config.units import parse_duration, parse_size

Parser = Callable[[Any], Any]
Values = dict[str, Any]

# --- reading one value ---------------------------------------------------------
# A parser takes the TOML value and returns the model value, or raises ValueError
# whose message quotes the value and says what to write instead.


def show(value: Any) -> str:
    """A value spelled as in TOML, shortened: messages quote what the user wrote."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value if len(value) <= 60 else value[:57] + "..."
        return json.dumps(text, ensure_ascii=False)  # JSON escapes are TOML's: one line
    if isinstance(value, list):
        inner = ", ".join(show(item) for item in value[:3])
        return f"[{inner}{', ...' if len(value) > 3 else ''}]"
    if isinstance(value, dict):
        return "{...}"
    return str(value)


_KINDS = ((bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "a string"),
          (list, "an array"), (dict, "a table"))  # fmt: skip


def expect(ok: bool, value: Any, expected: str) -> None:
    """Raise the standard wrong-type message: `"80" is a string; expected ...`."""
    if not ok:
        kind = next((name for t, name in _KINDS if isinstance(value, t)), "a date/time")
        raise ValueError(f"{show(value)} is {kind}; expected {expected}")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def strings(value: Any, expected: str) -> list[str]:
    """A string or a non-empty array of strings, as a list."""
    if isinstance(value, str):
        return [value]
    expect(isinstance(value, list), value, f"{expected}, or an array of them")
    if not value:
        raise ValueError(f"[] is empty; expected at least one: {expected}")
    for item in value:
        expect(isinstance(item, str), item, expected)
    return value


def unique(items: Iterable[Any], show: Callable[[Any], str] = show) -> tuple[Any, ...]:
    seen: list[Any] = []
    for item in items:
        if item in seen:
            raise ValueError(f"{show(item)} is listed twice")
        seen.append(item)
    return tuple(seen)


_PORT = "an integer port 1-65535"


def port(value: Any) -> int:
    expect(is_int(value), value, _PORT)
    if not 1 <= value <= 65535:
        raise ValueError(f"{value} is out of range; expected {_PORT}")
    return value


def _address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    host, _, port = text.rpartition(":")
    if port.isdigit() and host:
        raise ValueError(f"{show(text)} has a port; write the address alone and the port as http_port")
    raise ValueError(f'{show(text)} is not an IP address; expected one like "127.0.0.1" or "::1"')


def bind(value: Any) -> tuple[str, ...]:
    return unique(_address(text) for text in strings(value, 'an IP address like "127.0.0.1"'))


def networks(value: Any) -> tuple[str, ...]:
    expect(isinstance(value, list), value, 'an array of CIDRs or IPs like ["10.0.0.0/8"]')
    found = []
    for item in value:
        expect(isinstance(item, str), item, 'a CIDR or IP like "10.0.0.0/8"')
        try:
            # strict=False: "10.1.2.3/8" means the network it is in, as in nginx set_real_ip_from
            found.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ValueError(f'{show(item)} is not a CIDR or IP; expected one like "10.0.0.0/8"') from None
    return unique(found)


_WORKERS = '"auto" or a number of worker processes, 1 or more'


def workers(value: Any) -> int | str:
    expect(value == "auto" or is_int(value), value, _WORKERS)
    if value != "auto" and value < 1:
        raise ValueError(f"{value} is below 1; expected {_WORKERS}")
    return value


def nonempty(expected: str) -> Parser:
    """A non-empty string, otherwise as given."""

    def parse(value: Any) -> str:
        expect(isinstance(value, str), value, expected)
        if not value.strip():
            raise ValueError(f"{show(value)} is empty; expected {expected}")
        return value

    return parse


def error_log(value: Any) -> str:
    path = nonempty('a file path, or "-" for stderr')(value)
    if path == "off":  # it would quietly become a file named "off"
        raise ValueError('"off" is not allowed: errors must go somewhere (write a path, or "-" for stderr)')
    return path


def one_of(*options: str) -> Parser:
    spelled = " or ".join(show(option) for option in options)

    def parse(value: Any) -> str:
        expect(isinstance(value, str), value, spelled)
        if value not in options:
            raise ValueError(f"{show(value)} is not supported; expected {spelled}")
        return value

    return parse


def email(value: Any) -> str:
    text = nonempty('an email address like "admin@example.org"')(value)
    local, at, domain = text.partition("@")
    if not (local and at and domain) or "@" in domain or any(c.isspace() for c in text):
        raise ValueError(f'{show(text)} is not an email address; expected one like "admin@example.org"')
    return text


_SIZE = 'a size like "64k", "20M" or "1G", or a number of bytes'


def _bytes(value: Any) -> int:
    expect(is_int(value) or isinstance(value, str), value, _SIZE)
    return parse_size(value)


def size(value: Any) -> int:
    if _bytes(value) == 0:
        raise ValueError(f"{show(value)} is too small; expected {_SIZE}")
    return parse_size(value)


def max_body(value: Any) -> int | None:
    if value == "off":
        return None
    if _bytes(value) == 0:  # nginx reads 0 as "no limit": make the writer say which
        raise ValueError(
            f"{show(value)} is ambiguous;"
            ' write max_body = "off" for no limit, or a size like "20M"'
        )
    return parse_size(value)


_DURATION = 'a duration like "30s", "5m" or "250ms", or a number of seconds'


def duration(*, zero_ok: bool) -> Parser:
    def parse(value: Any) -> float:
        expect(is_int(value) or isinstance(value, float | str), value, _DURATION)
        seconds = parse_duration(value)
        if seconds == 0 and not zero_ok:
            raise ValueError(f"{show(value)} would fail every request; expected a duration above 0")
        return seconds

    return parse


_STREAMS = "a whole number from 1 to 10000, such as 100"


def streams(value: Any) -> int:
    expect(is_int(value), value, _STREAMS)
    if not 1 <= value <= 10_000:
        raise ValueError(f"{value} is out of range; expected {_STREAMS}")
    return value


_CONNECTIONS = "a whole number from 1 to 10000000, such as 50, or \"off\""


def connections(value: Any) -> int | None:
    """max_connections, max_connections_per_client: a count, or "off"."""
    if value == "off":
        return None
    expect(is_int(value), value, _CONNECTIONS)
    if not 1 <= value <= 10_000_000:
        raise ValueError(f"{value} is out of range; expected {_CONNECTIONS}")
    return value


def http2_engine(value: Any) -> str:
    choice = one_of(*HTTP2_ENGINES)(value)
    _engine(choice)  # "nghttp2" where it is not built: the error says how to build it
    return choice


def boolean(value: Any) -> bool:
    expect(isinstance(value, bool), value, "true or false")
    return value


