"""Upstream health decisions, no I/O: passive (failures seen by requests) and active
(probes), and the state file that carries probe results from the supervisor to the
workers.

Passive, as nginx's max_fails/fail_timeout (ngx_http_upstream_round_robin.c): a
failure (connect error or timeout, a reset before any response byte; not a 502 or
504 the target sends itself) counts within a window of fail_timeout that starts with
the first one; the max_fails-th within it takes the target out for fail_timeout.
Then it is tried again, and one more failure takes it out again.

Active: a target is up until `fall` probes in a row fail, then down until `rise`
probes in a row succeed (nginx plus health_check passes/fails, HAProxy rise/fall).

The state file (`upstream/health.json` in state_dir, written atomically by the
supervisor's prober, upstream/prober.py): {"down": ["http://10.0.0.5:8080", ...],
"drained": [...]}, target addresses (scheme://host:port) whose probes say down, and
those an operator drained (the admin API's POST /upstreams/TARGET/drain).  Workers
stat it each sweep (server/listener.py) and read it when it changed; either list
takes a target out of rotation for new requests (those in flight finish).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

STATE_KEY = "upstream/health.json"


def record_failure(target: Any, now: float, max_fails: int, fail_timeout: float) -> bool:
    """Count one failure of `target` (a pool.Target: fails, fail_start, down_until);
    True when this one takes it out (for fail_timeout from now)."""
    if not max_fails:
        return False
    if target.fails == 0 or now - target.fail_start > fail_timeout:
        target.fails = 0
        target.fail_start = now  # a new window
    target.fails += 1
    if target.fails < max_fails:
        return False
    target.fails = 0
    target.down_until = now + fail_timeout
    return True


def status_expected(status: int, expect: tuple[tuple[int, int], ...]) -> bool:
    return any(low <= status <= high for low, high in expect)


@dataclass
class ProbeState:
    """One target's active health: up or down, and the run of results against it."""

    up: bool = True
    run: int = 0  # probes in a row that disagree with `up`
    last_error: str = ""


def after_probe(state: ProbeState, ok: bool, rise: int, fall: int, error: str = "") -> bool:
    """Count one probe result; True when it flips the target's state."""
    if ok == state.up:
        state.run = 0
        return False
    state.run += 1
    state.last_error = error
    if state.run < (rise if ok else fall):
        return False
    state.up = ok
    state.run = 0
    return True


def encode_state(down: set[str], drained: set[str] | frozenset[str] = frozenset()) -> bytes:
    return json.dumps({"down": sorted(down), "drained": sorted(drained)}).encode() + b"\n"


def decode_state(data: bytes | None) -> set[str]:
    """The addresses the file takes out of rotation (down or drained); none for a
    missing or foreign file."""
    try:
        record = json.loads(data or b"{}")
    except ValueError:
        return set()
    out: set[str] = set()
    for key in ("down", "drained"):
        items = record.get(key) if isinstance(record, dict) else None
        if isinstance(items, list):
            out |= {item for item in items if isinstance(item, str)}
    return out
