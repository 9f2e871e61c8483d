"""Run Porch in this process: bind, serve, stop gracefully on SIGTERM / SIGINT.

One process for now; the supervisor and workers arrive with the process-model work
and will call `serve()` in each worker with sockets inherited from the supervisor.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal

import uvloop

from porch.config.compile import compile_config
from porch.config.model import Config
from porch.server.listener import Server, bind_sockets


async def serve(config: Config, ready: asyncio.Event | None = None) -> int:
    """Serve `config` until SIGTERM or SIGINT; return the exit code."""
    loop = asyncio.get_running_loop()
    runtime = compile_config(config)
    log = runtime.error_log
    g = config.porch
    sockets = bind_sockets(g.bind, g.http_port)
    tls_sockets = bind_sockets(g.bind, g.https_port) if runtime.tls is not None else []
    server = Server(loop, runtime)
    await server.listen(sockets, tls_sockets)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # --- ACME certificates (porch.tls.manager): a supervisor-only service.  One process
    # for now; moves to the supervisor's service hook when the process model lands.
    from porch.tls import manager as acme_manager

    acme_task = acme_manager.start(config, log)
    # --- end ACME
    where = ", ".join(_urls("http", g.bind, g.http_port))
    if tls_sockets:
        where += ", " + ", ".join(_urls("https", g.bind, g.https_port))
    log.info(f"porch serving {len(config.sites)} site(s) on {where}", pid=os.getpid())
    # Requests free their objects by reference counting; the cyclic collector only
    # has to find the rare cycle.  Collecting young objects every 700 allocations
    # cost 5% of the time per request (bench/); every 20,000 is plenty, and the
    # objects built at start are moved out of its sight.
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    if ready is not None:
        ready.set()
    await stop.wait()
    log.info("stopping: finishing in-flight requests", timeout=f"{g.shutdown_timeout:g}s")
    # A second signal stops at once.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: os._exit(1))
    if acme_task is not None:  # ACME: stop the certificate manager (see above)
        acme_task.cancel()
    await server.shutdown(g.shutdown_timeout)
    log.info("stopped")
    log.close()
    return 0


def _urls(scheme: str, bind: tuple[str, ...], port: int) -> list[str]:
    return [f"{scheme}://{'[' + a + ']' if ':' in a else a}:{port}" for a in bind]


def run(config: Config) -> int:
    return uvloop.run(serve(config))
