"""Active health checks: probed once per target by the supervisor, read by the workers.

    supervisor: HealthService (a service, server/services.py)
        one task per target address with a `health` table: GET path every interval;
        rise/fall decided by upstream/health.py; on a change, a log line and the
        addresses now down written to state_dir/upstream/health.json (atomic rename)
    workers: HealthWatcher (Runtime.health)
        the sweeper (server/listener.py, twice a second) stats the file; when it
        changed, sets Target.probe_up for the targets it names

Why a file and not a message on the control socket: a worker started later (a
restart, a reload's new generation) reads the current state when it compiles its
config, with nothing to replay; the control socket carries a handful of lifecycle
commands today and would need a writer per worker; and a stat every half second is
all a worker pays.  The state is keyed by address (scheme://host:port): a reload
keeps the probe state of the addresses it keeps, and targets shared by two routes
share it.  Where two routes probe one address with different settings, the first
route's `health` is used.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable
from typing import TYPE_CHECKING

from porch.config.model import Config, HealthCheck, UpstreamTarget, UpstreamTLS
from porch.storage import Storage, StorageError
from porch.upstream.health import STATE_KEY, ProbeState, after_probe, decode_state, encode_state, status_expected

if TYPE_CHECKING:
    from porch.observability.errorlog import ErrorLog
    from porch.upstream.pool import Target

MAX_STATUS_LINE = 8192


Probed = tuple[HealthCheck, UpstreamTarget, "UpstreamTLS | None", "str | None"]


def probed_addresses(config: Config) -> dict[str, Probed]:
    """Each probed target address, with the health settings, TLS and Host header
    (the route's upstream_host, else the target's host:port) it is probed with."""
    found: dict[str, Probed] = {}
    for site in config.sites:
        for route in site.routes:
            if route.pool.health is None:
                continue
            for target in route.upstreams:
                tls = route.upstream_tls if target.scheme == "https" else None
                found.setdefault(target.address, (route.pool.health, target, tls, route.upstream_host))
    return found


class HealthWatcher:
    """A worker's view of the probe results: `poll()` once per sweep."""

    def __init__(self, storage: Storage, targets: Iterable[Target]) -> None:
        self.storage = storage
        self.targets = tuple(targets)
        self.stamp: float | None = -1.0
        self.poll()

    def poll(self) -> None:
        try:
            stamp = self.storage.modified(STATE_KEY)
            if stamp == self.stamp:
                return
            data = self.storage.get(STATE_KEY)
        except StorageError:
            return  # the supervisor's to report: keep the last known state
        self.stamp = stamp
        down = decode_state(data)
        for target in self.targets:
            target.probe_up = target.address not in down


async def probe(check: HealthCheck, target: UpstreamTarget, context: ssl.SSLContext | None,
                server_name: str | None, host: str | None = None) -> str:
    """One probe: "" if the target answered an expected status within the timeout,
    else why not (for the log line)."""
    try:
        return await asyncio.wait_for(_probe(check, target, context, server_name, host), check.timeout)
    except asyncio.TimeoutError:
        return f"no answer within {check.timeout:g}s"
    except (OSError, ssl.SSLError) as err:
        return f"connect failed: {err.strerror or err}" if isinstance(err, OSError) and err.strerror else str(err)


async def _probe(check: HealthCheck, target: UpstreamTarget, context: ssl.SSLContext | None,
                 server_name: str | None, host: str | None) -> str:
    reader, writer = await asyncio.open_connection(
        target.host, target.port, ssl=context,
        server_hostname=(server_name or target.host) if context is not None else None)
    try:
        writer.write(b"GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: porch-health-check\r\n"
                     b"Connection: close\r\n\r\n" % (check.path.encode(), (host or target.authority).encode()))
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError:
        return "closed the connection without a response"
    except asyncio.LimitOverrunError:
        return "sent no HTTP status line"
    finally:
        writer.close()
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return f"sent no HTTP status line ({line[:40]!r})"
    status = int(parts[1])
    return "" if status_expected(status, check.expect) else f"answered {status} to GET {check.path}"


class HealthService:
    """The supervisor's prober (a Service: start, reload, stop)."""

    def __init__(self) -> None:
        self.states: dict[str, ProbeState] = {}  # by address, kept across reloads
        self.tasks: dict[str, tuple[tuple, asyncio.Task]] = {}  # address -> (settings, its loop)
        self.storage: Storage | None = None
        self.log: ErrorLog | None = None
        # Out of rotation by the operator's word (admin API), by address, kept across
        # reloads; forgotten when Porch restarts.
        self.drained: set[str] = set()

    def drain(self, address: str, on: bool = True) -> None:
        """Take `address` out of rotation (`on`), or put it back; the workers learn it
        from the state file within a sweep (half a second)."""
        (self.drained.add if on else self.drained.discard)(address)
        self.log.info(f"upstream {address} {'drained: no new requests go to it' if on else 'back in rotation'}")
        self._write()

    async def start(self, config: Config, storage: Storage, log: ErrorLog) -> None:
        self.storage, self.log = storage, log
        self._write()  # a file left by an earlier run says nothing about now
        await self.reload(config)

    async def reload(self, config: Config) -> None:
        wanted = probed_addresses(config)
        for address in list(self.tasks):
            settings, task = self.tasks[address]
            if wanted.get(address) != settings:
                task.cancel()
                del self.tasks[address]
        for address, settings in wanted.items():
            if address not in self.tasks:
                self.tasks[address] = (settings, asyncio.get_running_loop().create_task(self._run(address, *settings)))
        gone = set(self.states) - set(wanted)
        for address in gone:
            del self.states[address]
        if gone:
            self._write()

    async def stop(self) -> None:
        for _, task in self.tasks.values():
            task.cancel()
        self.tasks.clear()

    async def _run(self, address: str, check: HealthCheck, target: UpstreamTarget, tls: UpstreamTLS | None,
                   host: str | None) -> None:
        context = None
        if tls is not None:
            from porch.upstream.tls import client_context

            context = client_context(verify=tls.verify, ca=tls.ca, cert=tls.cert, key=tls.key)
        state = self.states.setdefault(address, ProbeState())
        while True:
            error = await probe(check, target, context, tls.server_name if tls else None, host)
            if after_probe(state, not error, check.rise, check.fall, error):
                self._changed(address, state, check)
            await asyncio.sleep(check.interval)

    def _changed(self, address: str, state: ProbeState, check: HealthCheck) -> None:
        if state.up:
            self.log.info(f"upstream {address} is up again: {check.rise} health check(s) in a row passed")
        else:
            self.log.error(f"upstream {address} is down: {check.fall} health check(s) in a row failed"
                           f" (last: {state.last_error}); no requests go to it until {check.rise} pass")
        self._write()

    def _write(self) -> None:
        down = {address for address, state in self.states.items() if not state.up}
        try:
            self.storage.put(STATE_KEY, encode_state(down, self.drained), mode=0o644)
        except StorageError as err:
            self.log.error(f"cannot write the upstream health state: {err}")
