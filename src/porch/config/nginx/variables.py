"""nginx values -> porch.toml values: sizes, times, listen lines, `$variables`.

Each function takes the directive (for its arguments and origin) and returns the
porch.toml value, or raises `Problem` whose message says what is wrong and what to
write: the builder prefixes `file:line: directive: `.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from porch.config.nginx.parse import Directive


class Problem(ValueError):
    """A directive that cannot be used as written."""


# ngx_parse_size: digits and one of k, m, g (either case); nothing else.
_SIZE = re.compile(r"(\d+)([kKmMgG]?)")
_SIZE_SLOPPY = re.compile(r"(\d+)([kKmMgG])[bB]")


def size(text: str, warnings: list[str], origin: str) -> str:
    """A size as porch.toml writes it ("512M"); "20MB", which nginx refuses, is read
    as "20M" with a warning (Snikket's guide prints it)."""
    match = _SIZE.fullmatch(text)
    if match:
        number, unit = match.groups()
        return f"{number}{unit.upper()}" if unit else number
    sloppy = _SIZE_SLOPPY.fullmatch(text)
    if sloppy:
        fixed = f"{sloppy.group(1)}{sloppy.group(2).upper()}"
        warnings.append(f'{origin}: "{text}" is refused by nginx ("invalid value"); read as'
                        f" {fixed}: write {fixed} (nginx sizes take k, m or g, no B)")
        return fixed
    raise Problem(f'"{text}" is not an nginx size; write bytes (1048576) or 64k, 20m, 1g')


# ngx_parse_time: one or more number+unit groups, units ms s m h d w M y; bare = seconds.
_TIME_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|M|y)?")
_TIME_SECONDS = {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400,
                 "M": 30 * 86400, "y": 365 * 86400}


def seconds(text: str) -> float:
    """nginx's time syntax ("300s", "1m30s", "60") in seconds."""
    at, total = 0, 0.0
    while at < len(text):
        match = _TIME_PART.match(text, at)
        if not match or match.end() == at:
            raise Problem(f'"{text}" is not an nginx time; write 60s, 5m, 1h or 500ms')
        total += int(match.group(1)) * _TIME_SECONDS[match.group(2)]
        at = match.end()
    if not text:
        raise Problem('"" is not an nginx time; write 60s, 5m, 1h or 500ms')
    return total


def duration(text: str) -> str:
    """A time as porch.toml writes it: "300s", or "500ms"."""
    value = seconds(text)
    return f"{int(value)}s" if value == int(value) else f"{int(round(value * 1000))}ms"


def on_off(d: Directive) -> bool:
    if len(d.args) != 1 or d.args[0] not in ("on", "off"):
        raise Problem(f'{" ".join(d.args)!r} is not on or off')
    return d.args[0] == "on"


@dataclass(frozen=True)
class Listen:
    address: str | None  # None: every address
    port: int
    ssl: bool
    http2: bool
    default: bool


def listen(d: Directive) -> Listen:
    """`listen [address:]port [ssl] [http2] [default_server] [ipv6only=on] ...`."""
    if not d.args:
        raise Problem("has no address or port; write listen 80; or listen 443 ssl;")
    where, flags = d.args[0], set(d.args[1:])
    if where.startswith("unix:"):
        raise Problem(f"{where} is a UNIX socket; Porch listens on TCP ports (write listen 80;)")
    address: str | None = None
    if where.startswith("["):
        address, _, rest = where[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else "80"
    elif where.isdigit():
        port_text = where
    elif ":" in where:
        address, _, port_text = where.rpartition(":")
    else:
        address, port_text = where, "80"
    if address in ("*", "::", "0.0.0.0"):
        address = None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise Problem(f"{where} has no valid port; write listen 80; or listen 127.0.0.1:8080;")
    known = {"ssl", "http2", "default_server", "default", "ipv6only=on", "ipv6only=off",
             "reuseport", "deferred", "proxy_protocol"}
    odd = sorted(f for f in flags if f not in known and not f.startswith(("backlog=", "so_keepalive=",
                                                                             "fastopen=", "rcvbuf=", "sndbuf=")))
    if odd:
        raise Problem(f"{odd[0]} is not supported here; the listen flags Porch reads are ssl,"
                      " http2, default_server and ipv6only")
    if "proxy_protocol" in flags:
        raise Problem('proxy_protocol: write accept_proxy_protocol = ["ADDRESS/CIDR"] in [porch]'
                      " (the peers allowed to send it)")
    return Listen(address, int(port_text), "ssl" in flags, "http2" in flags,
                  bool(flags & {"default_server", "default"}))


# --- header values -------------------------------------------------------------

# nginx variable -> Porch's filler in header values (policies/headers.py).
FILLERS = {
    "remote_addr": "{client_ip}",
    "binary_remote_addr": None,
    "host": "{host}",
    "scheme": "{scheme}",
    "remote_user": "{remote_user}",
}
_VAR = re.compile(r"\$(\{[A-Za-z0-9_]+\}|[A-Za-z0-9_]+)")


def variables(value: str) -> list[str]:
    """The variable names in `value`, without `$` and braces."""
    return [m.group(1).strip("{}") for m in _VAR.finditer(value)]


def header_value(value: str, constants: dict[str, str]) -> str:
    """An nginx header value as a porch.toml header template: `$remote_addr` is
    `{client_ip}`, `$server_name`/`$server_port` their values here (`constants`)."""
    bare = _VAR.sub("", value)  # ${name} is nginx's own syntax, not a literal brace
    if "{" in bare and "}" in bare:
        raise Problem(f"{value!r} holds braces, which Porch would read as a placeholder;"
                      " remove them")

    def fill(match: re.Match[str]) -> str:
        name = match.group(1).strip("{}")
        if name in constants:
            return constants[name]
        filler = FILLERS.get(name)
        if filler is None:
            known = ", ".join(f"${k}" for k, v in FILLERS.items() if v) + ", $server_name, $server_port"
            raise Problem(f"${name} has no Porch equivalent in a header value (it knows {known})")
        return filler

    return _VAR.sub(fill, value)
