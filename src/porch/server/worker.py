"""A worker process: serves client traffic on listening sockets inherited from the supervisor.

A worker is a fresh interpreter, started by the supervisor (server/supervisor.py) as

    python -m porch.server.worker CTL_FD

with the listening sockets and one end of a control socket pair passed as open
descriptors (subprocess `pass_fds`): never a fork of the supervisor's running loop.

The control channel (a SOCK_STREAM socket pair, one per worker):

- supervisor -> worker, first: the `WorkerSpec` (validated config model and which
  inherited descriptor is which address), as an 8-byte big-endian length and a pickle;
- worker -> supervisor: `ready\\n` once it accepts connections, or `error JSON\\n` when
  it cannot start (a JSON string that says why, maybe on several lines; it then exits 1);
- supervisor -> worker, later: `stop SECONDS REASON\\n` drains (stop accepting, finish
  in-flight requests up to SECONDS, see Server.shutdown) then exits 0; `quit\\n` exits
  at once (1).  End of file (the supervisor is gone) is a stop with shutdown_timeout;
- worker -> supervisor: `draining\\n` once it has closed its listening sockets after a
  stop: from then on only the other workers accept (a reload is complete only then);
- supervisor -> worker: `adopt FD\\n` starts accepting on inherited socket FD too (its
  own worker is dead and waits for a restart), `release FD\\n` stops (it is back);
- supervisor -> worker: `metrics SEQ\\n` asks for its numbers; worker -> supervisor:
  `metrics JSON\\n` (server/snapshot.py: counters, gauges, error lines after SEQ),
  also sent once, unasked, when a stop has drained it, so the supervisor keeps its
  final counts (the admin API's /metrics adds up all workers, past ones too).

Signals sent to the worker itself: SIGTERM drains for shutdown_timeout (a service
manager may signal the whole process group), SIGQUIT quits at once, SIGUSR1 reopens
the log files (the supervisor passes its own on); SIGINT and SIGHUP are ignored: a terminal's Ctrl-C reaches the whole foreground group, and the
supervisor decides what it means.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from porch.config.listeners import kind_at
from porch.config.errors import ConfigError
from porch.config.model import Config
from porch.observability.errorlog import capture_logging

if TYPE_CHECKING:
    from porch.server.listener import Server

_LENGTH = struct.Struct("!Q")


@dataclass(frozen=True)
class Inherited:
    """A listening socket as the worker receives it: descriptor number and address.
    `own`: this worker accepts on it from the start; the others it holds to adopt them
    when the supervisor asks (their worker is dead)."""

    fd: int
    address: str
    port: int
    own: bool = True


@dataclass(frozen=True)
class WorkerSpec:
    config: Config
    sockets: tuple[Inherited, ...]
    slot: int  # 0 .. workers-1, for log lines
    generation: int  # 1 at start, +1 per reload
    # the machine's shared counter table (limits/table.py), a memfd made by the
    # supervisor once and passed to every worker, reloads included; -1: none
    counters_fd: int = -1
    # the supervisor's TLS session-ticket secret (tls/tickets.py), the same for every
    # worker and every reload; None: each worker keeps OpenSSL's own keys.  Out of
    # repr: never in a log line or a traceback.
    ticket_secret: bytes | None = field(default=None, repr=False)


def spawn(spec: WorkerSpec) -> tuple[subprocess.Popen, socket.socket]:
    """Start a worker for `spec`; return the process and the supervisor's end of its
    control channel (non-blocking, the spec already sent)."""
    ours, theirs = socket.socketpair()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "porch.server.worker", str(theirs.fileno())],
            pass_fds=(theirs.fileno(), *(s.fd for s in spec.sockets),
                      *((spec.counters_fd,) if spec.counters_fd >= 0 else ())),
            stdin=subprocess.DEVNULL,
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    blob = pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL)
    # Blocking send: a config pickles to a few kilobytes, well under the socket
    # buffer, so this returns at once even before the child reads.
    ours.sendall(_LENGTH.pack(len(blob)) + blob)
    ours.setblocking(False)
    return proc, ours


def _read_spec(ctl: socket.socket) -> WorkerSpec:
    head = _recv_exactly(ctl, _LENGTH.size)
    return pickle.loads(_recv_exactly(ctl, _LENGTH.unpack(head)[0]))


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("the supervisor closed the control channel before sending the spec")
        buf += chunk
    return bytes(buf)


class _Control:
    """The worker's end of the control channel, read by the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, shutdown_timeout: float) -> None:
        self.loop = loop
        self.sock = sock
        self.buf = b""
        self.stop: asyncio.Future[tuple[float, str]] = loop.create_future()
        self.quit: asyncio.Future[None] = loop.create_future()
        self.shutdown_timeout = shutdown_timeout
        self.on_adopt = None  # (adopt: bool, fd) -> None, set once serving
        self.on_metrics = None  # (seq) -> dict, set once serving
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._readable)

    def send(self, line: str) -> None:
        try:
            self.sock.send(line.encode("utf-8", "backslashreplace") + b"\n")
        except OSError:
            pass  # the supervisor is gone; EOF on the read side says so too

    def send_error(self, text: str) -> None:
        self.send("error " + json.dumps(text))

    def request_stop(self, timeout: float, reason: str) -> None:
        if not self.stop.done():
            self.stop.set_result((timeout, reason))

    def request_quit(self) -> None:
        if not self.quit.done():
            self.quit.set_result(None)

    def _readable(self) -> None:
        try:
            data = self.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.loop.remove_reader(self.sock.fileno())
            self.request_stop(self.shutdown_timeout, "supervisor gone")
            return
        self.buf += data
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            words = line.decode("utf-8", "replace").split()
            if words[:1] == ["stop"] and len(words) >= 2:
                self.request_stop(float(words[1]), " ".join(words[2:]) or "stop")
            elif words[:1] == ["quit"]:
                self.request_quit()
            elif words[:1] in (["adopt"], ["release"]) and len(words) == 2 and words[1].isdigit():
                if self.on_adopt is not None:
                    self.on_adopt(words[0] == "adopt", int(words[1]))
            elif words[:1] == ["metrics"] and len(words) == 2 and words[1].isdigit():
                if self.on_metrics is not None:
                    self.send_metrics(int(words[1]))

    def send_metrics(self, since: int) -> None:
        """Send the snapshot whole: tens of kilobytes may not fit the socket buffer at
        once, and a line cut in two would be lost; the supervisor reads it at once."""
        line = b"metrics " + json.dumps(self.on_metrics(since), separators=(",", ":")).encode() + b"\n"
        try:
            self.sock.settimeout(2.0)
            self.sock.sendall(line)
        except OSError:
            pass  # the supervisor is gone or stuck: it goes without these numbers
        finally:
            self.sock.setblocking(False)


async def serve(spec: WorkerSpec, ctl_sock: socket.socket) -> int:
    """Serve until told to stop; return the exit code."""
    from porch.config.compile import compile_config
    from porch.limits.table import SharedTable
    from porch.server.limits import connection_limits
    from porch.server.listener import Server
    from porch.server.mux import mux_settings
    from porch.server.snapshot import snapshot

    loop = asyncio.get_running_loop()
    g = spec.config.porch
    ctl = _Control(loop, ctl_sock, g.shutdown_timeout)
    counters = SharedTable.attach(spec.counters_fd) if spec.counters_fd >= 0 else None
    try:
        runtime = compile_config(spec.config, counters=counters, ticket_secret=spec.ticket_secret)
    except ConfigError as err:  # certificate files that do not load (tls/service.py)
        ctl.send_error(str(err))
        return 1
    except OSError as err:  # a log file that cannot be opened, typically
        where = f" {err.filename}" if err.filename else ""
        ctl.send_error(f"cannot open{where}: {err.strerror or err}")
        return 1
    except Exception as err:  # the config was validated: this is a bug, but say it
        ctl.send_error(f"cannot compile the config: {err!r}")
        return 1
    # asyncio's and uvloop's own reports (an exception in a callback) go to the
    # error log too: nothing leaves a worker as a bare traceback on stderr.
    capture_logging(runtime.error_log)
    plain, tls = [], []
    for s in spec.sockets:
        if s.own:  # TLS or not: its listener's kind in the model
            https = kind_at(spec.config, s.address, s.port) == "tls"
            (tls if https else plain).append(socket.socket(fileno=s.fd))
    server = Server(loop, runtime)
    server.mux_plain, server.mux_tls = mux_settings(spec.config)  # port sharing, PROXY headers
    server.limits = connection_limits(spec.config, counters, runtime.error_log)
    if server.limits is not None:  # counted at accept, before any TLS: the Mux does it
        server.mux_plain, server.mux_tls = server.limits.mux_settings(server.mux_plain, server.mux_tls)
    await server.listen(plain, tls)
    adopter = _Adopter(loop, server, spec, runtime.tls is not None)
    ctl.on_adopt = adopter.request
    ctl.on_metrics = lambda since: snapshot(server, since)
    loop.add_signal_handler(signal.SIGTERM, ctl.request_stop, g.shutdown_timeout, "SIGTERM")
    loop.add_signal_handler(signal.SIGQUIT, ctl.request_quit)
    loop.add_signal_handler(signal.SIGUSR1, _reopen_logs, server)
    # Requests free their objects by reference counting; the cyclic collector only
    # has to find the rare cycle (connections break theirs when they end: issue 11;
    # the h2 library's connection objects are cycles of their own, small ones).
    # Collecting young objects every 700 allocations
    # cost 5% of the time per request (bench/); every 20,000 is plenty, and the
    # objects built at start are moved out of its sight.
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    ctl.send("ready")
    done, _ = await asyncio.wait([ctl.stop, ctl.quit], return_when=asyncio.FIRST_COMPLETED)
    if ctl.quit in done:
        _quit_now(server)
    timeout, reason = ctl.stop.result()
    server.stop_accepting()
    adopter.close()  # the other workers' sockets too: a port closes when all let go
    ctl.send("draining")
    log = runtime.error_log
    log.info(f"worker stopping ({reason}): finishing in-flight requests", worker=spec.slot + 1,
             connections=len(server.connections), timeout=f"{timeout:g}s")
    drain = loop.create_task(server.shutdown(timeout))
    await asyncio.wait([drain, ctl.quit], return_when=asyncio.FIRST_COMPLETED)
    if ctl.quit.done() and not drain.done():
        _quit_now(server)
    ctl.send_metrics(0)  # the final counts (a blocking-free send: a few kilobytes)
    log.close()
    return 0


class _Adopter:
    """Accepts on the sockets of a dead worker while the supervisor restarts it.  A
    socket is served through a duplicate descriptor, so releasing it (closing the
    server) leaves the inherited one open for the next time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, server, spec: WorkerSpec, tls: bool) -> None:
        self.loop = loop
        self.server = server
        self.spare = {s.fd: s for s in spec.sockets if not s.own}
        self.config = spec.config
        self.adopted: dict[int, asyncio.AbstractServer | None] = {}  # None: being set up
        self.cancelled: set[int] = set()  # released while being set up

    def request(self, adopt: bool, fd: int) -> None:
        if fd not in self.spare or self.server.draining:
            return
        if adopt and fd not in self.adopted:
            self.adopted[fd] = None
            self.cancelled.discard(fd)
            self.loop.create_task(self._adopt(fd))
        elif not adopt and fd in self.adopted:
            listener = self.adopted.pop(fd)
            if listener is None:
                self.cancelled.add(fd)
            else:
                self.server.remove_listener(listener)

    def close(self) -> None:
        """Let go of the sockets held for adoption (those adopted closed with the server)."""
        for fd in self.spare:
            try:
                os.close(fd)
            except OSError:
                pass
        self.spare = {}

    async def _adopt(self, fd: int) -> None:
        s = self.spare.get(fd)
        if s is None:  # let go of (stopping) since it was asked
            self.adopted.pop(fd, None)
            return
        sock = socket.socket(fileno=os.dup(fd))
        try:
            listener = await self.server.add_listener(sock, tls=kind_at(self.config, s.address, s.port) == "tls")
        except OSError:
            sock.close()
            self.adopted.pop(fd, None)
            return
        if fd in self.cancelled or self.server.draining:
            self.cancelled.discard(fd)
            self.server.remove_listener(listener)
        else:
            self.adopted[fd] = listener


def _reopen_logs(server: Server) -> None:
    """SIGUSR1 (the supervisor passes its own on): the log files, opened again."""
    runtime = server.runtime
    for log in runtime.error_logs:
        log.reopen_file()
    for access in runtime.access_logs:
        problem = access.reopen()
        if problem is not None:
            runtime.error_log.error(problem)


def _quit_now(server) -> None:
    """Stop at once: what is logged so far is written, connections die with us."""
    for log in server.runtime.access_logs:
        log.flush()
    if server.limits is not None:
        server.limits.release_all()  # the connections die with us: stop counting them
    os._exit(1)


def main(argv: list[str] | None = None) -> int:
    import uvloop

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        print("porch.server.worker is started by `porch run`, not by hand", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # until the loop handles it (log reopen)
    ctl = socket.socket(fileno=int(args[0]))
    spec = _read_spec(ctl)
    return uvloop.run(serve(spec, ctl))


if __name__ == "__main__":
    sys.exit(main())
