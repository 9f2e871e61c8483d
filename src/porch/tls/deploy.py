"""After each issuance or renewal: bundles, then the `on_certificate` command.

Bundles are files other daemons read, e.g. Icecast's bundle.pem (fullchain then
key in one file), written atomically with the chosen mode and group, as the
LibreTime guide's certbot deploy hook does with `install --group --mode`.  They are
written first, so the command (often a reload of that daemon) sees them.

The command runs with /bin/sh -c and these environment variables (certbot's
deploy hooks get RENEWED_LINEAGE and RENEWED_DOMAINS):
    PORCH_SITE             the site's name (its first host)
    PORCH_CERT_NAMES       the certificate's names, space-separated
    PORCH_CERT_FULLCHAIN   path of fullchain.pem
    PORCH_CERT_KEY         path of privkey.pem
    PORCH_CERT_DIR         the directory holding both
    PORCH_CERT_NOT_AFTER   expiry, ISO-8601 UTC
For `tls = { cert, key }` sites (tls/file_deploy.py) the paths are the site's own
files (PORCH_CERT_FULLCHAIN is `cert`, which holds the chain unless `chain` is set:
then PORCH_CERT_CHAIN is that file too).
A failure is returned as text (logged, kept in meta.json as deploy_error) and is
never fatal: the next renewal runs everything again.
"""

from __future__ import annotations

import contextlib
import grp
import os
import subprocess

from porch.config.model import Bundle
from porch.storage import FileStorage
from porch.tls.certstore import Meta, cert_dir

HOOK_TIMEOUT = 300.0  # seconds; a reload that takes longer is stuck


def deploy(storage: FileStorage, name: str, meta: Meta, bundles: tuple[Bundle, ...],
           command: str | None) -> str | None:
    """Write `bundles` and run `command` for the certificate stored under `name`;
    None when all went well, else what failed."""
    fullchain = storage.get(f"{cert_dir(name)}/fullchain.pem") or b""
    key = storage.get(f"{cert_dir(name)}/privkey.pem") or b""
    return deploy_pem(fullchain, key, bundles, command, hook_env(storage, name, meta))


def deploy_pem(fullchain: bytes, key: bytes, bundles: tuple[Bundle, ...], command: str | None,
               env: dict[str, str]) -> str | None:
    """Write `bundles` from these PEM bytes, then run `command` with `env` added to
    the environment; None when all went well, else what failed."""
    problems = []
    for bundle in bundles:
        try:
            write_bundle(bundle, fullchain, key)
        except (OSError, KeyError) as e:
            problems.append(f"bundle {bundle.path}: {_why(e)}")
    if command:
        problem = run_hook(command, env)
        if problem:
            problems.append(problem)
    return "; ".join(problems) or None


def bundle_bytes(contents: tuple[str, ...], fullchain: bytes, key: bytes) -> bytes:
    """The parts in order: "fullchain", "cert" (the leaf), "chain" (the rest), "key"."""
    marker = b"-----BEGIN CERTIFICATE-----"
    blocks = [marker + b for b in fullchain.split(marker)[1:]]
    parts = {
        "fullchain": fullchain,
        "cert": blocks[0] if blocks else b"",
        "chain": b"".join(blocks[1:]),
        "key": key,
    }
    out = b""
    for part in contents:
        data = parts[part]
        out += data if not out or out.endswith(b"\n") else b"\n" + data
    return out


def write_bundle(bundle: Bundle, fullchain: bytes, key: bytes) -> None:
    """Replace bundle.path atomically (temporary file in the same directory, then
    rename), with its mode and group set before any byte of the key is in it."""
    gid = grp.getgrnam(bundle.group).gr_gid if bundle.group else -1
    directory, base = os.path.split(bundle.path)
    tmp = os.path.join(directory, f".{base}.porch.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        try:
            os.fchown(fd, -1, gid)
            os.fchmod(fd, bundle.mode)  # after chown: chown may clear setgid bits
            os.write(fd, bundle_bytes(bundle.contents, fullchain, key))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, bundle.path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def hook_env(storage: FileStorage, name: str, meta: Meta) -> dict[str, str]:
    base = cert_dir(name)
    return {
        "PORCH_SITE": name,
        "PORCH_CERT_NAMES": " ".join(meta.names),
        "PORCH_CERT_FULLCHAIN": str(storage.path(f"{base}/fullchain.pem")),
        "PORCH_CERT_KEY": str(storage.path(f"{base}/privkey.pem")),
        "PORCH_CERT_DIR": str(storage.path(base)),
        "PORCH_CERT_NOT_AFTER": meta.not_after or "",
    }


def run_hook(command: str, env: dict[str, str], timeout: float = HOOK_TIMEOUT) -> str | None:
    """Run `command`; None on exit status 0, else what went wrong (with its stderr)."""
    try:
        done = subprocess.run(["/bin/sh", "-c", command], env={**os.environ, **env},
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"on_certificate {command!r} still running after {timeout:g}s (killed)"
    except OSError as e:
        return f"on_certificate {command!r}: {_why(e)}"
    if done.returncode != 0:
        said = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        tail = f": {said[-1]}" if said else ""
        return f"on_certificate {command!r} exited with status {done.returncode}{tail}"
    return None


def _why(e: Exception) -> str:
    if isinstance(e, KeyError):
        return f"group {e.args[0]!r} does not exist"
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}" + (f" ({e.filename})" if e.filename else "")
    return str(e)
