"""The shared counter table (limits/table.py, limits/_table.pyx): nginx's limit_req
arithmetic to the milli-request, connection counts, the bound on its memory, and two
processes counting in one table."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest

from porch.limits import table as tables
from porch.limits.table import SharedTable, _PyTable


def nginx_limit_req(state: dict, key: str, now: int, rate: int, burst: int) -> tuple[str, int]:
    """ngx_http_limit_req_lookup with one limit (account = 1), as in nginx 1.22's
    source: a new node is accepted with excess 0; an existing one leaks
    rate * ms / 1000 (integer division) since `last` and gains 1000; over burst it
    is rejected and left alone; `last` moves only when ms != 0."""
    node = state.get(key)
    if node is None:
        state[key] = [0, now]
        return "ok", 0
    excess0, last = node
    ms = now - last
    if ms < -60000:
        ms = 1
    elif ms < 0:
        ms = 0
    excess = excess0 - rate * ms // 1000 + 1000
    if excess < 0:
        excess = 0
    if excess > burst:
        return "busy", excess
    node[0] = excess
    if ms:
        node[1] = now
    return "ok", excess


def make(kind: str, slots: int = 1024) -> SharedTable:
    t = SharedTable.create(slots)
    if kind == "python":
        t.core = _PyTable(_mapping(t), t.fd)
        t.core.attach()
    return t


def _mapping(t: SharedTable):
    import mmap
    return mmap.mmap(t.fd, t.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)


KINDS = ["compiled", "python"]


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_the_compiled_table_is_built():
    from porch.limits import _table  # noqa: F401  (the suite runs compiled)
    assert type(SharedTable.create(64).core).__name__ == "Table"


@pytest.mark.parametrize("kind", KINDS)
def test_forty_requests_at_once_at_10r_s_burst_20_pass_21(kind):
    t = make(kind)
    got = [t.limit_req(b"k", 5000, 10_000, 20_000) >= 0 for _ in range(40)]
    assert got == [True] * 21 + [False] * 19


@pytest.mark.parametrize("kind", KINDS)
def test_random_sequences_match_nginx(kind):
    rnd = random.Random(13)
    for rate, burst in ((10_000, 20_000), (1000 * 30 // 60, 5000), (16, 0), (100_000, 0), (2000, 3000)):
        t = make(kind)
        state: dict = {}
        now = 1_000_000
        for _ in range(3000):
            now += rnd.choice((0, 0, 1, 3, 17, 50, 99, 250, 1000, 61_000))
            key = rnd.choice("abc")
            expect, excess = nginx_limit_req(state, key, now, rate, burst)
            got = t.limit_req(key.encode(), now, rate, burst)
            assert (got >= 0, abs(got)) == (expect == "ok", excess), (rate, burst, now, key)


@pytest.mark.parametrize("kind", KINDS)
def test_the_bucket_leaks_at_the_rate(kind):
    t = make(kind)
    for _ in range(21):
        assert t.limit_req(b"k", 0, 10_000, 20_000) >= 0
    assert t.limit_req(b"k", 0, 10_000, 20_000) == -21_000
    assert t.limit_req(b"k", 99, 10_000, 20_000) < 0  # 990 leaked: not a whole request yet
    assert t.limit_req(b"k", 100, 10_000, 20_000) == 20_000  # 1000 leaked: one more
    # drained: nginx adds 1000 before clamping at 0, so the first after a pause is free
    assert t.limit_req(b"k", 2300, 10_000, 20_000) == 0
    assert t.limit_req(b"k", 2300, 10_000, 20_000) == 1000


@pytest.mark.parametrize("kind", KINDS)
def test_connection_counts(kind):
    t = make(kind)
    assert [t.acquire(b"c", 3) for _ in range(4)] == [True, True, True, False]
    assert t.value(b"c") == 3
    t.release(b"c")
    assert t.acquire(b"c", 3) and not t.acquire(b"c", 3)
    for _ in range(3):
        t.release(b"c")
    assert t.value(b"c") is None  # the slot is free again
    t.release(b"unknown")  # no error, no negative count
    assert t.value(b"unknown") is None


@pytest.mark.parametrize("kind", KINDS)
def test_failures_block_at_the_limit_within_the_window(kind):
    """The login throttle's counter (policies/basic_auth.py): a window from the first
    failure; the limit-th starts a block, after which counting starts again."""
    t = make(kind)
    assert [t.failed(b"f", 1000 + i, 3, 60_000, 60_000) for i in range(3)] == [0, 0, 60_000]
    assert t.blocked(b"f", 1002) == 60_000 and t.blocked(b"f", 61_001) == 1
    assert t.blocked(b"f", 61_002) == 0 and t.blocked(b"other", 1002) == 0
    assert t.failed(b"f", 61_002, 3, 60_000, 60_000) == 0  # a new window
    assert t.failed(b"g", 0, 3, 60_000, 60_000) == 0
    assert t.failed(b"g", 60_000, 3, 60_000, 60_000) == 0  # the first is a window old: forgotten
    assert t.failed(b"g", 60_001, 3, 60_000, 60_000) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_100k_keys_stay_in_the_fixed_table_and_evict_the_oldest(kind):
    slots = 4096 if kind == "python" else 65536
    t = make(kind, slots)
    size = os.fstat(t.fd).st_size
    now = 10_000
    for _ in range(21):
        t.limit_req(b"first", now, 10_000, 20_000)
    assert t.limit_req(b"first", now, 10_000, 20_000) < 0  # exhausted
    n = 25_000 if kind == "python" else 100_000
    rss_before = rss_kib()
    for i in range(n):
        now += i % 2  # time moves on: "first" is the least recently used
        t.limit_req(b"flood %d" % i, now, 10_000, 20_000)
    assert os.fstat(t.fd).st_size == size  # nothing grew
    if kind == "compiled":  # nor did the process: at most the table's own pages
        assert rss_kib() - rss_before <= size // 1024 + 1024, (rss_before, rss_kib())
    assert t.used() <= slots
    assert t.evictions >= n - slots
    # within nginx's 60 s retention, yet evicted: its state is gone, a fresh bucket
    assert t.limit_req(b"first", now, 10_000, 20_000) == 0
    # the newest keys are still there
    assert t.value(b"flood %d" % (n - 1)) == 0


def _count_in_child(fd: int, kind: str, n: int) -> None:
    t = SharedTable.attach(fd)
    if kind == "python":
        t.core = _PyTable(_mapping(t), fd)
        t.core.attach()
    for _ in range(n):
        assert t.acquire(b"shared", 10**9)


@pytest.mark.parametrize("kind", KINDS)
def test_processes_count_in_one_table(kind):
    """Two spawned interpreters (as workers are) and this one, 3 x 20,000 increments
    under the lock: none lost."""
    t = make(kind)
    os.set_inheritable(t.fd, True)
    code = ("import sys; from tests.unit.test_limits_table import _count_in_child; "
            f"_count_in_child({t.fd}, {kind!r}, 20000)")
    procs = [subprocess.Popen([sys.executable, "-c", code], pass_fds=(t.fd,),
                              cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
             for _ in range(2)]
    _count_in_child(t.fd, kind, 20000)
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    assert t.value(b"shared") == 60000


def test_siphash_matches_the_reference_vectors():
    """SipHash-2-4's paper, appendix A: key 00..0f, messages 00, 00 01, ... (here the
    empty one, 7 and 8 bytes: the tail and a full word)."""
    from porch.limits._table import siphash
    key = bytes(range(16))
    assert siphash(key, b"") == 0x726FDB47DD0E0E31
    assert siphash(key, bytes(range(7))) == 0xAB0200F58B01D137
    assert siphash(key, bytes(range(8))) == 0x93F5F5799A932462
    assert siphash(key, bytes(range(15))) == 0xA129CA6149BE45E5


def test_tables_have_their_own_hash_keys_and_workers_share_them():
    a, b = SharedTable.create(64), SharedTable.create(64)
    assert a.seed != b.seed
    a.acquire(b"1.2.3.4", 5)
    assert SharedTable.attach(a.fd).value(b"1.2.3.4") == 1


def test_local_table_is_one_per_process():
    assert tables.local_table() is tables.local_table()
