"""porch.toml keys of upstream pools: targets with weights, balancing, health, retries.

    proxy = ["http://10.0.0.4:8080", { url = "http://10.0.0.5:8080", weight = 5 }]
    balance = "least_conn"          # round_robin (default), least_conn, ip_hash,
                                    # uri_hash, random_two, cookie
    max_fails = 1                   # nginx: failures within fail_timeout that take a
    fail_timeout = "10s"            #   target out for fail_timeout (0: never)
    retries = 1                     # other targets tried after a failed connect
    health = { path = "/health", interval = "5s", timeout = "2s", expect = "2xx",
               rise = 2, fall = 3 }

Route keys, inherited from the site like `proxy`.  Each parser takes the TOML value
and returns the model value or raises ValueError (SubProblems for a table: one
problem per key) whose message quotes the value and says what to write instead;
config/validate.py prefixes the key path.  `pool()` builds the model's Pool from the
values read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from porch.config.model import HealthCheck, Pool, Route, UpstreamTarget
from porch.config.units import format_duration, parse_duration

BALANCE = ("round_robin", "least_conn", "ip_hash", "uri_hash", "random_two", "cookie")
MAX_WEIGHT = 1000  # HAProxy's weights go to 256, Envoy's to 128: room enough, and bounded
_TARGET = 'a URL like "http://127.0.0.1:8080" or { url = "http://127.0.0.1:8080", weight = 5 }'
_EXPECT_RE = re.compile(r"([1-5])(?:xx|\d\d)", re.IGNORECASE)
_EXPECT_HELP = 'write a status (200), a class ("2xx"), or several: "2xx,3xx" or [200, 204]'


class SubProblems(ValueError):
    """Problems inside a table value, each at its own key: `site[0].health.interval`."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(message for _, message in problems))
        self.problems = problems


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value if len(value) <= 60 else value[:57] + "...", ensure_ascii=False)
    if isinstance(value, dict):
        return "{...}"
    if isinstance(value, list):
        inner = ", ".join(_show(item) for item in value[:3])
        return f"[{inner}{', ...' if len(value) > 3 else ''}]"
    return str(value)


def _int(value: Any, low: int, high: int | None, what: str) -> int:
    expected = f"an integer {low}-{high}" if high is not None else f"an integer {low} or more"
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{_show(value)} is not an integer; expected {expected} ({what})")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{value} is out of range; expected {expected} ({what})")
    return value


# --- proxy -----------------------------------------------------------------------


def targets(value: Any, url: Callable[[str], UpstreamTarget]) -> tuple[UpstreamTarget, ...]:
    """`proxy`: a URL, a target table, or a non-empty array of them.  `url` parses one
    URL (config/hosts.py's, shared with every other URL check)."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValueError(f"[] is empty; expected at least one: {_TARGET}")
    found: list[UpstreamTarget] = []
    for n, item in enumerate(items):
        where = f"target {n + 1} " if len(items) > 1 else ""
        target = _target(item, url, where)
        if any(t.address == target.address for t in found):
            raise ValueError(f"{_show(target.url)} is listed twice")
        found.append(target)
    if len({t.path for t in found}) > 1:  # requests are rewritten once, for all
        raise ValueError(f"{_show(value)} mixes paths; the upstreams of one route share one path")
    return tuple(found)


def _target(item: Any, url: Callable[[str], UpstreamTarget], where: str) -> UpstreamTarget:
    if isinstance(item, str):
        return url(item)
    if not isinstance(item, dict):
        raise ValueError(f"{where}{_show(item)} is not a target; expected {_TARGET}, or an array of them")
    unknown = sorted(set(item) - {"url", "weight"})
    if unknown:
        raise ValueError(f"{where}has unknown key {unknown[0]}; a target table takes url and weight")
    if not isinstance(item.get("url"), str):
        raise ValueError(f"{where}has no url; write {{ url = \"http://host:port\", weight = 5 }}")
    target = url(item["url"])
    weight = _int(item.get("weight", 1), 1, MAX_WEIGHT, f"{where}weight: its share of the requests".strip())
    return UpstreamTarget(target.scheme, target.host, target.port, target.path, weight)


# --- pool keys -------------------------------------------------------------------


def _balance(value: Any) -> str:
    if value not in BALANCE:
        raise ValueError(f"{_show(value)} is not a balancing mode; expected one of: "
                         + ", ".join(f'"{mode}"' for mode in BALANCE))
    return value


def _max_fails(value: Any) -> int:
    return _int(value, 0, None, "failures within fail_timeout that take a target out; 0: never")


def _fail_timeout(value: Any) -> float:
    return _positive(value, "10s")


def _retries(value: Any) -> int:
    return _int(value, 0, 100, "other targets tried after a failed one; 0: none")


def expect(value: Any) -> tuple[tuple[int, int], ...]:
    """Status ranges from 200, "2xx", "200", "2xx,3xx" or an array of those."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValueError(f"[] is empty; {_EXPECT_HELP}")
    ranges: list[tuple[int, int]] = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool) and 100 <= item <= 599:
            ranges.append((item, item))
            continue
        if not isinstance(item, str):
            raise ValueError(f"{_show(item)} is not a status; {_EXPECT_HELP}")
        for part in item.split(","):
            match = _EXPECT_RE.fullmatch(part.strip())
            if match is None:
                raise ValueError(f"{_show(part.strip())} is not a status; {_EXPECT_HELP}")
            text = part.strip().lower()
            low = int(text.replace("x", "0"))
            ranges.append((low, low + 99) if text.endswith("xx") else (low, low))
    return tuple(ranges)


def _health_path(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f'{_show(value)} is not a path; write one like "/health"')
    if any(c in value for c in " \r\n\t"):
        raise ValueError(f"{_show(value)} has white space; percent-encode it (%20)")
    return value


_HEALTH_KEYS: dict[str, Callable[[Any], Any]] = {
    "path": _health_path,
    "interval": lambda v: _positive(v, "5s"),
    "timeout": lambda v: _positive(v, "2s"),
    "expect": expect,
    "rise": lambda v: _int(v, 1, 100, "good probes that bring a target back"),
    "fall": lambda v: _int(v, 1, 100, "bad probes that take a target out"),
}


def _positive(value: Any, example: str) -> float:
    try:
        seconds = parse_duration(value)
    except TypeError as e:  # the wrong TOML type: a ValueError like any bad value
        raise ValueError(str(e)) from None
    if seconds <= 0:
        raise ValueError(f"{_show(value)} is zero; write a duration like \"{example}\"")
    return seconds


def _health(value: Any) -> HealthCheck:
    if not isinstance(value, dict):
        raise ValueError(f'{_show(value)} is not a table; write health = {{ path = "/health" }} '
                         "(and interval, timeout, expect, rise, fall as needed)")
    fields: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    for key, item in value.items():
        if key not in _HEALTH_KEYS:
            problems.append((key, f"unknown key (expected one of: {', '.join(_HEALTH_KEYS)})"))
            continue
        try:
            fields[key] = _HEALTH_KEYS[key](item)
        except (ValueError, TypeError) as e:
            problems.append((key, str(e)))
    check = HealthCheck(**fields) if not problems else None
    if check is not None and check.timeout > check.interval:
        problems.append(("timeout", f"{check.timeout:g}s is longer than interval ({check.interval:g}s);"
                                    " a probe must end before the next begins: shorten it"))
    if problems:
        raise SubProblems(problems)
    return check  # type: ignore[return-value]


POOL_KEYS: dict[str, Callable[[Any], Any]] = {
    "balance": _balance,
    "max_fails": _max_fails,
    "fail_timeout": _fail_timeout,
    "retries": _retries,
    "health": _health,
}


def pool(values: dict[str, Any]) -> Pool:
    """The route's Pool from its layered values (bad ones already left out)."""
    return Pool(**{key: values[key] for key in POOL_KEYS if key in values})


# --- `porch check` ---------------------------------------------------------------


def target_text(target: UpstreamTarget) -> str:
    return f"{target.url} (weight {target.weight})" if target.weight != 1 else target.url


def pool_text(route: Route) -> str:
    """The route's pool settings for `porch check`; "" for one target without probes."""
    p = route.pool
    if len(route.upstreams) == 1 and p.health is None:
        return ""
    parts = [p.balance.replace("_", " ")]
    if len(route.upstreams) > 1:
        parts.append(f"out for {format_duration(p.fail_timeout)} after {p.max_fails} failure(s)"
                     if p.max_fails else "never out on failures")
        parts.append(f"{p.retries} retr{'y' if p.retries == 1 else 'ies'}")
    if p.health is not None:
        h = p.health
        expect = ",".join(f"{low // 100}xx" if high - low == 99 else str(low) for low, high in h.expect)
        parts.append(f"health GET {h.path} every {format_duration(h.interval)} (timeout"
                     f" {format_duration(h.timeout)}, expect {expect}, rise {h.rise}, fall {h.fall})")
    return ", ".join(parts)
