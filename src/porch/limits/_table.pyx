# cython: language_level=3, boundscheck=False, wraparound=False
"""The shared counter table, compiled: a fixed-size hash table in one memory mapping
that every worker of the machine maps, updated under a process-shared mutex.

The layout (little-endian, the same in porch/limits/table.py's pure-Python copy):

    header, HEADER bytes: magic, slot count, evictions, 16-byte hash seed, the mutex
    slots, SLOT bytes each: key (64-bit hash, 0 = free), value, last (ms), expires (ms)

The table is set-associative: a key lives in one of WAYS slots of its bucket, so a
lookup reads WAYS slots at most, whatever the load.  A new key takes a free slot
of its bucket, else an expired one, else the least recently used (smallest `last`):
a flood of new keys recycles slots, it never allocates.

The mutex is POSIX process-shared and robust: a worker killed while holding it
(SIGKILL in the middle of an update) hands it to the next locker with EOWNERDEAD,
which marks it consistent and goes on (at worst one slot holds a half-made update;
nginx force-unlocks its zones' mutexes after a worker crash in the same way).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport int64_t, uint64_t, uint8_t
from libc.string cimport memcpy, memset

cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_mutexattr_t:
        pass
    int PTHREAD_PROCESS_SHARED
    int PTHREAD_MUTEX_ROBUST
    int pthread_mutexattr_init(pthread_mutexattr_t *attr)
    int pthread_mutexattr_destroy(pthread_mutexattr_t *attr)
    int pthread_mutexattr_setpshared(pthread_mutexattr_t *attr, int pshared)
    int pthread_mutexattr_setrobust(pthread_mutexattr_t *attr, int robust)
    int pthread_mutex_init(pthread_mutex_t *mutex, const pthread_mutexattr_t *attr)
    int pthread_mutex_lock(pthread_mutex_t *mutex)
    int pthread_mutex_unlock(pthread_mutex_t *mutex)
    int pthread_mutex_consistent(pthread_mutex_t *mutex)

cdef extern from "<errno.h>":
    int EOWNERDEAD

ctypedef struct Header:
    uint64_t magic
    uint64_t nslots
    uint64_t evictions
    uint8_t seed[16]
    uint64_t reserved
    pthread_mutex_t mutex  # 40 bytes on x86-64 and arm64 glibc; MUTEX_ROOM checks it

ctypedef struct Slot:
    uint64_t key
    int64_t value
    int64_t last
    int64_t expires

cdef enum:
    WAYS = 8  # slots per bucket: a lookup reads at most these (4 cache lines)
cdef int64_t NEVER = 0x7fffffffffffffff
HEADER = 128  # bytes before the first slot
MUTEX_AT = 48
SLOT = 32
MAGIC = 0x3154435243524f50  # b"PORCRCT1" little-endian


def header_fits() -> bool:
    """The header struct fits in HEADER bytes with its mutex at MUTEX_AT."""
    cdef Header h
    return sizeof(Header) <= HEADER and <size_t>(<char*>&h.mutex - <char*>&h) == MUTEX_AT \
        and sizeof(Slot) == SLOT


cdef inline uint64_t _rotl(uint64_t x, int b) noexcept nogil:
    return (x << b) | (x >> (64 - b))


cdef uint64_t siphash24(uint64_t k0, uint64_t k1, const unsigned char *data, Py_ssize_t n) noexcept nogil:
    """SipHash-2-4 (Aumasson and Bernstein, 2012), little-endian words: a keyed hash
    whose outputs a client cannot steer into one bucket without the key.  A keyed
    BLAKE2b from hashlib cost 2.5 us a call; this ~50 ns."""
    cdef uint64_t v0 = k0 ^ 0x736f6d6570736575ULL
    cdef uint64_t v1 = k1 ^ 0x646f72616e646f6dULL
    cdef uint64_t v2 = k0 ^ 0x6c7967656e657261ULL
    cdef uint64_t v3 = k1 ^ 0x7465646279746573ULL
    cdef uint64_t m = 0
    cdef Py_ssize_t i, end = n - n % 8
    cdef int r
    for i in range(0, end, 8):
        memcpy(&m, data + i, 8)  # x86-64 and arm64 are little-endian
        v3 ^= m
        for r in range(2):
            v0 += v1; v1 = _rotl(v1, 13); v1 ^= v0; v0 = _rotl(v0, 32)
            v2 += v3; v3 = _rotl(v3, 16); v3 ^= v2
            v0 += v3; v3 = _rotl(v3, 21); v3 ^= v0
            v2 += v1; v1 = _rotl(v1, 17); v1 ^= v2; v2 = _rotl(v2, 32)
        v0 ^= m
    m = (<uint64_t>n) << 56
    for i in range(n - end):
        m |= (<uint64_t>data[end + i]) << (8 * i)
    v3 ^= m
    for r in range(2):
        v0 += v1; v1 = _rotl(v1, 13); v1 ^= v0; v0 = _rotl(v0, 32)
        v2 += v3; v3 = _rotl(v3, 16); v3 ^= v2
        v0 += v3; v3 = _rotl(v3, 21); v3 ^= v0
        v2 += v1; v1 = _rotl(v1, 17); v1 ^= v2; v2 = _rotl(v2, 32)
    v0 ^= m
    v2 ^= 0xff
    for r in range(4):
        v0 += v1; v1 = _rotl(v1, 13); v1 ^= v0; v0 = _rotl(v0, 32)
        v2 += v3; v3 = _rotl(v3, 16); v3 ^= v2
        v0 += v3; v3 = _rotl(v3, 21); v3 ^= v0
        v2 += v1; v1 = _rotl(v1, 17); v1 ^= v2; v2 = _rotl(v2, 32)
    return v0 ^ v1 ^ v2 ^ v3


def siphash(bytes key16, bytes data) -> int:
    """SipHash-2-4 of `data` under a 16-byte key (for tests)."""
    cdef uint64_t k0, k1
    memcpy(&k0, PyBytes_AS_STRING(key16), 8)
    memcpy(&k1, PyBytes_AS_STRING(key16) + 8, 8)
    return siphash24(k0, k1, <const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))


cdef class Table:
    """The table in `buffer` (a writable mapping of HEADER + nslots * SLOT bytes).
    `init()` once, by whoever made the mapping (zero-filled, as a new memfd is),
    before any other process uses it."""

    cdef object buffer, view
    cdef Header *head
    cdef Slot *slots
    cdef uint64_t buckets, k0, k1

    def __cinit__(self, buffer):
        cdef unsigned char[::1] view = buffer
        self.buffer = buffer
        self.view = view
        self.head = <Header*>&view[0]
        self.slots = <Slot*>&view[HEADER]
        self.buckets = 0

    def init(self, uint64_t nslots, bytes seed) -> None:
        cdef pthread_mutexattr_t attr
        if nslots % WAYS or nslots & (nslots - 1):
            raise ValueError("nslots must be a power of 2, at least 8")
        memset(self.head, 0, HEADER)  # the slots are zero already: not made resident here
        self.head.nslots = nslots
        for i in range(16):
            self.head.seed[i] = seed[i]
        pthread_mutexattr_init(&attr)
        pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED)
        pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST)
        if pthread_mutex_init(&self.head.mutex, &attr) != 0:
            raise OSError("pthread_mutex_init failed")
        pthread_mutexattr_destroy(&attr)
        self.head.magic = MAGIC

    def attach(self) -> None:
        if self.head.magic != MAGIC:
            raise ValueError("not a counter table (bad magic)")
        self.buckets = self.head.nslots // WAYS
        memcpy(&self.k0, self.head.seed, 8)
        memcpy(&self.k1, self.head.seed + 8, 8)

    cdef inline uint64_t _key(self, bytes key) noexcept:
        cdef uint64_t h = siphash24(self.k0, self.k1, <const unsigned char*>PyBytes_AS_STRING(key),
                                    PyBytes_GET_SIZE(key))
        return h if h else 1  # 0 marks a free slot

    @property
    def nslots(self) -> int:
        return self.head.nslots

    @property
    def seed(self) -> bytes:
        return bytes(self.head.seed[:16])

    @property
    def evictions(self) -> int:
        return self.head.evictions

    cdef inline void _lock(self) noexcept:
        if pthread_mutex_lock(&self.head.mutex) == EOWNERDEAD:
            pthread_mutex_consistent(&self.head.mutex)

    cdef inline void _unlock(self) noexcept:
        pthread_mutex_unlock(&self.head.mutex)

    cdef Slot *_find(self, uint64_t key, int64_t now, bint create, bint *made) noexcept:
        """The slot of `key` (made when `create`: free, else expired, else LRU)."""
        cdef Slot *base = self.slots + (key % self.buckets) * WAYS
        cdef Slot *s
        cdef Slot *free = NULL
        cdef Slot *expired = NULL
        cdef Slot *lru = NULL
        cdef Slot *victim
        cdef int i
        made[0] = False
        for i in range(WAYS):
            s = base + i
            if s.key == key:
                return s
            if s.key == 0:
                if free == NULL:
                    free = s
            elif s.expires <= now:
                if expired == NULL:
                    expired = s
            elif lru == NULL or s.last < lru.last:
                lru = s
        if not create:
            return NULL
        victim = free if free != NULL else expired
        if victim == NULL:
            victim = lru
            self.head.evictions += 1
        victim.key = key
        victim.value = 0
        victim.last = now
        victim.expires = now
        made[0] = True
        return victim

    def limit_req(self, bytes name, int64_t now, int64_t rate, int64_t burst, int64_t keep):
        """One request under a leaky bucket at `rate` milli-requests per second with
        `burst` milli-requests of room, as nginx's ngx_http_limit_req_lookup: the
        excess (milli-requests) it leaves when accepted (>= 0), or minus the excess
        it would have made when rejected (< 0, the state unchanged).  A key's state
        is kept `keep` ms at least after its last request (nginx: 60 s)."""
        cdef bint made
        cdef int64_t ms, excess
        cdef Slot *s
        cdef uint64_t key = self._key(name)
        self._lock()
        s = self._find(key, now, True, &made)
        if made:  # nginx: a new node is accepted with excess 0
            s.expires = now + keep
            self._unlock()
            return 0
        ms = now - s.last
        if ms < -60000:
            ms = 1
        elif ms < 0:
            ms = 0
        excess = s.value - rate * ms // 1000 + 1000
        if excess < 0:
            excess = 0
        if excess > burst:
            self._unlock()
            return -excess
        s.value = excess
        if ms:
            s.last = now
        s.expires = s.last + max(keep, (excess * 1000 + rate - 1) // rate)
        self._unlock()
        return excess

    def acquire(self, bytes name, int64_t now, int64_t limit) -> bool:
        """Count one more holder of `key` (a connection) unless `limit` are counted."""
        cdef bint made
        cdef Slot *s
        cdef uint64_t key = self._key(name)
        cdef bint ok
        self._lock()
        s = self._find(key, now, True, &made)
        ok = s.value < limit
        if ok:
            s.value += 1
            s.last = now
            s.expires = NEVER
        elif made:
            s.key = 0
        self._unlock()
        return ok

    def release(self, bytes name, int64_t now) -> None:
        """One holder of `key` less; the slot is freed at zero."""
        cdef bint made
        cdef Slot *s
        cdef uint64_t key = self._key(name)
        self._lock()
        s = self._find(key, now, False, &made)
        if s != NULL:
            s.value -= 1
            if s.value <= 0:
                s.key = 0
                s.value = 0
        self._unlock()

    def failed(self, bytes name, int64_t now, int64_t limit, int64_t window, int64_t block) -> int:
        """Count one failure of `key` (a failed login) in a fixed window of `window` ms
        starting at its first failure; at `limit` failures the key is blocked for
        `block` ms (value -1, `expires` the end) and counting restarts after it.  The
        block's length in ms when this failure starts it, else 0."""
        cdef bint made
        cdef Slot *s
        cdef uint64_t key = self._key(name)
        self._lock()
        s = self._find(key, now, True, &made)
        if made or s.value < 0 or now - s.last >= window:
            s.value = 0
            s.last = now
        s.value += 1
        if s.value >= limit:
            s.value = -1
            s.expires = now + block
            self._unlock()
            return block
        s.expires = s.last + window
        self._unlock()
        return 0

    def blocked(self, bytes name, int64_t now) -> int:
        """The ms `key` stays blocked by `failed` (0: not blocked)."""
        cdef bint made
        cdef Slot *s
        cdef int64_t left = 0
        cdef uint64_t key = self._key(name)
        self._lock()
        s = self._find(key, now, False, &made)
        if s != NULL and s.value < 0 and s.expires > now:
            left = s.expires - now
        self._unlock()
        return left

    def value(self, bytes name, int64_t now) -> int | None:
        """The value stored for `key` (None: no slot), for tests and stats."""
        cdef bint made
        cdef Slot *s
        cdef uint64_t key = self._key(name)
        self._lock()
        s = self._find(key, now, False, &made)
        result = None if s == NULL else s.value
        self._unlock()
        return result

    def used(self, int64_t now) -> int:
        """Slots holding a live (unexpired) key."""
        cdef uint64_t i, n = 0
        self._lock()
        for i in range(self.head.nslots):
            if self.slots[i].key != 0 and self.slots[i].expires > now:
                n += 1
        self._unlock()
        return n
