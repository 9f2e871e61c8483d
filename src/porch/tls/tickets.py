"""Session-ticket keys shared by every worker, so a ticket from one resumes on another.

Each worker builds its own `SSLContext`s, and OpenSSL gives each context a random
ticket key of its own: a client whose ticket was issued by worker 1 and whose next
connection lands on worker 2 (the kernel spreads connections over the workers'
SO_REUSEPORT sockets) gets a full handshake.  nginx shares one key because its
workers are forks of the master; ours are fresh interpreters (server/worker.py).

So the supervisor makes one secret (80 bytes of os.urandom, kept in memory only: never
written, never logged) and hands it to every worker in its WorkerSpec, reloads and
restarts included.  The key in use is derived from it per period of ROTATE_EVERY
seconds (HKDF-Expand, RFC 5869, with the period's number as info), so all workers
switch to the next key at the same instant with no message between processes, and a
reload or a restarted worker derives the same key as the others.

Python's ssl has no setter for the key.  OpenSSL's SSL_CTX_ctrl with
SSL_CTRL_SET_TLSEXT_TICKET_KEYS does it, called through ctypes on the `SSL_CTX *` that
CPython's PySSLContext holds right after its object header (Modules/_ssl.c: `PyObject_HEAD
SSL_CTX *ctx;`).  That is CPython's internal layout, not an API, so it is checked before
anything is written: the pointer must hold the `num_tickets` Python just set (a read),
then the key written must read back (SSL_CTRL_GET_TLSEXT_TICKET_KEYS).  Any failure
(another Python, an OpenSSL ctypes cannot reach) leaves every context its own random
key: resumption then works only on the worker that issued the ticket, as before.

Rotation: OpenSSL's ctrl holds one key, used to encrypt and to decrypt.  A ticket issued
under the previous period's key no longer decrypts; OpenSSL then does a full handshake
and issues a new ticket under the new key.  Keeping the old key for decryption needs
SSL_CTX_set_tlsext_ticket_key_evp_cb, a C callback into Python on every ticket issued
and every resumption, with EVP and OSSL_PARAM structures built through ctypes: not
worth its risk for what it saves.  A ticket lives as long as the session
(OpenSSL's default session timeout, 2 hours, Python does not change it), so a rotation
costs one full handshake to each client that resumes within 2 hours after it, twice a
day.  Both TLS 1.2 tickets (RFC 5077) and TLS 1.3 tickets (RFC 8446 section 4.6.1,
stateless in OpenSSL 3) are sealed with this key; ticket processing uses the context
the connection started on (the listening one, before the SNI switch, OpenSSL's
`session_ctx`), and every context gets the key anyway.  Python never enables TLS 1.3
early data, so a ticket that any worker accepts replays no request (RFC 8446 section 8).
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import os
import ssl
import sys
import time

KEY_SIZE = 80  # OpenSSL 1.1.0 and later: 16 name + 32 HMAC secret + 32 AES key
SECRET_SIZE = 80
ROTATE_EVERY = 12 * 3600.0  # seconds: a new key every 12 hours (nginx users rotate daily)
_SET_KEYS = 59  # SSL_CTRL_SET_TLSEXT_TICKET_KEYS (openssl/ssl.h)
_GET_KEYS = 58  # SSL_CTRL_GET_TLSEXT_TICKET_KEYS


def new_secret() -> bytes:
    """The supervisor's secret, once per `porch run`."""
    return os.urandom(SECRET_SIZE)


def derive_key(secret: bytes, period: int) -> bytes:
    """The 80-byte ticket key of `period` (HKDF-Expand with SHA-256, RFC 5869 2.3)."""
    info = b"porch session ticket key " + period.to_bytes(8, "big")
    out, block = b"", b""
    for counter in range(1, 1 + (KEY_SIZE + 31) // 32):
        block = hmac.new(secret, block + info + bytes((counter,)), hashlib.sha256).digest()
        out += block
    return out[:KEY_SIZE]


def period_at(now: float, every: float = ROTATE_EVERY) -> int:
    return int(now // every)


# -- the ctypes seam ------------------------------------------------------------------


class _OpenSSL:
    """The libssl functions of the OpenSSL that Python's _ssl module is linked with."""

    def __init__(self) -> None:
        import _ssl

        # dlsym on the _ssl module's handle searches its dependencies too (libssl,
        # libcrypto); a _ssl built into the interpreter: the program's own symbols.
        lib = ctypes.CDLL(getattr(_ssl, "__file__", None))
        self.ctrl = lib.SSL_CTX_ctrl
        self.ctrl.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p)
        self.ctrl.restype = ctypes.c_long
        self.num_tickets = lib.SSL_CTX_get_num_tickets
        self.num_tickets.argtypes = (ctypes.c_void_p,)
        self.num_tickets.restype = ctypes.c_size_t
        version = lib.OpenSSL_version_num
        version.restype = ctypes.c_ulong
        self.version = version()


def ctx_pointer(ctx: ssl.SSLContext) -> int:
    """The `SSL_CTX *` inside `ctx`, by CPython's layout: the field after the object
    header (checked by `layout_problem` before any use)."""
    return ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value or 0


def layout_problem(pointer=ctx_pointer, expected_version: int | None = None) -> str | None:
    """None when ticket keys can be set on this Python and OpenSSL; else why not.
    `pointer` finds the SSL_CTX of a context (tests pass a wrong one)."""
    if sys.implementation.name != "cpython":
        return f"{sys.implementation.name} is not CPython"
    try:
        lib = _openssl()
    except (OSError, AttributeError) as exc:
        return f"libssl not reachable through ctypes: {exc}"
    expected = ssl.OPENSSL_VERSION_NUMBER if expected_version is None else expected_version
    if lib.version != expected:
        return f"ctypes reaches OpenSSL {lib.version:#x}, Python's ssl uses {expected:#x}"
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        return _check(lib, probe, pointer(probe))
    finally:
        del probe


def _check(lib: _OpenSSL, ctx: ssl.SSLContext, ptr: int) -> str | None:
    if not ptr or ptr % ctypes.sizeof(ctypes.c_void_p):
        return "no SSL_CTX where CPython's layout puts it"
    for n in (3, 5):  # read only: the pointer must hold what Python sets
        ctx.num_tickets = n
        if lib.num_tickets(ptr) != n:
            return "the SSL_CTX read does not hold the context's num_tickets"
    ctx.num_tickets = 2
    key = os.urandom(KEY_SIZE)
    if not _set(lib, ptr, key):
        return "the ticket key written does not read back"
    return None


def _set(lib: _OpenSSL, ptr: int, key: bytes) -> bool:
    buf = ctypes.create_string_buffer(key, KEY_SIZE)
    if lib.ctrl(ptr, _SET_KEYS, KEY_SIZE, buf) != 1:
        return False
    back = ctypes.create_string_buffer(KEY_SIZE)
    return lib.ctrl(ptr, _GET_KEYS, KEY_SIZE, back) == 1 and back.raw == key


_lib: _OpenSSL | None = None


def _openssl() -> _OpenSSL:
    global _lib
    if _lib is None:
        _lib = _OpenSSL()
    return _lib


def read_key(ctx: ssl.SSLContext) -> bytes:
    """The ticket key `ctx` uses now (for tests; only after `layout_problem()` is None)."""
    back = ctypes.create_string_buffer(KEY_SIZE)
    if _openssl().ctrl(ctx_pointer(ctx), _GET_KEYS, KEY_SIZE, back) != 1:
        raise OSError("SSL_CTRL_GET_TLSEXT_TICKET_KEYS failed")
    return back.raw


# -- what a worker uses ---------------------------------------------------------------

_problem: list[str | None] = []  # layout_problem(), once per process


def problem() -> str | None:
    """`layout_problem()`, checked once per process."""
    if not _problem:
        _problem.append(layout_problem())
    return _problem[0]


class TicketKeys:
    """One worker's ticket key: installed in each server context it builds; `rotate()`
    (from the server's sweeper) says when the period changed, and the caller installs
    the new key in the contexts it serves.  With no secret, or when the layout check
    fails (`problem` says why), it does nothing: each context keeps OpenSSL's own key."""

    def __init__(self, secret: bytes | None, every: float = ROTATE_EVERY, clock=time.time,
                 check=problem) -> None:
        self.secret = secret
        self.every = every
        self.clock = clock  # () -> seconds, wall clock: every worker reads the same
        self.period = period_at(clock(), every)
        self.key = derive_key(secret, self.period) if secret else b""
        self.problem: str | None = check() if secret else "no shared secret"

    def __repr__(self) -> str:  # never the secret or the key
        return f"TicketKeys(period={self.period}, shared={self.shared})"

    @property
    def shared(self) -> bool:
        return self.problem is None

    def install(self, ctx: ssl.SSLContext) -> bool:
        """Give `ctx` the current key; False (and `problem` says why) when it cannot."""
        if self.problem is not None:
            return False
        if not _set(_openssl(), ctx_pointer(ctx), self.key):
            self.problem = "the ticket key written does not read back"
            return False
        return True

    def rotate(self) -> bool:
        """True once the period changed (the key is the new period's then): install
        it in every context served.  Cheap when nothing changed: one division."""
        period = period_at(self.clock(), self.every)
        if period == self.period or self.problem is not None:
            return False
        self.period, self.key = period, derive_key(self.secret, period)
        return True
