"""Fixtures: upstream servers and Porch, each its own process, stopped by pid at teardown."""

from __future__ import annotations

import pytest

from .helpers import Porch, Registry, Upstream


@pytest.fixture
def procs():
    """The processes this test started; all killed (by pid) when it ends."""
    registry = Registry()
    yield registry
    registry.close()


@pytest.fixture
def upstream(procs, tmp_path):
    """Factory: `upstream(mode="echo")` starts tests/integration/upstreams.py on a free port
    (TLS keywords: see helpers.Upstream)."""

    def start(mode: str = "echo", **tls) -> Upstream:
        return Upstream(procs, tmp_path, mode, **tls)

    return start


@pytest.fixture
def porch(procs, tmp_path):
    """Factory: `porch(config_text, **porch_keys)` runs `porch run -c porch.toml`.

    The `[porch]` table gets http_port (free), bind 127.0.0.1, state_dir, access_log and
    error_log in tmp_path; keyword arguments override or add keys of that table.
    """
    started = []

    def start(config_text: str, **porch_keys) -> Porch:
        workdir = tmp_path / f"porch{len(started)}"
        workdir.mkdir()
        p = Porch(procs, workdir, config_text, **porch_keys)
        started.append(p)
        return p

    return start


@pytest.fixture(scope="module")
def module_procs():
    """Like `procs`, for processes shared by a whole module."""
    registry = Registry()
    yield registry
    registry.close()
