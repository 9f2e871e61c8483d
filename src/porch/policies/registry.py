"""Config keys that make policies: one `PolicySpec` per key, in one table.

A front-end (porch.toml today; nginx and Apache files later) finds here how to read a
policy key and where it may be written; the values of `[porch]`, a site and a route
are merged in that order (`PolicySpec.merge`, the inner one winning by default), and
`config/compile.py` builds each route's policies from the merged values.  A new policy
is a module under `policies/` and one line in `SPECS`: the loaders need no edit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from porch.pipeline import Policy
from porch.policies import allow, basic_auth, compress, expires, forward_auth, headers, rate_limit, root, security

if TYPE_CHECKING:
    from porch.config.model import UpstreamTarget
    from porch.limits.table import CounterTable
    from porch.observability.errorlog import ErrorLog
    from porch.observability.stats import PolicyMetrics
    from porch.storage import Storage
    from porch.upstream.pool import Target


@dataclass(frozen=True)
class Env:
    """What a policy may use at load time besides its config value (one per load,
    shared by every build call): the state storage (files today, Redis later), the
    error log.  A policy that needs a new load-time service adds a field here, once,
    for all policies, never an import of `server/`."""

    storage: Storage
    error_log: ErrorLog
    site: str = ""  # the site's name (its first host), for log lines
    # What a policy's instances of one load share (a file read once, a table of
    # failed logins): a key per policy module, filled by its `build`.
    shared: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    # counters shared by the machine's workers (limits/table.py); None: this process's own
    counters: CounterTable | None = None
    # Counters a policy increments (observability/stats.py: counter(name, doc, labels),
    # rate_limited), gathered into /metrics; None where nothing collects them (tests).
    metrics: PolicyMetrics | None = None
    # the keep-alive pool of an upstream address, shared with the routes that proxy
    # there (config/compile.py): for policies that send subrequests (forward_auth)
    upstream: Callable[[UpstreamTarget], Target] | None = None


def _inner_wins(outer: Any, inner: Any) -> Any:
    return inner


def _as_written(config: Any) -> Any:
    return list(config) if isinstance(config, tuple) else config


@dataclass(frozen=True)
class PolicySpec:
    """How one config key becomes a policy.

    - `parse(value)`: the value as written -> a frozen config value; ValueError with a
      message that says what is wrong and what to write instead;
    - `build(config, env)`: the merged config value -> a Policy (at load time, once a
      route), with the load-time services of `env`;
    - `merge(outer, inner)`: a site's value over [porch]'s, a route's over the site's;
    - `describe(config)`: the words `porch check` prints for it;
    - `dump(config)`: the value as porch.toml spells it, which `parse` reads back to
      `config` (`porch check --dump`); the default fits values parse returns as written;
    - `warnings(config)`: what `porch check` warns about (the config can be served);
    - `identity(config)`: header names the policy sets upstream as who the client
      is: never taken from a client, on every site and route (server/client.py).
    """

    key: str
    parse: Callable[[Any], Any]
    build: Callable[[Any, Env], Policy | None]  # None: the value turns it off (false)
    merge: Callable[[Any, Any], Any] = _inner_wins
    describe: Callable[[Any], str] = str
    dump: Callable[[Any], Any] = _as_written
    warnings: Callable[[Any], tuple[str, ...]] = lambda config: ()
    identity: Callable[[Any], tuple[str, ...]] = lambda config: ()


_ABSENT = object()
SPECS: tuple[PolicySpec, ...] = (
    PolicySpec("request_headers", headers.parse_request, headers.RequestHeaders, headers.merge,
               headers.describe, headers.dump),
    PolicySpec("response_headers", headers.parse_response, headers.ResponseHeaders, headers.merge,
               headers.describe, headers.dump),
    PolicySpec("security_headers", security.parse, security.build, describe=security.describe,
               dump=security.dump),
    PolicySpec("basic_auth", basic_auth.parse, basic_auth.build, describe=basic_auth.describe,
               dump=basic_auth.dump, warnings=basic_auth.warnings, identity=basic_auth.identity_headers),
    PolicySpec("expires", expires.parse, expires.build, describe=expires.describe, dump=expires.dump),
    PolicySpec("compress", compress.parse, compress.build, describe=compress.describe, dump=compress.dump),
    PolicySpec("rate_limit", rate_limit.parse, rate_limit.build, describe=rate_limit.describe,
               dump=rate_limit.dump),
    PolicySpec("allow", allow.parse, allow.build_allow, describe=allow.describe, dump=allow.dump),
    PolicySpec("deny", allow.parse, allow.build_deny, describe=allow.describe, dump=allow.dump),
    PolicySpec("root", root.parse, root.build, describe=root.describe, dump=root.dump),
    PolicySpec("forward_auth", forward_auth.parse, forward_auth.build, describe=forward_auth.describe,
               dump=forward_auth.dump, identity=forward_auth.identity_headers),
)
REGISTRY: dict[str, PolicySpec] = {spec.key: spec for spec in SPECS}


def merged(layers: list[dict[str, Any]]) -> tuple[tuple[str, Any], ...]:
    """The policy values of `layers` (outermost first), merged key by key, in SPECS order."""
    out = []
    for spec in SPECS:
        value = _ABSENT
        for layer in layers:
            if spec.key in layer:
                inner = layer[spec.key]
                value = inner if value is _ABSENT or value is None or inner is None else spec.merge(value, inner)
        if value is not _ABSENT:
            out.append((spec.key, value))
    return tuple(out)


def build(policies: tuple[tuple[str, Any], ...], env: Env) -> list[Policy]:
    built = (REGISTRY[key].build(value, env) for key, value in policies)
    return [policy for policy in built if policy is not None]


def identity_headers(layers: list[tuple[tuple[str, Any], ...]]) -> frozenset[bytes]:
    """The lowercase names every policy of `layers` (sites' and routes' merged values)
    sets upstream as the client's identity (`PolicySpec.identity`)."""
    return frozenset(name.lower().encode() for policies in layers for key, value in policies
                     if value is not None for name in REGISTRY[key].identity(value))


def warnings(where: str, policies: tuple[tuple[str, Any], ...]) -> list[str]:
    """`porch check`'s warnings about the policies of one site or route (`where`)."""
    return [f"{where}.{key}: {text}" for key, value in policies if value is not None
            for text in REGISTRY[key].warnings(value)]
