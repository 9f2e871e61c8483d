"""Porch: a reverse proxy for self-hosted web apps."""

__version__ = "0.1.0"

from porch import _compiled

_compiled.check()  # a stale compiled module must not run in place of its source
