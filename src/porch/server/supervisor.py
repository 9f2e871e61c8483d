"""The supervisor: owns the listening sockets, runs the workers, reloads, stops.

    porch run -c FILE
      supervisor     this module, in its own uvloop loop; serves no client traffic
        worker 1     python -m porch.server.worker (server/worker.py), serving on the
        worker 2     sockets inherited from the supervisor
        ...          `workers` of them ("auto": one per CPU)

- Sockets: opened here, once, and passed to the workers (subprocess pass_fds): one
  SO_REUSEPORT socket per worker slot and address, so the kernel spreads connections
  evenly (see Listeners).  They stay open here for as long as the config names them,
  so a port never stops accepting while workers come and go: the kernel queues
  connections until a worker accepts them.  While a slot's worker is dead (waiting
  for its restart, maybe with backoff), another worker accepts on its sockets too
  (`_cover`; every worker holds every socket for that), so its share of new
  connections does not wait.
- Workers are fresh interpreters started with subprocess, never forks of this running
  event loop; each gets the validated config model and its descriptors over a control
  socket pair (protocol in server/worker.py).
- A worker that dies is restarted, with a log line naming its exit code or signal;
  one that keeps dying within STABLE_AFTER seconds of starting is restarted after
  1, 2, 4 ... up to BACKOFF_MAX seconds, not in a tight loop.
- Reload (SIGHUP; `porch reload` sends it, see server/control.py): read and validate
  the config file; open the listening sockets it adds; start a full set of new
  workers and wait until each accepts; only then tell the old ones to drain
  (stop accepting, finish in-flight requests, close idle connections, up to
  `drain_timeout`, see Server.shutdown) and close the sockets no longer named.  Any
  failure (bad config, a port that cannot be bound, a worker that cannot start)
  leaves the old workers serving the old config; the outcome is logged and written
  to `reload.json` for `porch reload`.
- SIGTERM / SIGINT: close the listening sockets, tell every worker to drain for
  `shutdown_timeout`, exit 0 when they are gone.  SIGQUIT, or a second SIGTERM /
  SIGINT: workers get SIGQUIT (they exit at once), exit 1.
- SIGUSR1: reopen the log files, here and in every worker (logrotate's postrotate,
  as nginx's `reopen`).

Supervisor-only services (ACME, health probes) plug in through server/services.py:
objects with async start/reload/stop, run in this loop.  The admin API
(server/admin/, `[porch] admin`) runs in this loop too, on its own listener that no
worker holds: it reloads through `reload(config)`, and adds up the workers' numbers
(`gather()`, over the control channels) for /metrics and the dashboard.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from porch.config.listeners import of as listeners_of
from porch.config.errors import ConfigError, invalid_config_message
from porch.config.model import Config
from porch.config.load import load  # porch.toml or an nginx file, from its content
from porch.config.workers import worker_count
from porch.limits.table import SharedTable
from porch.observability.errorlog import ErrorLog, Recent
from porch.server import control
from porch.server.listener import bind_sockets
from porch.server.services import STOP_TIMEOUT, Service, supervisor_services
from porch.server.worker import Inherited, WorkerSpec, spawn
from porch.storage import FileStorage, StorageError

READY_TIMEOUT = 30.0  # a new worker must accept connections within this (import + compile: ~0.3 s)
STABLE_AFTER = 10.0  # a worker that ran this long before dying is restarted at once
BACKOFF_MAX = 30.0
KILL_MARGIN = 5.0  # SIGKILL a draining worker this long after its drain timeout
DRAIN_ACK_TIMEOUT = 5.0  # a reload waits this long for old workers to stop accepting
GATHER_TIMEOUT = 1.0  # a scrape waits this long for each worker's numbers


class StartError(Exception):
    """Porch cannot start; the message says why (the CLI prints it)."""


class ReloadError(Exception):
    """A reload failed; the old config is still served.  The message says why."""


class ListenError(Exception):
    """A listening socket could not be opened; the message names the address."""


def exit_cause(returncode: int) -> str:
    """'exit code 3' or 'killed by SIGKILL', as a log line says it."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def listen_addresses(config: Config) -> list[tuple[str, int]]:
    """The (address, port) pairs of `config`'s listeners (config/listeners.py):
    http_port on each bind address, and https_port too when a site has TLS."""
    return [(listener.address, listener.port) for listener in listeners_of(config)]


def _urls(config: Config, wanted: Sequence[tuple[str, int]]) -> str:
    kinds = {(l.address, l.port): l.kind for l in listeners_of(config)}
    return ", ".join(f"{'https' if kinds.get((a, port)) == 'tls' else 'http'}://{_where(a, port)}"
                     for a, port in wanted)


def _where(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


class Listeners:
    """The listening sockets by (address, port): opened once, kept while named.

    With SO_REUSEPORT (Linux), each address has one socket per worker slot and the
    kernel spreads new connections over them, so workers share the load evenly.  With
    one socket shared by all, the worker that wakes first accepts a whole burst: wrk's
    50 connections went 50+0 or 49+1 to two workers (bench/workers.py).  Socket j is
    served by worker j % workers.  A group never shrinks while its address is named
    (fewer workers after a reload serve several sockets each), so no socket is closed
    with connections waiting in its queue, and a reload hands each socket from an old
    worker to a new one with no gap.  Sockets added to a group are only bound here: the
    worker listens, so a failed reload closes them before any connection could queue.
    """

    def __init__(self) -> None:
        self.groups: dict[tuple[str, int], list[socket.socket]] = {}
        self.reuse_port = hasattr(socket, "SO_REUSEPORT")

    def add(self, wanted: Sequence[tuple[str, int]], workers: int) -> list[socket.socket]:
        """Open what `wanted` and `workers` need that is not open yet; return the new
        sockets.  On failure close them and raise ListenError naming the address."""
        opened: list[socket.socket] = []
        for key in wanted:
            group = self.groups.setdefault(key, [])
            try:
                if not group and self.reuse_port:
                    _probe(key)
                while len(group) < (workers if self.reuse_port else 1):
                    (sock,) = bind_sockets((key[0],), key[1], reuse_port=self.reuse_port,
                                           listen=not self.reuse_port)
                    group.append(sock)
                    opened.append(sock)
            except OSError as err:
                self.discard(opened)
                raise ListenError(f"cannot listen on {_where(*key)}: {err.strerror}") from None
        return opened

    def for_worker(self, wanted: Sequence[tuple[str, int]], slot: int, workers: int) -> tuple[Inherited, ...]:
        """All of `wanted`'s sockets, marked `own` for those worker `slot` of `workers`
        serves: it holds the others to adopt them while their worker is dead."""
        return tuple(Inherited(sock.fileno(), *key, own=j % workers == slot or len(self.groups[key]) == 1)
                     for key in wanted for j, sock in enumerate(self.groups[key]))

    def discard(self, sockets: Sequence[socket.socket]) -> None:
        """Close `sockets` (opened by a failed start or reload); forget empty groups."""
        groups = {key: [s for s in group if s not in sockets] for key, group in self.groups.items()}
        self.groups = {key: group for key, group in groups.items() if group}
        for sock in sockets:
            sock.close()

    def keep_only(self, wanted: Sequence[tuple[str, int]]) -> None:
        for key in [key for key in self.groups if key not in wanted]:
            for sock in self.groups.pop(key):
                sock.close()

    def close_all(self) -> None:
        self.keep_only(())


def _probe(key: tuple[str, int]) -> None:
    """Raise OSError if something else has bound `key`: with SO_REUSEPORT, our sockets
    would silently join another program's group (same user) instead of failing."""
    (sock,) = bind_sockets((key[0],), key[1], listen=False)
    sock.close()


class WorkerProcess:
    """One running worker, as the supervisor sees it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, spec: WorkerSpec, on_exit) -> None:
        self.loop = loop
        self.slot = spec.slot
        self.generation = spec.generation
        self.proc, self.ctl = spawn(spec)
        self.pid = self.proc.pid
        self.started = loop.time()
        self.ready: asyncio.Future[str | None] = loop.create_future()  # None, or why not
        self.exited: asyncio.Future[int] = loop.create_future()
        self.draining: asyncio.Future[None] = loop.create_future()  # after stop(): not accepting
        self.retiring = False  # told to stop: its exit is expected
        self.error = ""  # why it could not start, as it said
        self.snapshot: dict | None = None  # its latest numbers (server/snapshot.py)
        self._asked: list[asyncio.Future[None]] = []  # scrapes waiting for them
        self._buf = b""
        self._on_exit = on_exit
        loop.add_reader(self.ctl.fileno(), self._readable)
        self._pidfd = -1
        try:
            # Readable when the process exits: no SIGCHLD handler to share with uvloop.
            self._pidfd = os.pidfd_open(self.pid)
            loop.add_reader(self._pidfd, self._reap)
        except (AttributeError, OSError):  # Linux < 5.3: poll
            self._poller = loop.create_task(self._poll())

    @property
    def name(self) -> str:
        return f"worker {self.slot + 1} (pid {self.pid})"

    def stop(self, timeout: float, reason: str) -> None:
        """Drain for up to `timeout` seconds, then exit."""
        self.retiring = True
        self._send(f"stop {timeout:g} {reason}")

    def adopt(self, fds: Sequence[int], adopt: bool = True) -> None:
        """Accept on a dead worker's sockets too (or stop: `adopt` False)."""
        for fd in fds:
            self._send(f"{'adopt' if adopt else 'release'} {fd}")

    @property
    def serving(self) -> bool:
        return self.ready.done() and self.ready.result() is None and not self.exited.done() and not self.retiring

    def quit(self) -> None:
        self.retiring = True
        self._signal(signal.SIGQUIT)

    def kill(self) -> None:
        self.retiring = True
        self._signal(signal.SIGKILL)

    def send_signal(self, sig: int) -> None:
        self._signal(sig)

    def _signal(self, sig: int) -> None:
        if not self.exited.done():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def ask_metrics(self, since: int) -> asyncio.Future[None]:
        """Ask for its numbers; the future is done when they are in `snapshot`."""
        waiter = self.loop.create_future()
        self._asked.append(waiter)
        self._send(f"metrics {since}")
        return waiter

    def _send(self, line: str) -> None:
        try:
            self.ctl.send(line.encode() + b"\n")
        except OSError:  # gone, or (never seen) its buffer full: SIGTERM says "drain" too
            self._signal(signal.SIGTERM)

    def _readable(self) -> None:
        try:
            data = self.ctl.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.loop.remove_reader(self.ctl.fileno())
            return
        self._buf += data
        self._lines()

    def _lines(self) -> None:
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            if line.startswith(b"metrics "):
                self._metrics(line[8:])
                continue
            text = line.decode("utf-8", "replace")
            if text == "draining":
                if not self.draining.done():
                    self.draining.set_result(None)
                continue
            if self.ready.done():
                continue
            if text == "ready":
                self.ready.set_result(None)
            elif text.startswith("error "):
                try:
                    self.error = str(json.loads(text[6:]))
                except ValueError:
                    self.error = text[6:]
                self.ready.set_result(self.error)

    def _metrics(self, data: bytes) -> None:
        try:
            snapshot = json.loads(data)
        except ValueError:
            return
        if isinstance(snapshot, dict):
            self.snapshot = snapshot
        for waiter in self._asked:
            if not waiter.done():
                waiter.set_result(None)
        self._asked.clear()

    def _drain_ctl(self) -> None:
        """Read what the worker wrote before it exited (its final numbers)."""
        while True:
            try:
                data = self.ctl.recv(65536)
            except OSError:
                break
            if not data:
                break
            self._buf += data
        self._lines()

    async def _poll(self) -> None:
        while self.proc.poll() is None:
            await asyncio.sleep(0.2)
        self._reap()

    def _reap(self) -> None:
        code = self.proc.poll()
        if code is None or self.exited.done():
            return
        if self._pidfd >= 0:
            self.loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        if self.ctl.fileno() >= 0:
            self.loop.remove_reader(self.ctl.fileno())
            self._drain_ctl()
            self.ctl.close()
        for waiter in self._asked:
            if not waiter.done():
                waiter.set_result(None)
        if not self.ready.done():
            self.ready.set_result(f"it exited ({exit_cause(code)}) before accepting connections")
        if not self.draining.done():
            self.draining.set_result(None)
        self.exited.set_result(code)
        self._on_exit(self)


class Supervisor:
    def __init__(self, path: str, config: Config, services: Sequence[Service] | None = None,
                 ticket_check=None) -> None:
        self.path = os.path.abspath(path)
        self.config = config
        self.services = list(services) if services is not None else supervisor_services(config)
        self.state_dir = str(Path(config.porch.state_dir).resolve())
        self.storage = FileStorage(self.state_dir)
        self.log = ErrorLog(config.porch.error_log)
        self.listeners = Listeners()
        self.workers: list[WorkerProcess | None] = []  # the serving generation, by slot
        self.retiring: set[WorkerProcess] = set()  # replaced or stopping, draining
        self.generation = 0
        self.failures: dict[int, int] = {}  # slot -> deaths in a row within STABLE_AFTER
        self.restarts: dict[int, asyncio.TimerHandle] = {}  # slot -> pending restart
        self.covers: dict[int, WorkerProcess] = {}  # slot of a dead worker -> who accepts for it
        self.stopping = False
        self._stop: asyncio.Future[str] | None = None  # "drain" or "now"
        self._reloading: asyncio.Task | None = None
        self._reload_again = False
        self._reload_lock = asyncio.Lock()  # SIGHUP's reload and the admin API's POST /load
        self.started = False  # the first workers accept connections
        # Rate-limit and connection counters every worker maps (limits/table.py): made
        # once, kept across reloads, so a reload forgets no client's count.
        self.counters = SharedTable.create()
        # TLS session tickets: one secret for every worker, kept across reloads, so a
        # ticket from one worker resumes on another (tls/tickets.py).  In memory only.
        self._ticket_secret: bytes | None = None
        self._tickets_checked = False
        self._ticket_check = ticket_check  # () -> None or why not; None: tls/tickets.py's check
        # For the admin API (server/admin/): the counts of workers gone (added up when
        # they exit), reload outcomes, and recent warn/error lines from every process.
        from porch.server.admin.collect import Counts

        self.retired = Counts()
        self.reloads = {"ok": 0, "failed": 0}
        self.log.recent = Recent()
        self.recent: deque[tuple[float, str, str, int]] = deque(maxlen=100)  # (time, level, line, pid)
        self._seen: dict[int, int] = {}  # pid -> the last error line's number taken from it
        self.admin = None  # server/admin/api.py AdminServer, when [porch] admin is set

    # -- life cycle --------------------------------------------------------------

    async def run(self) -> int:
        """Serve until stopped; return the exit code.  Raise StartError if Porch
        cannot start (nothing is left running then)."""
        self.loop = asyncio.get_running_loop()
        self._stop = self.loop.create_future()
        try:
            with self.storage.lock(control.LOCK, timeout=0):
                return await self._run()
        except StorageError as err:
            other = self.storage.get(control.PID_FILE) if "held" in str(err) else None
            if other:
                pid = other.split(b"\n", 1)[0].decode(errors="replace")
                raise StartError(f"another porch (pid {pid}) runs with state_dir {self.state_dir}; "
                                 "stop it first, or give this config its own state_dir") from None
            raise StartError(f"state_dir {self.state_dir}: {err}") from None

    async def _run(self) -> int:
        control.write_pid(self.storage, self.path)
        try:
            return await self._serve()
        finally:
            self.listeners.close_all()
            try:
                self.storage.delete(control.PID_FILE)
            except StorageError:
                pass
            self.log.close()

    async def _serve(self) -> int:
        config = self.config
        wanted = listen_addresses(config)
        # Signals first: a worker may serve before the supervisor hears it is ready,
        # and a SIGTERM then must drain, not kill the supervisor.
        loop = self.loop
        loop.add_signal_handler(signal.SIGTERM, self._on_stop_signal, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self._on_stop_signal, "SIGINT")
        loop.add_signal_handler(signal.SIGQUIT, self._request_stop, "now")
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        loop.add_signal_handler(signal.SIGUSR1, self._reopen_logs)
        try:
            self.listeners.add(wanted, worker_count(config.porch.workers))
            self.workers = list(await self._start_generation(config, wanted))
        except (ListenError, ReloadError) as err:
            self._hurry()
            self.log.error(f"cannot start: {err}".replace("\n", "; "))
            raise StartError(str(err)) from None
        self.started = True
        control.notify("READY=1")  # systemd Type=notify: serving now
        if self._reload_again:  # SIGHUP while starting
            self.request_reload()
        self.log.info(f"porch serving {len(config.sites)} site(s) on {_urls(config, wanted)}", pid=os.getpid(),
                      workers=" ".join(str(w.pid) for w in self.workers if w))
        for service in self.services:
            await self._call(service, "start", config, self.storage, self.log)
        await self._admin(config)
        how = await self._stop
        return await self._shutdown(how)

    def _reopen_logs(self) -> None:
        """SIGUSR1, as nginx's: logrotate moved the logs; every process opens them again."""
        self.log.reopen_file()
        for w in self._all_workers():
            w.send_signal(signal.SIGUSR1)
        self.log.info("log files reopened")

    def _on_stop_signal(self, name: str) -> None:
        if self._stop is not None and self._stop.done():
            self._request_stop("now")  # the second one: at once
        else:
            self.log.info(f"{name}: stopping")
            self._request_stop("drain")

    def _request_stop(self, how: str) -> None:
        if self._stop is not None and not self._stop.done():
            self._stop.set_result(how)
        elif how == "now":
            self._hurry()

    async def _shutdown(self, how: str) -> int:
        self.stopping = True
        for handle in self.restarts.values():
            handle.cancel()
        self.listeners.close_all()  # stop accepting now; workers close their copies too
        if self._reloading is not None:
            self._reloading.cancel()
        timeout = self.config.porch.shutdown_timeout
        if how == "now":
            self._hurry()
        else:
            self.log.info("stopping: finishing in-flight requests", timeout=f"{timeout:g}s")
            for w in self._all_workers():
                w.stop(timeout, "shutdown")
        for service in self.services:
            await self._call(service, "stop", timeout=STOP_TIMEOUT)
        if self.admin is not None:
            await self.admin.stop()
        exits = [w.exited for w in self._all_workers()]
        if exits:
            _, pending = await asyncio.wait(exits, timeout=timeout + KILL_MARGIN)
            if pending:
                for w in self._all_workers():
                    if not w.exited.done():
                        self.log.error(f"{w.name} still running {timeout + KILL_MARGIN:g}s after "
                                       "it was told to stop: killing it")
                        w.kill()
                await asyncio.wait(pending, timeout=5)
        hurried = self._stop is not None and self._stop.result() == "now" or self._hurried
        self.log.info("stopped" if not hurried else "stopped at once, without draining")
        return 1 if hurried else 0

    _hurried = False

    def _hurry(self) -> None:
        """Stop at once: every worker gets SIGQUIT; SIGKILL for any still there in 2 s."""
        self._hurried = True
        self.stopping = True
        self.listeners.close_all()
        for w in self._all_workers():
            w.quit()
        self.loop.call_later(2.0, self._kill_all)

    def _kill_all(self) -> None:
        for w in self._all_workers():
            if not w.exited.done():
                w.kill()

    def _all_workers(self) -> list[WorkerProcess]:
        return [w for w in (*self.workers, *self.retiring) if w is not None]

    # -- workers -----------------------------------------------------------------

    async def _start_generation(self, config: Config, wanted: Sequence[tuple[str, int]]) -> list[WorkerProcess]:
        """Start `workers` new workers on `config`; return them once each accepts
        connections.  Raise ReloadError (and stop the ones started) if any cannot."""
        self.generation += 1
        workers = worker_count(config.porch.workers)
        secret = self.ticket_secret(config)
        started: list[WorkerProcess] = []
        try:
            for slot in range(workers):
                spec = WorkerSpec(config=config, sockets=self.listeners.for_worker(wanted, slot, workers),
                                  slot=slot, generation=self.generation, counters_fd=self.counters.fd,
                                  ticket_secret=secret)
                started.append(WorkerProcess(self.loop, spec, self._worker_exited))
        except OSError as err:
            self._abandon(started)
            raise ReloadError(f"cannot start a worker process: {err}") from None
        done, pending = await asyncio.wait([w.ready for w in started], timeout=READY_TIMEOUT)
        problems = [f"{w.name}: {w.ready.result()}" for w in started
                    if w.ready.done() and w.ready.result() is not None]
        problems += [f"{w.name} did not accept connections within {READY_TIMEOUT:g}s"
                     for w in started if not w.ready.done()]
        if problems:
            self._abandon(started)
            raise ReloadError("; ".join(problems))
        return started

    def ticket_secret(self, config: Config) -> bytes | None:
        """The secret the workers share (made at the first config with an HTTPS site),
        or None when this Python's ssl cannot take a ticket key: one warning then, and
        each worker keeps its own keys (resumption on the worker that issued the ticket)."""
        if self._tickets_checked or not any(site.tls != "off" for site in config.sites):
            return self._ticket_secret
        from porch.tls import tickets

        self._tickets_checked = True
        problem = (self._ticket_check or tickets.problem)()
        if problem is None:
            self._ticket_secret = tickets.new_secret()
        else:
            self.log.warn(f"TLS session tickets: each worker keeps its own key, so a client resumes "
                          f"only on the worker that gave it its ticket ({problem})")
        return self._ticket_secret

    def _abandon(self, workers: list[WorkerProcess]) -> None:
        for w in workers:
            w.kill()

    def _worker_exited(self, w: WorkerProcess) -> None:
        code = w.exited.result()
        if w.snapshot is not None:  # its counts stay in /metrics
            self.retired.add(w.snapshot)
            self._take_errors(w.snapshot)
            w.snapshot = None
        if w in self.retiring:
            self.retiring.discard(w)
            if code != 0 and not self.stopping:
                self.log.warn(f"old {w.name} exited ({exit_cause(code)}) while draining")
            return
        if self.stopping or w.retiring or w.slot >= len(self.workers) or self.workers[w.slot] is not w:
            return  # told to stop, or a new worker abandoned by a failed start
        self.workers[w.slot] = None
        quick = self.loop.time() - w.started < STABLE_AFTER
        failures = self.failures.get(w.slot, 0) + 1 if quick else 1
        self.failures[w.slot] = failures
        delay = 0.0 if failures == 1 else min(BACKOFF_MAX, 2.0 ** (failures - 2))
        when = f"restarting in {delay:g}s ({failures} exits in a row within {STABLE_AFTER:g}s of starting)" \
            if delay else "restarting it"
        why = f": {w.error}".replace("\n", "; ") if w.error else ""
        self.log.error(f"{w.name} exited unexpectedly ({exit_cause(code)}{why}); {when}")
        self.restarts[w.slot] = self.loop.call_later(delay, self._restart, w.slot)
        self._cover()

    def _cover(self) -> None:
        """Have a serving worker accept on the sockets of each slot whose worker is
        dead or not ready yet: with a socket per worker, the kernel keeps sending that
        slot its share of new connections, and they must not wait for the restart."""
        serving = [w for w in self.workers if w is not None and w.serving]
        for slot, w in enumerate(self.workers):
            if (w is not None and w.serving) or not serving:
                continue
            adopter = self.covers.get(slot)
            if adopter is not None and adopter.serving:
                continue
            adopter = serving[slot % len(serving)]
            self.covers[slot] = adopter
            adopter.adopt(self._own_fds(slot))

    def _own_fds(self, slot: int) -> list[int]:
        wanted = listen_addresses(self.config)
        return [s.fd for s in self.listeners.for_worker(wanted, slot, len(self.workers)) if s.own]

    def _uncover(self, slot: int) -> None:
        adopter = self.covers.pop(slot, None)
        if adopter is not None and adopter.serving:
            adopter.adopt(self._own_fds(slot), adopt=False)

    def _restart(self, slot: int) -> None:
        self.restarts.pop(slot, None)
        if self.stopping or slot >= len(self.workers) or self.workers[slot] is not None:
            return
        sockets = self.listeners.for_worker(listen_addresses(self.config), slot, len(self.workers))
        spec = WorkerSpec(config=self.config, sockets=sockets, slot=slot, generation=self.generation,
                          counters_fd=self.counters.fd, ticket_secret=self.ticket_secret(self.config))
        try:
            w = self.workers[slot] = WorkerProcess(self.loop, spec, self._worker_exited)
            w.ready.add_done_callback(lambda f, slot=slot, w=w: self._restarted(slot, w))
        except OSError as err:
            failures = self.failures[slot] = self.failures.get(slot, 0) + 1
            delay = min(BACKOFF_MAX, 2.0 ** max(0, failures - 2))
            self.log.error(f"cannot start worker {slot + 1}: {err}; trying again in {delay:g}s")
            self.restarts[slot] = self.loop.call_later(delay, self._restart, slot)

    def _restarted(self, slot: int, w: WorkerProcess) -> None:
        if w.serving and self.workers[slot] is w:
            self._uncover(slot)
        # a worker serving again may cover others; one that died covers none
        self._cover()

    # -- reload ------------------------------------------------------------------

    def request_reload(self) -> None:
        """SIGHUP: reload now, or right after the reload in progress."""
        if self.stopping:
            try:  # `porch reload` is waiting for an answer
                control.write_result(self.storage, time.monotonic(), False, "porch is stopping")
            except StorageError:
                pass
            return
        if self._reloading is not None or not self.started:
            self._reload_again = True
            return
        self._reloading = self.loop.create_task(self._reload_loop())

    async def _reload_loop(self) -> None:
        try:
            while True:
                self._reload_again = False
                await self.reload()
                if not self._reload_again or self.stopping:
                    break
        finally:
            self._reloading = None

    async def reload(self, config: Config | None = None) -> tuple[bool, str]:
        """Reload the config file, or serve `config` (the admin API's POST /load, checked
        already); (ok, message).  The outcome is also logged and written for `porch
        reload` (server/control.py)."""
        started = time.monotonic()
        async with self._reload_lock:
            try:
                ok, message = True, await self._reload(config)
                self.log.info(message)
            except ReloadError as err:
                ok, message = False, str(err)
                # The error log is one line per event: the problems joined.
                self.log.error("reload failed, still serving the previous config: " + message.replace("\n", "; "))
        self.reloads["ok" if ok else "failed"] += 1
        try:
            control.write_result(self.storage, started, ok, message)
        except StorageError as err:
            self.log.error(f"cannot write the reload outcome: {err}")
        return ok, message

    def check_reloadable(self, config: Config) -> None:
        """ReloadError if `config` cannot replace the running one whatever happens."""
        if str(Path(config.porch.state_dir).resolve()) != self.state_dir:
            raise ReloadError(f"porch.state_dir: changed from {self.state_dir} to {config.porch.state_dir}; "
                              "a running porch keeps its state_dir: restart porch to move it")

    async def _reload(self, config: Config | None = None) -> str:
        source = self.path
        if config is None:
            try:
                config = load(self.path)
            except ConfigError as err:
                raise ReloadError(invalid_config_message(self.path, err, located=False)) from None
        else:
            source = "the config from the admin API"
        self.check_reloadable(config)
        wanted = listen_addresses(config)
        try:
            opened = self.listeners.add(wanted, worker_count(config.porch.workers))
        except ListenError as err:
            raise ReloadError(str(err)) from None
        try:
            new = await self._start_generation(config, wanted)
        except ReloadError:
            self.listeners.discard(opened)
            raise
        if self.stopping:  # a stop arrived while the new workers started
            for w in new:
                w.stop(0, "shutdown")
                self.retiring.add(w)
            raise ReloadError("porch is stopping")
        old = [w for w in self.workers if w is not None]
        for handle in self.restarts.values():
            handle.cancel()
        self.restarts.clear()
        self.failures.clear()
        self.covers.clear()
        self.workers = list(new)
        previous, self.config = self.config, config
        drain = config.porch.drain_timeout
        for w in old:
            self.retiring.add(w)
            w.stop(drain, "reload")
        self.loop.call_later(drain + KILL_MARGIN, self._kill_stragglers, old)
        self.listeners.keep_only(wanted)
        # Done when only the new workers accept: a connection made after `porch reload`
        # returns gets the new config.
        if old:
            await asyncio.wait([w.draining for w in old], timeout=DRAIN_ACK_TIMEOUT)
        if config.porch.error_log != previous.porch.error_log:
            self.log.reopen(config.porch.error_log)
        for service in self.services:
            await self._call(service, "reload", config)
        await self._admin(config)
        return (f"reloaded {source}: {len(new)} new worker(s) serving {len(config.sites)} site(s); "
                f"{len(old)} old one(s) finishing their requests for up to {drain:g}s")

    def _kill_stragglers(self, workers: list[WorkerProcess]) -> None:
        for w in workers:
            if not w.exited.done():
                self.log.error(f"old {w.name} still draining after drain_timeout: killing it")
                w.kill()

    # -- the admin API -----------------------------------------------------------

    async def _admin(self, config: Config) -> None:
        """Start, move or stop the admin listener as `config` says (server/admin/api.py)."""
        from porch.server.admin.api import AdminServer

        g = config.porch
        wanted = (g.admin, g.admin_token, g.admin_token_file) if g.admin else None
        if self.admin is not None and self.admin.settings == wanted:
            return
        if self.admin is not None:
            await self.admin.stop()
            self.admin = None
        if wanted is not None:
            admin = AdminServer(self, wanted)
            try:
                await admin.start()
            except (OSError, ValueError) as err:
                self.log.error(f"admin API: cannot listen on {g.admin}: {getattr(err, 'strerror', None) or err}")
                return
            self.admin = admin
            self.log.info(f"admin API on {g.admin}")

    async def gather(self) -> list[dict]:
        """Every live worker's numbers, asked now (up to GATHER_TIMEOUT; a worker that
        does not answer in time counts with its previous snapshot)."""
        live = [w for w in self._all_workers() if w.ready.done() and w.ready.result() is None
                and not w.exited.done()]
        waiters = [w.ask_metrics(self._seen.get(w.pid, 0)) for w in live]
        if waiters:
            await asyncio.wait(waiters, timeout=GATHER_TIMEOUT)
        snapshots = [w.snapshot for w in live if w.snapshot is not None]
        for snap in snapshots:
            self._take_errors(snap)
        own = self.log.recent
        if own is not None:
            self._take_errors({"pid": os.getpid(), "errors": own.since(self._seen.get(os.getpid(), 0))})
        return snapshots

    def snapshots(self) -> list[dict]:
        """The workers' latest numbers, as last gathered (nothing asked)."""
        return [w.snapshot for w in self._all_workers() if w.snapshot is not None]

    def _take_errors(self, snap: dict) -> None:
        pid = snap.get("pid", 0)
        seen = self._seen.get(pid, 0)
        for seq, stamp, level, line in snap.get("errors", ()):
            if seq > seen:
                self.recent.append((stamp, level, line, pid))
                seen = seq
        self._seen[pid] = seen

    # -- services ----------------------------------------------------------------

    async def _call(self, service: Service, method: str, *args, timeout: float | None = None) -> None:
        try:
            await asyncio.wait_for(getattr(service, method)(*args), timeout)
        except Exception as err:  # a service's failure must not stop the serving
            self.log.error(f"{type(service).__name__}.{method} failed: {err!r}")

