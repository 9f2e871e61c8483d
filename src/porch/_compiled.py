"""Which modules setup.py compiles with Cython, and whether a source checkout's
compiled copies are older than their sources.

Python imports an extension module in preference to the `.py` beside it, so in an
editable install a stale `.so` would silently run yesterday's code.  `check()`
refuses that; the test suite rebuilds first (tests/conftest.py).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os

# Relative to src/, in import order of dependence (setup.py reads this list).
MODULES = (
    "porch/http/h1.py",
    "porch/http/model.py",
    "porch/http/target.py",
    "porch/http/request_id.py",
    "porch/routing.py",
    "porch/observability/record.py",
    "porch/observability/accesslog.py",
    "porch/observability/stats.py",
    "porch/upstream/pool.py",
    "porch/upstream/listener.py",
    "porch/pipeline.py",
    "porch/policies/forwarding.py",  # on every proxied request
    # on every request of the routes that have them (bench/policies.py's route:
    # bench/RESULTS.md, "Policies on a route")
    "porch/limits/table.py",
    "porch/policies/codings.py",
    "porch/policies/compress.py",
    "porch/policies/security.py",
    "porch/policies/rate_limit.py",
    "porch/policies/htpasswd.py",
    "porch/policies/basic_auth.py",
    "porch/http/response_head.py",
    "porch/runtime.py",
    "porch/upstream/connection.py",
    "porch/server/proxy.py",
    "porch/server/downstream.py",  # how an exchange writes to its client (HTTP/1.1)
    "porch/server/client.py",
)

# Cython-only extensions that bind a C library: built when the library's header is
# there (setup.py), else left out and the pure-Python path serves instead.
#   module source -> (the header it needs, the library (or libraries) it links)
NATIVE = {
    "porch/server/ngh2.pyx": ("nghttp2/nghttp2.h", "nghttp2"),  # Debian libnghttp2-dev
    # the shared counter table's process-shared mutex (limits/table.py); libc6-dev
    "porch/limits/_table.pyx": ("pthread.h", "pthread"),
    # TLS records read and written by OpenSSL's calls (server/tls_transport.pyx, the
    # libssl Python's ssl module uses); Debian libssl-dev.  Else uvloop's SSLProtocol.
    "porch/server/tls_transport.pyx": ("openssl/ssl.h", ("ssl", "crypto")),
}
INCLUDE_DIRS = ("/usr/include", "/usr/local/include")

_SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except FileNotFoundError:
        return 0.0


def status() -> tuple[list[str], list[str]]:
    """(modules running compiled, modules whose compiled copy is older than its source)."""
    compiled, stale = [], []
    for rel in MODULES:
        py = os.path.join(_SRC, rel)
        ext = _mtime(py[:-3] + _SUFFIX)
        if not ext:
            continue
        compiled.append(rel)
        if max(_mtime(py), _mtime(py[:-3] + ".pxd")) > ext:
            stale.append(rel)
    return compiled, stale


def header_found(header: str) -> bool:
    return any(os.path.exists(os.path.join(d, header)) for d in INCLUDE_DIRS)


def native_wanted() -> list[str]:
    """The NATIVE modules whose C library header this machine has."""
    return [rel for rel, (header, _) in NATIVE.items() if header_found(header)]


def native_stale() -> list[str]:
    """Wanted NATIVE modules with no build, or one older than the source."""
    out = []
    for rel in native_wanted():
        src = os.path.join(_SRC, rel)
        if _mtime(src[: -len(".pyx")] + _SUFFIX) < _mtime(src):
            out.append(rel)
    return out


def native_loads(rel: str) -> bool:
    """Whether the NATIVE module `rel` is built here and loads (its library found)."""
    try:
        importlib.import_module(rel[: -len(".pyx")].replace("/", "."))
    except ImportError:
        return False
    return True


# `[porch] http2_engine`: what speaks HTTP/2 (server/h2engine.py).  Decided here, by
# what is built, so that config/ need not import the server to check it.
HTTP2_ENGINES = ("auto", "nghttp2", "h2")


def http2_engine(choice: str) -> str:
    """The configured engine -> the one that runs.  ValueError for "nghttp2" where
    it is not built, saying how to build it.

    "auto" is nghttp2 where it is built (the C library; bench/RESULTS.md, HTTP/2
    on libnghttp2), else h2.  Both give the same answers to malformed requests
    (server/ngh2.pyx checks header blocks by h2's rules)."""
    built = native_loads("porch/server/ngh2.pyx")
    if choice == "auto":
        return "nghttp2" if built else "h2"
    if choice == "nghttp2" and not built:
        raise ValueError(
            '"nghttp2" is not built into this install (libnghttp2-dev was missing when '
            'porch was built): install it (apt-get install libnghttp2-dev) and reinstall '
            'porch, or use "auto" or "h2"')
    return choice


def needs_build() -> bool:
    """A module is stale or has no compiled copy: what tests/conftest.py and
    scripts/lib.sh (through `python src/porch/_compiled.py`) rebuild for."""
    compiled, stale = status()
    return bool(stale) or len(compiled) < len(MODULES) or bool(native_stale())


def describe() -> str:
    compiled, _ = status()
    if not compiled:
        return "pure Python"
    return "compiled core" if len(compiled) == len(MODULES) else f"{len(compiled)} modules compiled"


def source_checkout() -> bool:
    """Running from a repository (editable install), where sources get edited."""
    return os.path.exists(os.path.join(os.path.dirname(_SRC), "setup.py"))


def check() -> None:
    if not source_checkout():
        return
    _, stale = status()
    if stale:
        names = ", ".join(stale)
        raise ImportError(
            f"compiled modules older than their sources: {names}; rebuild them with "
            f"`.venv/bin/python setup.py build_ext --inplace` in {os.path.dirname(_SRC)} "
            f"(or delete the .so files to run pure Python)"
        )


if __name__ == "__main__":  # exit 0 when a build is needed, for scripts/lib.sh
    raise SystemExit(0 if needs_build() else 1)
