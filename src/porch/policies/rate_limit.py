"""`rate_limit`: nginx's `limit_req`, per client, across every worker of the machine.

    rate_limit = { rate = "10r/s", burst = 20, nodelay = true }
    rate_limit = { rate = "30r/m", key = "header:X-Api-Key", status = 503 }

The algorithm is ngx_http_limit_req_module's, to the milli-request (limits/_table.pyx
`limit_req`): each key has an `excess` in milli-requests that leaks at `rate`; a
request adds 1000 (excess = excess - rate * elapsed_ms / 1000 + 1000, at least 0)
and is rejected when that passes `burst` * 1000, leaving the state as it was.  A
key's first request is free (excess 0), so after idling, `burst + 1` requests pass
at once: 21 for burst = 20, as nginx (tests/integration/test_rate_limit.py runs both).

- Accepted with an excess: delayed by excess / rate (nginx queues it: the client
  sees requests spread at `rate`), or passed at once with `nodelay = true`.
- Rejected: `status` (429 by default; nginx answers 503 unless limit_req_status
  says otherwise, and 503 tells a client the server is broken, not that it is
  too fast: RFC 6585 4), with Retry-After: the seconds until a request would pass.
  A rejection is logged once per key per LOG_EVERY seconds, not per request, so a
  flood does not flood the log.
- `key`: "client" (default: the real client address, after trusted_proxies),
  "header:NAME" (a field's value, an API key), or "user" (the user an auth policy
  let in: this one runs after authentication, see pipeline.ORDER).  An empty key
  (no such header, no user) is not limited, as nginx does not account empty keys.
- The counters live in the machine's shared table (limits/table.py): one client's
  connections spread over all workers count together.  Routes with the same
  rate_limit value share their buckets (one nginx zone); `zone = "name"` gives a
  value a bucket set of its own, or shares one between different values.
"""

from __future__ import annotations

import asyncio
import math
import re
from dataclasses import dataclass
from typing import Any

from porch.http.model import Headers
from porch.limits.table import CounterTable, local_table, now_ms
from porch.pipeline import Context, Policy, Reply

_RATE = re.compile(r"([1-9][0-9]{0,8})r/([sm])")
_KEYS = ("rate", "burst", "nodelay", "status", "key", "zone")
_EXAMPLE = 'a table like { rate = "10r/s", burst = 20, nodelay = true }'
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
LOG_EVERY = 60.0  # seconds between two log lines about one key's rejections
_LOGGED_MAX = 10_000  # remembered keys; forgotten all at once past this


@dataclass(frozen=True)
class RateLimit:
    rate: str  # as written: "10r/s"
    per_second_milli: int  # nginx's ctx->rate: requests * 1000 per second
    burst: int = 0
    nodelay: bool = False
    status: int = 429
    key: str = "client"  # "client", "user", "header:Name"
    zone: str = ""


def parse(value: Any) -> RateLimit | None:
    if value is False:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{value!r} is not {_EXAMPLE}")
    unknown = [k for k in value if k not in _KEYS]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not one of {', '.join(_KEYS)}")
    if "rate" not in value:
        raise ValueError(f'rate is missing; write {_EXAMPLE}')
    return RateLimit(
        rate=value["rate"], per_second_milli=_rate(value["rate"]), burst=_burst(value.get("burst", 0)),
        nodelay=_flag(value.get("nodelay", False)), status=_status(value.get("status", 429)),
        key=_key(value.get("key", "client")), zone=_zone(value.get("zone", "")))


def _rate(text: Any) -> int:
    m = _RATE.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f'rate: {text!r} is not a rate; write requests per second or minute:'
                         ' "10r/s", "30r/m"')
    # nginx: rate * 1000 / scale, in whole milli-requests per second (1r/m is 16)
    return int(m.group(1)) * 1000 // (1 if m.group(2) == "s" else 60)


def _burst(n: Any) -> int:
    if type(n) is not int or not 0 <= n <= 1_000_000:
        raise ValueError(f"burst: {n!r} is not a whole number from 0 to 1000000 (requests"
                         " allowed over the rate before rejecting), such as 20")
    return n


def _flag(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"nodelay: {v!r} is not true or false")
    return v


def _status(n: Any) -> int:
    if type(n) is not int or not 400 <= n <= 599:
        raise ValueError(f"status: {n!r} is not an error status from 400 to 599; 429 (the"
                         " default) or 503 (nginx's)")
    return n


def _key(k: Any) -> str:
    if k in ("client", "user"):
        return k
    if isinstance(k, str) and k.lower().startswith("header:") and _HEADER_NAME.fullmatch(k[7:]):
        return "header:" + k[7:]
    raise ValueError(f'key: {k!r} is not "client", "user" or "header:Name" (such as'
                     ' "header:X-Api-Key")')


def _zone(z: Any) -> str:
    if not isinstance(z, str) or len(z) > 64:
        raise ValueError(f'zone: {z!r} is not a name (a short string such as "api")')
    return z


def dump(config: RateLimit | None) -> dict[str, Any] | bool:
    """The value as porch.toml spells it (`porch check --dump`)."""
    if config is None:
        return False
    out: dict[str, Any] = {"rate": config.rate, "burst": config.burst, "nodelay": config.nodelay,
                           "status": config.status, "key": config.key}
    if config.zone:
        out["zone"] = config.zone
    return out


def describe(config: RateLimit | None) -> str:
    if config is None:
        return "off"
    how = "nodelay" if config.nodelay else "delayed"
    return (f"{config.rate} burst {config.burst} {how} per {config.key}, over it {config.status}"
            + (f", zone {config.zone}" if config.zone else ""))


def build(config: RateLimit | None, env: Any = None) -> Policy | None:
    if config is None:
        return None
    table = getattr(env, "counters", None) or local_table()
    return (UserRateLimit if config.key == "user" else ClientRateLimit)(config, table)


class ClientRateLimit(Policy):
    """A request hook over the shared table: pass, delay, or reject."""

    name = "rate_limit"
    __slots__ = ("table", "rate", "burst", "nodelay", "status", "zone", "header", "user", "logged")

    def __init__(self, config: RateLimit, table: CounterTable) -> None:
        self.table = table
        self.rate = config.per_second_milli
        self.burst = config.burst * 1000
        self.nodelay = config.nodelay
        self.status = config.status
        zone = config.zone or f"{config.rate}|{config.burst}|{config.key}|{config.nodelay}|{config.status}"
        self.zone = b"rl:" + zone.encode() + b"\0"
        self.header = config.key[7:].encode() if config.key.startswith("header:") else b""
        self.user = config.key == "user"
        self.logged: dict[bytes, float] = {}  # key -> when a rejection was last logged

    def key_of(self, ctx: Context) -> bytes:
        if self.header:
            return Headers(ctx.headers).get(self.header) or b""
        if self.user:
            return str(ctx.vars.get("remote_user") or "").encode()
        return ctx.client_ip.encode()

    def request(self, ctx: Context):
        key = self.key_of(ctx)
        if not key:
            return None
        excess = self.table.limit_req(self.zone + key, now_ms(), self.rate, self.burst)
        if excess < 0:
            return self._reject(ctx, key, -excess)
        if excess == 0 or self.nodelay:
            return None
        # nginx: delay = excess * 1000 / rate ms; the exchange reads nothing meanwhile
        return asyncio.sleep(excess / self.rate)

    def _reject(self, ctx: Context, key: bytes, excess: int) -> Reply:
        # A request passes once the excess has leaked to burst: (excess - burst) / rate s.
        wait = max(1, math.ceil((excess - self.burst) / self.rate))
        now = now_ms() / 1000
        if now - self.logged.get(key, -LOG_EVERY) >= LOG_EVERY:
            if len(self.logged) >= _LOGGED_MAX:
                self.logged.clear()
            self.logged[key] = now
            ctx.log_error(self.name, f"limiting requests of {key.decode(errors='replace')!r}: excess"
                          f" {excess / 1000:.3f} over burst {self.burst // 1000} at"
                          f" {self.rate / 1000:g}r/s; answered {self.status} (logged once a minute)")
        return Reply(self.status, headers=Headers.of(((b"Retry-After", str(wait).encode()),)))


class UserRateLimit(ClientRateLimit):
    """key = "user": after authentication, which names the user (pipeline.ORDER)."""

    name = "rate_limit_user"
    __slots__ = ()
