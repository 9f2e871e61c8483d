"""`porch run`: serve a config with a supervisor and its workers until stopped.

The process model lives in server/supervisor.py (sockets, workers, reload, stop) and
server/worker.py (one serving process); this module is the entry point the CLI calls.
"""

from __future__ import annotations

from porch.config.model import Config
from porch.server.supervisor import StartError, Supervisor

__all__ = ["StartError", "run"]


def run(path: str, config: Config) -> int:
    """Serve `config` (read from `path`, which reloads read again); return the exit
    code.  Raise StartError if it cannot start."""
    import uvloop

    return uvloop.run(Supervisor(path, config).run())
