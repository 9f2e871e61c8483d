"""porch version | check | run: main(argv) -> exit code."""

from __future__ import annotations

import argparse
import sys

from porch import __version__

DEFAULT_CONFIG = "/etc/porch/porch.toml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="porch", description="A reverse proxy for self-hosted apps.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("version", help="print the version")
    for name, text in (("check", "validate a config and show what it means"), ("run", "serve a config")):
        p = sub.add_parser(name, help=text)
        p.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
    args = parser.parse_args(argv)
    if args.command == "version":
        print(f"porch {__version__}")
        return 0
    return _check(args.config) if args.command == "check" else _run(args.config)


def _load(path: str):
    from porch.config.errors import ConfigError
    from porch.config.toml import load

    try:
        return load(path)
    except ConfigError as err:
        print(f"porch: {path}: configuration is not valid:\n{err}", file=sys.stderr)
        return None


def _check(path: str) -> int:
    from porch.config.describe import describe

    config = _load(path)
    if config is None:
        return 1
    print(f"{path}: configuration is valid")
    print(describe(config))
    return 0


def _run(path: str) -> int:
    config = _load(path)
    if config is None:
        return 1
    from porch.server.app import run

    try:
        return run(config)
    except OSError as err:
        print(f"porch: cannot start: {err}", file=sys.stderr)
        return 1
