"""Supervisor-only services: work done once per Porch, not once per worker.

The ACME certificate manager, later the admin API: anything that must not run N
times in parallel runs in the supervisor's event loop (server/supervisor.py), and
reaches the workers only through `porch.storage` (certificates, challenge answers),
never through memory.

A service is an object with three coroutines:

    class CertManager:
        async def start(self, config: Config, storage: Storage, log: ErrorLog) -> None:
            # called once, after the first workers serve; return quickly: long-running
            # work goes in a task the service creates and owns
        async def reload(self, config: Config) -> None:
            # after a reload succeeded: the new config is the one being served
        async def stop(self) -> None:
            # when Porch stops (before the workers have finished draining): cancel the
            # tasks, release locks

and is added to the list `supervisor_services` returns.  An exception from any of
the three is logged with the service's class name and does not stop Porch: serving
traffic matters more than any one service.  `stop` gets `STOP_TIMEOUT` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

from porch.config.model import Config
from porch.observability.errorlog import ErrorLog
from porch.storage import Storage

STOP_TIMEOUT = 10.0


class Service(Protocol):
    async def start(self, config: Config, storage: Storage, log: ErrorLog) -> None: ...
    async def reload(self, config: Config) -> None: ...
    async def stop(self) -> None: ...


def supervisor_services(config: Config) -> list[Service]:
    """The services `porch run` starts in the supervisor for `config`: add yours here."""
    return [CertManagerService()]


class CertManagerService:
    """The ACME certificate manager (porch.tls.manager) as a supervisor service.

    It runs only while some site wants ACME; a reload restarts it on the new config
    (new names, removed sites).  It reads what storage holds before doing anything, so a
    restart issues nothing that is not due.
    """

    def __init__(self) -> None:
        self.task: asyncio.Task | None = None
        self.log: ErrorLog | None = None

    async def start(self, config: Config, storage: Storage, log: ErrorLog) -> None:
        from porch.tls import manager

        self.log = log
        self.task = manager.start(config, log)

    async def reload(self, config: Config) -> None:
        from porch.tls import manager

        await self.stop()
        assert self.log is not None
        self.task = manager.start(config, self.log)

    async def stop(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
