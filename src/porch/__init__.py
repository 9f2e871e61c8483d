"""Porch: a reverse proxy for self-hosted web apps."""

__version__ = "0.1.0"
