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
    from porch.tls.file_deploy import FileDeployService  # bundles and hooks for tls = { cert, key }
    from porch.tls.manager import AcmeService  # ACME certificates (idle unless a site wants them)
    from porch.upstream.prober import HealthService  # active health checks (idle unless a route has health)

    return [AcmeService(), FileDeployService(), HealthService()]
