"""porch version | check | run | reload | certs | trust | hash-password: main(argv) -> exit code."""

from __future__ import annotations

import argparse
import sys

from porch import __version__

DEFAULT_CONFIG = "/etc/porch/porch.toml"

COMMANDS = (
    ("check", "validate a config and show what it means"),
    ("run", "serve a config until SIGTERM or SIGINT (SIGHUP reloads it)"),
    ("reload", "make the running porch re-read its config, without dropping a connection"),
    ("status", "what the running porch serves: sites, upstream health, certificates, recent errors"),
    ("reopen-logs", "make the running porch open its log files again (after logrotate moved them)"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="porch", description="A reverse proxy for self-hosted apps.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("version", help="print the version")
    for name, text in COMMANDS:
        p = sub.add_parser(name, help=text)
        p.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
        if name == "check":
            p.add_argument("--dump", action="store_true",
                           help="print the effective config as porch.toml, every default written out")
    certs = sub.add_parser("certs", help="list certificates; `porch certs renew` renews them")
    certs.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
    certs.add_argument("action", nargs="?", choices=["renew"], help="renew the certificates that are due")
    certs.add_argument("--force", action="store_true", help="renew even those not due")
    certs.add_argument("--dry-run", action="store_true", help="against the staging CA, storing nothing")
    p = sub.add_parser("convert", help="print the porch.toml an nginx or Apache file means")
    p.add_argument("file", help="an nginx file: nginx.conf, a sites-enabled/ file, a server block")
    p = sub.add_parser("trust", help="print the local CA's root certificate and how to install it")
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
    p = sub.add_parser("hash-password", help="print an htpasswd line with a bcrypt hash"
                       " (the password from a prompt, or stdin's first line)")
    p.add_argument("--user", help="the user name the line starts with (else the hash alone)")
    p.add_argument("--cost", type=int, default=10, choices=range(10, 17), metavar="10-16",
                   help="bcrypt's cost: each step doubles the time of a check (default 10, ~60 ms)")
    args = parser.parse_args(argv)
    if args.command == "hash-password":
        return _hash_password(args.user, args.cost)
    if args.command == "version":
        from porch import _compiled
        from porch.server import tls_layer

        print(f"porch {__version__} ({_compiled.describe()})")
        print(f"TLS records: {tls_layer.describe()}")
        return 0
    if args.command == "certs":
        return _certs(args)
    if args.command == "convert":
        return _convert(args.file)
    if args.command == "trust":
        return _trust(args.config)
    if args.command == "check" and args.dump:
        return _dump(args.config)
    commands = {"check": _check, "run": _run, "reload": _reload, "status": _status, "reopen-logs": _reopen_logs}
    return commands[args.command](args.config)


def _certs(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    from porch.storage import FileStorage
    from porch.tls import certs_cli

    if args.action == "renew":
        return certs_cli.renew(config, force=args.force, dry_run=args.dry_run)
    print(certs_cli.table(config, FileStorage(config.porch.state_dir)))
    return 0


def _load(path: str):
    from porch.config.errors import ConfigError, invalid_config_message
    from porch.config.load import load

    try:
        return load(path)
    except ConfigError as err:
        print(invalid_config_message(path, err), file=sys.stderr)
        return None


def _check(path: str) -> int:
    from porch.config.describe import describe

    config = _load(path)
    if config is None:
        return 1
    print(f"{path}: configuration is valid" + (f", with {len(config.warnings)} warning(s)" if config.warnings else ""))
    for line in config.warnings:
        print(f"warning: {line}")
    print(describe(config))
    return 0


def _dump(path: str) -> int:
    """The model as TOML on stdout (it loads back to the same model), warnings on stderr."""
    from porch.config.dump import dump

    config = _load(path)
    if config is None:
        return 1
    for line in config.warnings:
        print(f"porch: warning: {line}", file=sys.stderr)
    sys.stdout.write(dump(config))
    return 0


def _convert(path: str) -> int:
    """The porch.toml on stdout; problems on stderr (exit 1), as `porch check` words them."""
    from porch.config.load import kind

    if kind(path) == "apache":
        from porch.config.apache.convert import convert
    else:
        from porch.config.nginx.convert import convert
    text, problems = convert(path)
    if problems:
        print(f"porch: {path}: cannot convert:", *problems, sep="\n", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


def _trust(path: str) -> int:
    """The root PEM on stdout (`porch trust > porch.crt` gives a clean file), the
    instructions on stderr."""
    config = _load(path)
    if config is None:
        return 1
    from porch.storage import FileStorage, StorageError
    from porch.tls.trust import instructions, no_local_ca, root_pem

    storage = FileStorage(config.porch.state_dir)
    refusal = no_local_ca(config, storage, path)
    if refusal:
        print(refusal, file=sys.stderr)
        return 1
    try:
        pem = root_pem(storage)
    except StorageError as err:
        print(f"porch: {err}", file=sys.stderr)
        return 1
    sys.stdout.write(pem.decode())
    sys.stdout.flush()
    print(instructions(pem, storage, path), file=sys.stderr)
    return 0


def _run(path: str) -> int:
    config = _load(path)
    if config is None:
        return 1
    from porch.server.app import StartError, run

    for line in config.warnings:  # what `porch check` says too; stderr is the journal under systemd
        print(f"porch: warning: {line}", file=sys.stderr)
    try:
        return run(path, config)
    except StartError as err:
        print(f"porch: cannot start: {err}", file=sys.stderr)
        return 1


def _status(path: str) -> int:
    """The dashboard's summary, from the admin API of the porch serving `path`."""
    config = _load(path)
    if config is None:
        return 1
    from porch.server.admin.status import StatusError, fetch, render

    try:
        print(render(fetch(config)))
    except StatusError as err:
        print(f"porch: {err}", file=sys.stderr)
        return 1
    return 0


def _reopen_logs(path: str) -> int:
    """SIGUSR1 to the porch serving `path` (found as `porch reload` finds it)."""
    import os
    import signal

    from porch.server import control
    from porch.storage import FileStorage

    config = _load(path)
    if config is None:
        return 1
    state_dir = os.path.abspath(config.porch.state_dir)
    try:
        running = control.find(FileStorage(state_dir), state_dir)
        os.kill(running.pid, signal.SIGUSR1)
    except control.NotRunning as err:
        print(f"porch: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"porch: cannot signal porch (pid {running.pid}): {err.strerror}", file=sys.stderr)
        return 1
    print(f"porch: asked porch (pid {running.pid}) to reopen its log files")
    return 0


def _reload(path: str) -> int:
    """Validate `path` here (the message `porch check` gives), then have the porch that
    serves it reload, and report what it says (server/control.py)."""
    import os

    from porch.server import control
    from porch.storage import FileStorage

    config = _load(path)
    if config is None:
        return 1
    state_dir = os.path.abspath(config.porch.state_dir)
    storage = FileStorage(state_dir)
    try:
        running = control.find(storage, state_dir)
    except control.NotRunning as err:
        print(f"porch: {err}", file=sys.stderr)
        return 1
    if os.path.realpath(running.config_path) != os.path.realpath(path):
        print(f"porch: the porch running with state_dir {state_dir} (pid {running.pid}) serves "
              f"{running.config_path}, not {path}: reload with -c {running.config_path}", file=sys.stderr)
        return 1
    try:
        ok, message = control.request_reload(storage, running)
    except OSError as err:
        print(f"porch: cannot signal porch (pid {running.pid}): {err.strerror}", file=sys.stderr)
        return 1
    if ok:
        print(f"porch: {message}")
        return 0
    if not message.startswith("porch: "):  # a config error is already spelled as check spells it
        message = f"porch: reload failed, still serving the previous config: {message}"
    print(message, file=sys.stderr)
    return 1


def _hash_password(user: str | None, cost: int) -> int:
    """A bcrypt htpasswd line for basic_auth.  The password comes from a prompt (asked
    twice) on a terminal, else from stdin's first line, so that a script pipes it in
    without it showing in `ps`: printf '%s\\n' "$PW" | porch hash-password --user alice."""
    if user is not None and (not user or ":" in user or any(ord(c) < 32 for c in user)):
        print("porch: --user: a user name is not empty and holds no ':' or control character",
              file=sys.stderr)
        return 2
    password = _read_password()
    if isinstance(password, str):
        print(f"porch: {password}; nothing written", file=sys.stderr)
        return 1
    from porch.policies.htpasswd import bcrypt_line

    line = bcrypt_line(user or "", password, cost)
    print(line if user else line[1:])  # without --user: the hash alone
    return 0


def _read_password() -> bytes | str:
    """The password as bytes, or why there is none (a str)."""
    import getpass

    if sys.stdin.isatty():
        text = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != text:
            return "the passwords differ"
    else:
        text = sys.stdin.readline().rstrip("\r\n")
    password = text.encode()
    if not password:
        return "the password is empty"
    if len(password) > 72:  # bcrypt reads 72 bytes: the rest would be ignored silently
        return "the password is longer than 72 bytes, which is all bcrypt reads"
    return password
