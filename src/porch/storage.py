"""Shared state behind one interface: certificates, ACME accounts and challenges, locks.

Workers hold no state another worker must see; what they share goes through a
`Storage`.  `FileStorage` keeps it under `state_dir` (the default, one machine);
a Redis-backed storage with the same methods comes with clustering.

Keys are relative paths with "/" separators ("certs/example.org/fullchain.pem").
Values are bytes.  Writes are atomic (write to a temporary file, fsync, rename), so
a reader sees the old value or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path


class StorageError(Exception):
    """A storage operation failed; the message says which key and why."""


class Storage:
    """The interface.  Every method may raise StorageError."""

    def get(self, key: str) -> bytes | None:  # None when the key does not exist
        raise NotImplementedError

    def put(self, key: str, data: bytes, mode: int = 0o600) -> None:
        raise NotImplementedError

    def delete(self, key: str) -> None:  # no error when it does not exist
        raise NotImplementedError

    def list(self, prefix: str) -> list[str]:  # keys directly under `prefix`, sorted
        raise NotImplementedError

    def modified(self, key: str) -> float | None:  # a change stamp, None if absent
        raise NotImplementedError

    def lock(self, key: str, timeout: float = 60.0) -> contextlib.AbstractContextManager[None]:
        """Hold `key` exclusively (across processes) while the block runs; raise
        StorageError when it cannot be taken within `timeout` seconds."""
        raise NotImplementedError


class FileStorage(Storage):
    """Files under one directory.  Directories are created 0700, files 0600 unless
    `mode` says otherwise (public certificates may be 0644)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        """The file behind `key`, for daemons and hooks that read files directly."""
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts) or key.startswith("/"):
            raise StorageError(f"storage key {key!r} is not a relative path of plain names")
        return self.root.joinpath(*parts)

    def get(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StorageError(f"cannot read {self.path(key)}: {e.strerror}") from None

    def put(self, key: str, data: bytes, mode: int = 0o600) -> None:
        target = self.path(key)
        # Unique per process and thread: two threads writing one key (the ACME manager
        # registering from two site tasks) must not rename each other's file away.
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            try:
                os.fchmod(fd, mode)  # O_CREAT's mode is filtered by the umask
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, target)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StorageError(f"cannot write {target}: {e.strerror}") from None

    def delete(self, key: str) -> None:
        try:
            self.path(key).unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise StorageError(f"cannot delete {self.path(key)}: {e.strerror}") from None

    def list(self, prefix: str) -> list[str]:
        base = self.path(prefix) if prefix else self.root
        try:
            names = sorted(n for n in os.listdir(base) if not n.startswith("."))
        except FileNotFoundError:
            return []
        except OSError as e:
            raise StorageError(f"cannot list {base}: {e.strerror}") from None
        return [f"{prefix}/{n}" if prefix else n for n in names]

    def modified(self, key: str) -> float | None:
        try:
            st = self.path(key).stat()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StorageError(f"cannot stat {self.path(key)}: {e.strerror}") from None
        return st.st_mtime_ns + st.st_ino  # a rename changes the inode even within one tick

    @contextlib.contextmanager
    def lock(self, key: str, timeout: float = 60.0) -> Iterator[None]:
        # flock on a lock file: released by the kernel if the holder dies, so a
        # crashed worker never leaves a name locked.
        path = self.path(f"locks/{key.replace('/', '_')}.lock")
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise StorageError(f"cannot open lock file {path}: {e.strerror}") from None
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as e:
                    if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                        raise StorageError(f"cannot lock {path}: {e.strerror}") from None
                if time.monotonic() >= deadline:
                    raise StorageError(f"lock {key!r} still held by another process after {timeout:g}s")
                time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
