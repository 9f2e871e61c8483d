"""The `[porch]` keys of the admin API: where it listens and the token it wants.

    admin = "127.0.0.1:2019"        # or "/run/porch/admin.sock"; off when absent
    admin_token = "..."             # or admin_token_file = "/etc/porch/admin-token",
                                    # or the environment's PORCH_ADMIN_TOKEN

Over TCP every request needs `Authorization: Bearer TOKEN`: anything that can open a
connection to the port could otherwise reload the config.  A unix socket is made
mode 0600, so only its owner (and root) can connect: no token there (as Docker's
and Caddy's admin sockets).  The token is looked up when the admin API starts
(`token()`), not kept in the model, so `GET /config` never shows it from a file.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

ENV_TOKEN = "PORCH_ADMIN_TOKEN"
MIN_TOKEN = 16  # characters: a guessable token is no token


def parse_address(value: Any) -> str:
    """"host:port" (IPv6 as "[::1]:2019") or an absolute unix socket path."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{value!r} is not an address; write \"127.0.0.1:2019\" or a unix socket path"
                         ' such as "/run/porch/admin.sock"')
    if value.startswith("/"):
        return value
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(host)
        ok = sep == ":" and port.isdigit() and 0 < int(port) < 65536
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f'"{value}" is not IP:port or an absolute unix socket path; write'
                         ' "127.0.0.1:2019" (an IP address, not a name) or "/run/porch/admin.sock"')
    return value


def parse_token(value: Any) -> str:
    if not isinstance(value, str) or len(value.strip()) < MIN_TOKEN:
        raise ValueError(f"is shorter than {MIN_TOKEN} characters; use a long random string"
                         " (openssl rand -hex 32)")
    return value.strip()


def is_unix(address: str) -> bool:
    return address.startswith("/")


def split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def token_problem(admin: str | None, token: str | None, token_file: str | None) -> str | None:
    """Why the admin settings cannot serve (for `porch check`), or None."""
    if admin is None or is_unix(admin):
        return None
    if token_file is not None:
        try:
            read_token_file(token_file)
        except ValueError as err:
            return f"admin_token_file: {err}"
        return None
    if token is None and not os.environ.get(ENV_TOKEN, "").strip():
        return (f"admin: \"{admin}\" is a TCP address and no token is set; add admin_token or"
                f" admin_token_file (or set ${ENV_TOKEN}), or use a unix socket path")
    return None


def read_token_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read().strip()
    except OSError as err:
        raise ValueError(f"{path} cannot be read: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None
    if len(text) < MIN_TOKEN:
        raise ValueError(f"{path} holds fewer than {MIN_TOKEN} characters; write a long random string"
                         " in it (openssl rand -hex 32 > FILE)")
    return text


def token(admin: str, token: str | None, token_file: str | None) -> str | None:
    """The token requests must carry; None for a unix socket."""
    if is_unix(admin):
        return None
    if token is not None:
        return token
    if token_file is not None:
        return read_token_file(token_file)
    return os.environ.get(ENV_TOKEN, "").strip() or None
