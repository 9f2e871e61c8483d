"""FileStorage: atomic writes, modes, listing, key checks, cross-process locks."""

from __future__ import annotations

import multiprocessing
import stat
import time

import pytest

from porch.storage import FileStorage, StorageError


def test_put_get_delete_and_modes(tmp_path):
    s = FileStorage(tmp_path / "state")
    assert s.get("certs/a/key.pem") is None
    s.put("certs/a/key.pem", b"secret")
    s.put("certs/a/cert.pem", b"public", mode=0o644)
    assert s.get("certs/a/key.pem") == b"secret"
    assert stat.S_IMODE(s.path("certs/a/key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE(s.path("certs/a/cert.pem").stat().st_mode) == 0o644
    assert stat.S_IMODE(s.path("certs/a").stat().st_mode) == 0o700
    assert s.list("certs") == ["certs/a"]
    assert s.list("certs/a") == ["certs/a/cert.pem", "certs/a/key.pem"]
    before = s.modified("certs/a/key.pem")
    s.put("certs/a/key.pem", b"rotated")
    assert s.modified("certs/a/key.pem") != before
    s.delete("certs/a/key.pem")
    s.delete("certs/a/key.pem")  # twice is fine
    assert s.get("certs/a/key.pem") is None and s.modified("certs/a/key.pem") is None
    assert not [p for p in s.path("certs/a").iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("key", ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a"])
def test_keys_cannot_escape_the_root(tmp_path, key):
    with pytest.raises(StorageError, match="not a relative path"):
        FileStorage(tmp_path).get(key)


def _hold(root: str, ready, seconds: float) -> None:
    with FileStorage(root).lock("issue/example.org"):
        ready.set()
        time.sleep(seconds)


def test_lock_excludes_other_processes_and_times_out(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(tmp_path), ready, 1.0))
    holder.start()
    try:
        assert ready.wait(10)
        s = FileStorage(tmp_path)
        with pytest.raises(StorageError, match="still held"):
            with s.lock("issue/example.org", timeout=0.2):
                pass
        t0 = time.monotonic()
        with s.lock("issue/example.org", timeout=10):
            waited = time.monotonic() - t0
        assert waited > 0.3  # it waited for the holder to let go
    finally:
        holder.join(10)
    assert holder.exitcode == 0


def test_threads_writing_one_key_do_not_trip_over_each_other(tmp_path):
    # The ACME manager issues sites in parallel threads of one process.
    import threading

    s = FileStorage(tmp_path)
    errors = []

    def write(i: int) -> None:
        try:
            for _ in range(50):
                s.put("acme/accounts/x/account.json", b"%d" % i)
        except StorageError as e:
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert s.get("acme/accounts/x/account.json") in {b"0", b"1", b"2", b"3"}
    assert s.list("acme/accounts/x") == ["acme/accounts/x/account.json"]  # no temporary left
