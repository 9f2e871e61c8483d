"""Counters shared by the workers of one machine: rate-limit buckets, connection counts.

nginx keeps `limit_req` and `limit_conn` state in shared-memory zones, so a limit
holds whichever worker the kernel gives a connection to (SO_REUSEPORT spreads one
client's connections over all of them).  Porch does the same with one table:

- the supervisor makes it (`SharedTable.create`) in an anonymous memory file
  (memfd) before starting workers, and passes the descriptor to every worker it
  starts, reloads included (server/worker.py), which map the same pages
  (`SharedTable.attach`); without a supervisor (tests, `compile_config` alone) a
  private table serves (`local_table`);
- its size is fixed at creation (SLOTS keys, 32 bytes each: 2 MiB): a flood of
  addresses recycles the least recently used slots, it never grows memory
  (limits/_table.pyx says how);
- the operations are `CounterTable`'s: a Redis-backed table with the same methods
  can replace it when several machines serve the same sites (clustering).

Keys are bytes, hashed with SipHash-2-4 under a key made at creation and read by
every worker from the table, so that a client cannot choose keys that collide.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
import time
from typing import Protocol

HEADER = 128
SLOT = 32
WAYS = 8
SLOTS = 65536  # nginx: a 1 MiB zone holds ~16,000 limit_req states; this is 2 MiB
MAGIC = 0x3154435243524F50
KEEP_MS = 60_000  # nginx keeps a limit_req node at least 60 s after its last request


class CounterTable(Protocol):
    """What policies and the connection limiter use.  Times are milliseconds on a
    clock every process of the machine shares (CLOCK_MONOTONIC)."""

    def limit_req(self, key: bytes, now: int, rate: int, burst: int) -> int:
        """A request under a leaky bucket (rate and burst in milli-requests): the
        excess it leaves when accepted (>= 0), minus the excess it would make when
        rejected (< 0)."""
        ...

    def acquire(self, key: bytes, limit: int) -> bool:
        """One more holder of `key` unless `limit` are counted."""
        ...

    def release(self, key: bytes) -> None:
        ...

    def failed(self, key: bytes, now: int, limit: int, window: int, block: int) -> int:
        """Count a failure (a login) of `key` in a fixed `window` (ms): the block (ms)
        it starts when it is the `limit`-th, else 0."""
        ...

    def blocked(self, key: bytes, now: int) -> int:
        """The ms `key` stays blocked by `failed` (0: not blocked)."""
        ...

    def value(self, key: bytes) -> int | None:
        ...


def now_ms() -> int:
    """Milliseconds on CLOCK_MONOTONIC: one clock for every process of the machine."""
    return time.monotonic_ns() // 1_000_000


class SharedTable:
    """The table in a memory mapping of `fd` (a memfd, or any file of the right size)."""

    def __init__(self, fd: int, size: int, core) -> None:
        self.fd = fd
        self.size = size
        self.core = core  # the compiled Table, or _PyTable
        self.seed = core.seed

    @classmethod
    def create(cls, slots: int = SLOTS) -> SharedTable:
        """A new table in a new memfd (closed on exec: pass it on with pass_fds)."""
        size = HEADER + slots * SLOT
        fd = os.memfd_create("porch-counters", os.MFD_CLOEXEC)
        os.ftruncate(fd, size)
        core = _core(fd, size)
        core.init(slots, os.urandom(16))
        core.attach()
        return cls(fd, size, core)

    @classmethod
    def attach(cls, fd: int) -> SharedTable:
        """The table another process created, from its inherited descriptor."""
        size = os.fstat(fd).st_size
        core = _core(fd, size)
        core.attach()
        return cls(fd, size, core)

    def limit_req(self, key: bytes, now: int, rate: int, burst: int) -> int:
        return self.core.limit_req(key, now, rate, burst, KEEP_MS)

    def acquire(self, key: bytes, limit: int) -> bool:
        return self.core.acquire(key, now_ms(), limit)

    def release(self, key: bytes) -> None:
        self.core.release(key, now_ms())

    def failed(self, key: bytes, now: int, limit: int, window: int, block: int) -> int:
        return self.core.failed(key, now, limit, window, block)

    def blocked(self, key: bytes, now: int) -> int:
        return self.core.blocked(key, now)

    def value(self, key: bytes) -> int | None:
        return self.core.value(key, now_ms())

    @property
    def nslots(self) -> int:
        return self.core.nslots

    @property
    def evictions(self) -> int:
        return self.core.evictions

    def used(self) -> int:
        return self.core.used(now_ms())


def _core(fd: int, size: int):
    buffer = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    try:
        from porch.limits._table import Table, header_fits
    except ImportError:  # not built (no compiler): the same layout in Python
        return _PyTable(buffer, fd)
    if not header_fits():
        return _PyTable(buffer, fd)
    return Table(buffer)


_LOCAL: SharedTable | None = None


def local_table() -> SharedTable:
    """This process's own table, for a Runtime compiled without a supervisor."""
    global _LOCAL
    if _LOCAL is None:
        _LOCAL = SharedTable.create()
    return _LOCAL


# --- the pure-Python copy (no compiler) -------------------------------------------

_HEAD = struct.Struct("<QQQ16s")
_SLOT = struct.Struct("<Qqqq")
_NEVER = (1 << 63) - 1


class _PyTable:
    """limits/_table.pyx's Table in Python, locked with fcntl (POSIX record locks
    are per process and released by the kernel when a holder dies)."""

    def __init__(self, buffer: mmap.mmap, fd: int) -> None:
        self.buf = buffer
        self.fd = fd
        self.buckets = 0
        self.seed_bytes = b""

    def _key(self, name: bytes) -> int:
        # not the compiled table's SipHash: the two never share a table
        digest = hashlib.blake2b(name, digest_size=8, key=self.seed_bytes).digest()
        return int.from_bytes(digest, "little") or 1

    def init(self, nslots: int, seed: bytes) -> None:
        if nslots % WAYS or nslots & (nslots - 1):
            raise ValueError("nslots must be a power of 2, at least 8")
        self.buf[:HEADER] = bytes(HEADER)  # the slots: zero already (a new memfd)
        _HEAD.pack_into(self.buf, 0, MAGIC, nslots, 0, seed)

    def attach(self) -> None:
        magic, nslots, _, seed = _HEAD.unpack_from(self.buf, 0)
        if magic != MAGIC:
            raise ValueError("not a counter table (bad magic)")
        self.buckets = nslots // WAYS
        self.seed_bytes = seed

    nslots = property(lambda self: _HEAD.unpack_from(self.buf, 0)[1])
    seed = property(lambda self: _HEAD.unpack_from(self.buf, 0)[3])
    evictions = property(lambda self: _HEAD.unpack_from(self.buf, 0)[2])

    def _locked(self):
        import contextlib
        import fcntl

        @contextlib.contextmanager
        def lock():
            fcntl.lockf(self.fd, fcntl.LOCK_EX, 1, 0)
            try:
                yield
            finally:
                fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, 0)
        return lock()

    def _find(self, key: int, now: int, create: bool) -> tuple[int | None, bool]:
        base = HEADER + (key % self.buckets) * WAYS * SLOT
        free = expired = lru = None
        lru_last = 0
        for i in range(WAYS):
            at = base + i * SLOT
            k, _, last, expires = _SLOT.unpack_from(self.buf, at)
            if k == key:
                return at, False
            if k == 0:
                free = at if free is None else free
            elif expires <= now:
                expired = at if expired is None else expired
            elif lru is None or last < lru_last:
                lru, lru_last = at, last
        if not create:
            return None, False
        victim = free if free is not None else expired
        if victim is None:
            victim = lru
            magic, nslots, evictions, seed = _HEAD.unpack_from(self.buf, 0)
            _HEAD.pack_into(self.buf, 0, magic, nslots, evictions + 1, seed)
        _SLOT.pack_into(self.buf, victim, key, 0, now, now)
        return victim, True

    def limit_req(self, name: bytes, now: int, rate: int, burst: int, keep: int) -> int:
        key = self._key(name)
        with self._locked():
            at, made = self._find(key, now, True)
            if made:
                _SLOT.pack_into(self.buf, at, key, 0, now, now + keep)
                return 0
            _, value, last, _ = _SLOT.unpack_from(self.buf, at)
            ms = now - last
            ms = 1 if ms < -60000 else max(ms, 0)
            excess = max(value - rate * ms // 1000 + 1000, 0)
            if excess > burst:
                return -excess
            last = now if ms else last
            _SLOT.pack_into(self.buf, at, key, excess, last, last + max(keep, -(-excess * 1000 // rate)))
            return excess

    def acquire(self, name: bytes, now: int, limit: int) -> bool:
        key = self._key(name)
        with self._locked():
            at, made = self._find(key, now, True)
            _, value, _, _ = _SLOT.unpack_from(self.buf, at)
            if value >= limit:
                if made:
                    _SLOT.pack_into(self.buf, at, 0, 0, 0, 0)
                return False
            _SLOT.pack_into(self.buf, at, key, value + 1, now, _NEVER)
            return True

    def release(self, name: bytes, now: int) -> None:
        key = self._key(name)
        with self._locked():
            at, _ = self._find(key, now, False)
            if at is not None:
                k, value, last, expires = _SLOT.unpack_from(self.buf, at)
                if value <= 1:
                    _SLOT.pack_into(self.buf, at, 0, 0, 0, 0)
                else:
                    _SLOT.pack_into(self.buf, at, k, value - 1, last, expires)

    def failed(self, name: bytes, now: int, limit: int, window: int, block: int) -> int:
        key = self._key(name)
        with self._locked():
            at, made = self._find(key, now, True)
            _, value, last, _ = _SLOT.unpack_from(self.buf, at)
            if made or value < 0 or now - last >= window:
                value, last = 0, now
            value += 1
            if value >= limit:
                _SLOT.pack_into(self.buf, at, key, -1, last, now + block)
                return block
            _SLOT.pack_into(self.buf, at, key, value, last, last + window)
            return 0

    def blocked(self, name: bytes, now: int) -> int:
        key = self._key(name)
        with self._locked():
            at, _ = self._find(key, now, False)
            if at is None:
                return 0
            _, value, _, expires = _SLOT.unpack_from(self.buf, at)
            return expires - now if value < 0 and expires > now else 0

    def value(self, name: bytes, now: int) -> int | None:
        key = self._key(name)
        with self._locked():
            at, _ = self._find(key, now, False)
            return None if at is None else _SLOT.unpack_from(self.buf, at)[1]

    def used(self, now: int) -> int:
        n = 0
        with self._locked():
            for i in range(self.nslots):
                k, _, _, expires = _SLOT.unpack_from(self.buf, HEADER + i * SLOT)
                n += k != 0 and expires > now
        return n
