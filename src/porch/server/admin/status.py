"""`porch status`: the dashboard's summary in the terminal, from the running Porch's
admin API (the one `[porch] admin` names: its unix socket, or TCP with the token)."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

from porch.config import admin as admin_config
from porch.config.model import Config


class StatusError(Exception):
    """Why the status cannot be shown (the CLI prints it)."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("admin", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def fetch(config: Config, timeout: float = 10.0) -> dict[str, Any]:
    g = config.porch
    if g.admin is None:
        raise StatusError('porch status reads the admin API: set [porch] admin = "/run/porch/admin.sock"'
                          ' (or an address and a token) and reload')
    headers = {}
    if admin_config.is_unix(g.admin):
        conn: http.client.HTTPConnection = _UnixConnection(g.admin, timeout)
    else:
        host, port = admin_config.split(g.admin)
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            token = admin_config.token(g.admin, g.admin_token, g.admin_token_file)
        except ValueError as err:
            raise StatusError(f"admin_token_file: {err}") from None
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request("GET", "/api/dashboard", headers=headers)
        response = conn.getresponse()
        body = response.read()
    except OSError as err:
        raise StatusError(f"cannot reach the admin API on {g.admin}: {err.strerror or err}; is porch running?") from None
    finally:
        conn.close()
    if response.status != 200:
        raise StatusError(f"the admin API on {g.admin} answered {response.status}: {body.decode(errors='replace').strip()}")
    return json.loads(body)


def render(data: dict[str, Any]) -> str:
    lines = [f"porch (pid {data['pid']}) serving {data['config']} with {data['workers']} worker(s)",
             f"requests {data['requests']} (4xx {data['client_errors']}, 5xx {data['errors']}),"
             f" connections {data['connections']}, HTTP/2 streams {data['streams']}, tunnels {data['tunnels']},"
             f" reloads ok {data['reloads']['ok']} failed {data['reloads']['failed']}", "", "sites:"]
    for site in data["sites"]:
        routes = "; ".join(f"{r['path']} -> {', '.join(r['proxy'])}" for r in site["routes"])
        lines.append(f"  {site['name']} (tls {site['tls']}): {routes}")
    if data["upstreams"]:
        lines += ["", "upstreams:"]
        for u in data["upstreams"]:
            why = u["health_error"] or u["last_error"]
            lines.append(f"  {u['url']}  {u['state']}  in flight {u['in_flight']}  failures {u['failures']}"
                         + (f"  ({why})" if why else ""))
    if data["certificates"]:
        lines += ["", "certificates:"]
        for c in data["certificates"]:
            lines.append(f"  {', '.join(c['names'])}  {c['source']}  {c['state']}  left {c['left']}")
    if data["recent_errors"]:
        lines += ["", "recent errors:"]
        lines += [f"  {e['line']}" for e in data["recent_errors"][-10:]]
    return "\n".join(lines)
