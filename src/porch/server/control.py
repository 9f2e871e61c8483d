"""How `porch reload` finds a running supervisor and learns how its reload went.

Through `porch.storage` under the config's `state_dir`:

- the lock `supervisor` (FileStorage.lock, an flock): held by the supervisor for its
  whole life.  A second `porch run` on the same state_dir refuses to start, and a pid
  file left by a supervisor that was killed is recognised as stale (nobody holds the
  lock), so a reload never signals a recycled pid;
- `porch.pid`: "PID\\nCONFIG PATH\\n", written at start, deleted at exit;
- `reload.json`: the outcome of the latest reload, written by the supervisor when it
  ends (new workers serving, or the old config kept):
  {"pid": int, "started": float, "ok": bool, "message": str}.  `started` is
  time.monotonic() when the supervisor began it (CLOCK_MONOTONIC is system-wide), so
  the client knows a result is for a reload that began after its signal.

`porch reload` validates the file itself first (same message as `porch check`), then
sends SIGHUP and waits for a result that started after it; SIGHUP from anywhere else
(kill, a service manager's ExecReload) does the same reload.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass

from porch.storage import Storage, StorageError

LOCK = "supervisor"
PID_FILE = "porch.pid"
RESULT = "reload.json"


class NotRunning(Exception):
    """No supervisor runs with this state_dir; the message says what was found."""


@dataclass(frozen=True)
class Running:
    pid: int
    config_path: str


def write_pid(storage: Storage, config_path: str) -> None:
    storage.put(PID_FILE, f"{os.getpid()}\n{config_path}\n".encode(), mode=0o644)


def find(storage: Storage, where: str) -> Running:
    """The supervisor that holds `storage`'s lock; `where` names the state_dir in messages."""
    data = storage.get(PID_FILE)
    if data is None:
        raise NotRunning(f"no porch is running with state_dir {where} (no {PID_FILE} there)")
    try:
        pid_text, path = data.decode().split("\n", 2)[:2]
        pid = int(pid_text)
    except ValueError:
        raise NotRunning(f"{where}/{PID_FILE} is not a pid file Porch wrote") from None
    try:
        with storage.lock(LOCK, timeout=0):
            raise NotRunning(f"no porch is running with state_dir {where} "
                             f"({PID_FILE} names pid {pid}, which is gone)")
    except StorageError:
        pass  # held: the supervisor is alive
    return Running(pid, path)


def write_result(storage: Storage, started: float, ok: bool, message: str) -> None:
    record = {"pid": os.getpid(), "started": started, "ok": ok, "message": message}
    storage.put(RESULT, json.dumps(record).encode() + b"\n", mode=0o644)


def request_reload(storage: Storage, running: Running, timeout: float = 60.0) -> tuple[bool, str]:
    """SIGHUP the supervisor, wait for its outcome: (ok, message)."""
    began = time.monotonic()
    os.kill(running.pid, signal.SIGHUP)
    deadline = began + timeout
    while time.monotonic() < deadline:
        try:
            record = json.loads(storage.get(RESULT) or b"null")
        except ValueError:
            record = None  # written atomically, but be safe against a foreign file
        if isinstance(record, dict) and record.get("pid") == running.pid \
                and record.get("started", 0) >= began:
            return bool(record.get("ok")), str(record.get("message", ""))
        time.sleep(0.05)
    return False, (f"porch (pid {running.pid}) did not report the outcome of the reload "
                   f"within {timeout:g}s; see its error log")


def notify(state: str) -> None:
    """Tell systemd (Type=notify units: contrib/porch.service) `state`, "READY=1" once
    the first workers accept connections; nothing when not started by systemd.  The
    sd_notify protocol is one datagram to $NOTIFY_SOCKET (a path, or "@" for Linux's
    abstract namespace)."""
    import socket

    where = os.environ.get("NOTIFY_SOCKET")
    if not where:
        return
    address = "\0" + where[1:] if where.startswith("@") else where
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state.encode(), address)
    except OSError:
        pass  # systemd gone or the socket wrong: serving matters more
