"""htpasswd files as Apache's `htpasswd` writes them: read, checked, re-read when changed.

One `user:hash` a line (`#` comments and blank lines skipped; a third `:field` is a
comment, as nginx's auth_basic_user_file reads it).  The hash formats, with the
htpasswd flag that writes each:

- bcrypt `$2y$`, `$2b$`, `$2a$` (-B): the `bcrypt` package;
- `$apr1$` (-m, htpasswd's default): Apache's MD5 variant;
- `{SHA}` (-s): base64 of the password's SHA-1, unsalted; `{SSHA}`: salted SHA-1
  (OpenLDAP's slappasswd, which nginx reads too);
- crypt `$1$`, `$5$`, `$6$` (glibc's MD5, SHA-256 and SHA-512 crypt: `openssl passwd
  -6`, `mkpasswd`) and DES crypt (-d: 13 characters, only 8 of the password count);
- plaintext (-p, or nginx's `{PLAIN}` prefix): accepted, with a warning at `porch check`.

Any other `$id$` or `{SCHEME}` is refused at load: reading an unknown hash as a
plaintext password would let anyone who saw the file log in with the hash itself.

The crypt formats go through passlib, not the standard library's `crypt` module,
which is deprecated (PEP 594) and gone in Python 3.13.  passlib 1.7.4 works on
Python 3.11 for these (checked: it uses `crypt` as a backend where it exists and its
own pure-Python code where not); what breaks is its bcrypt wrapper with bcrypt 4.1+,
so bcrypt hashes are checked with `bcrypt` itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import warnings
from dataclasses import dataclass
from functools import cache
from typing import Any, Callable

# Formats whose check costs milliseconds or more (bcrypt at cost 10: ~60 ms; the
# crypt ones run 1,000 to 5,000 rounds): verified off the event loop.
SLOW = frozenset({"bcrypt", "apr1", "md5_crypt", "sha256_crypt", "sha512_crypt", "des_crypt"})

_DES = re.compile(r"[./0-9A-Za-z]{13}")
_ID = re.compile(r"\$([0-9a-z]+)\$")
_BRACE = re.compile(r"\{([A-Za-z0-9.-]+)\}")
_BY_ID = {"2y": "bcrypt", "2b": "bcrypt", "2a": "bcrypt", "apr1": "apr1", "1": "md5_crypt",
          "5": "sha256_crypt", "6": "sha512_crypt"}
_BY_BRACE = {"SHA": "sha", "SSHA": "ssha", "PLAIN": "plain"}
KNOWN = ("bcrypt $2y$/$2b$/$2a$ (htpasswd -B), $apr1$ (htpasswd -m), {SHA} (htpasswd -s), {SSHA},"
         " crypt $1$/$5$/$6$, DES crypt (htpasswd -d), plaintext (htpasswd -p)")


class HtpasswdError(ValueError):
    """A file that cannot be used: the message names the file (and line) and the fix."""


@dataclass(frozen=True)
class Entry:
    user: str
    hash: str
    scheme: str  # a key of _VERIFY


def scheme_of(hash_: str) -> str | None:
    """The format of a hash as htpasswd writes it, or None (unknown: refused)."""
    m = _ID.match(hash_)
    if m:
        return _BY_ID.get(m.group(1))
    m = _BRACE.match(hash_)
    if m:
        return _BY_BRACE.get(m.group(1).upper())
    if hash_.startswith("$"):
        return None
    return "des_crypt" if _DES.fullmatch(hash_) else "plain"


def parse(text: str, path: str) -> tuple[dict[str, Entry], list[str]]:
    """The entries of a file's text (the first line of a user wins, as in Apache and
    nginx), and its warnings; HtpasswdError for a line that is not `user:hash`."""
    entries: dict[str, Entry] = {}
    warned: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, colon, rest = line.partition(":")
        hash_ = rest.split(":", 1)[0]
        where = f"{path}:{number}"
        if not colon or not user or not hash_:
            raise HtpasswdError(f"{where}: {_shown(line)} is not user:hash (make lines with"
                                " `htpasswd -B FILE USER` or `porch hash-password --user USER`)")
        if any(ord(c) < 32 or c == "\x7f" for c in user):
            raise HtpasswdError(f"{where}: the user name holds a control character; rename the user")
        scheme = scheme_of(hash_)
        if scheme is None:
            raise HtpasswdError(f"{where}: user {user}: {_shown(hash_[:12])}... is not a hash format"
                                f" Porch reads ({KNOWN}); set the password again with"
                                f" `htpasswd -B {path} {user}`")
        if scheme == "plain":
            warned.append(f"{where}: user {user} has a plaintext password (anyone who reads the"
                          f" file can log in); hash it: htpasswd -B {path} {user}")
        elif scheme == "des_crypt":
            warned.append(f"{where}: user {user} has a DES crypt hash, which checks only the first 8"
                          f" characters of the password; hash it again: htpasswd -B {path} {user}")
        entries.setdefault(user, Entry(user, hash_, scheme))
    return entries, warned


def read(path: str) -> tuple[dict[str, Entry], list[str], tuple[int, int, int, int]]:
    """A file's entries, warnings and identity (what `changed` compares); HtpasswdError
    when it is missing, unreadable or not htpasswd."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
    except FileNotFoundError:
        raise HtpasswdError(f"{path} does not exist; create it with `htpasswd -c -B {path} USER`"
                            " or `porch hash-password --user USER > FILE`") from None
    except IsADirectoryError:
        raise HtpasswdError(f"{path} is a directory; name the htpasswd file in it") from None
    except OSError as err:
        raise HtpasswdError(f"{path} cannot be read ({err.strerror}); let the user porch runs as"
                            " read it (chmod/chown)") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise HtpasswdError(f"{path}:{line}: not UTF-8 text; write the file as UTF-8") from None
    entries, warned = parse(text, path)
    return entries, warned, stamp(st)


def stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    """What tells a changed file: a rewrite in place changes mtime and size, a rename
    over it (htpasswd writes a temporary file and renames it) the inode."""
    return (st.st_ino, st.st_dev, st.st_mtime_ns, st.st_size)


class Watched:
    """One htpasswd file as it is now: re-read when it changes, looked at (one stat)
    at most once a second, so editing it takes effect without a reload.

    A file that turns missing or broken fails closed: no user gets in until it is
    fixed (logged once per change), rather than keeping passwords the admin may have
    just removed.  A file caught half-written is read whole a second later."""

    __slots__ = ("path", "entries", "_stamp", "_next", "_log")

    def __init__(self, path: str, log: Callable[[str], None], now: float) -> None:
        self.path = path
        self._log = log
        self.entries: dict[str, Entry] = {}
        self._stamp: tuple[int, ...] | None = (-1,)  # never read
        self._next = 0.0
        self._refresh(now)

    def get(self, user: str, now: float) -> Entry | None:
        if now >= self._next:
            self._refresh(now)
        return self.entries.get(user)

    def _refresh(self, now: float) -> None:
        self._next = now + 1.0
        try:
            current = stamp(os.stat(self.path))
        except OSError:
            current = None
        if current is not None and current == self._stamp:
            return
        try:
            self.entries, _, self._stamp = read(self.path)
        except HtpasswdError as err:
            if self._stamp != current:  # once per state of the file
                self._log(f"htpasswd file unusable, every login refused until it is fixed: {err}")
            self.entries, self._stamp = {}, current


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


# -- verification -------------------------------------------------------------------


def verify(entry: Entry, password: bytes) -> bool:
    """Whether `password` (the bytes the client sent) matches the entry's hash.  May
    take milliseconds (SLOW formats): call it off the event loop for those."""
    try:
        return _VERIFY[entry.scheme](password, entry.hash)
    except ValueError:  # a hash passlib or bcrypt finds malformed: no password matches it
        return False


def _bcrypt(password: bytes, hash_: str) -> bool:
    import bcrypt

    # bcrypt reads 72 bytes of a password; Apache's htpasswd and crypt_blowfish ignore
    # the rest, and bcrypt 5 refuses longer ones: cut as the hash's maker did.
    return bcrypt.checkpw(password[:72], hash_.encode())


def _sha(password: bytes, hash_: str) -> bool:
    expected = base64.b64encode(hashlib.sha1(password).digest()).decode()
    return hmac.compare_digest(expected, hash_[5:])


def _ssha(password: bytes, hash_: str) -> bool:
    try:
        raw = base64.b64decode(hash_[6:], validate=True)
    except ValueError:
        return False
    digest, salt = raw[:20], raw[20:]
    return len(digest) == 20 and hmac.compare_digest(hashlib.sha1(password + salt).digest(), digest)


def _plain(password: bytes, hash_: str) -> bool:
    stored = hash_[7:] if hash_[:7].upper() == "{PLAIN}" else hash_
    return hmac.compare_digest(password, stored.encode())


@cache
def _passlib() -> Any:
    # passlib 1.7.4 imports the standard library's crypt module when it exists (an
    # optional faster backend), which warns on Python 3.11+; nothing here uses it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from passlib import hash as passlib_hash
    return passlib_hash


def _with_passlib(name: str) -> Callable[[bytes, str], bool]:
    def check(password: bytes, hash_: str) -> bool:
        return getattr(_passlib(), name).verify(password, hash_)

    return check


_VERIFY: dict[str, Callable[[bytes, str], bool]] = {
    "bcrypt": _bcrypt,
    "apr1": _with_passlib("apr_md5_crypt"),
    "md5_crypt": _with_passlib("md5_crypt"),
    "sha256_crypt": _with_passlib("sha256_crypt"),
    "sha512_crypt": _with_passlib("sha512_crypt"),
    "des_crypt": _with_passlib("des_crypt"),
    "sha": _sha,
    "ssha": _ssha,
    "plain": _plain,
}


def bcrypt_line(user: str, password: bytes, rounds: int = 10) -> str:
    """An htpasswd line with a bcrypt hash, as `htpasswd -B -C rounds` writes it ($2y$)."""
    import bcrypt

    hashed = bcrypt.hashpw(password[:72], bcrypt.gensalt(rounds)).decode()
    # $2b$ and $2y$ are the same algorithm; Apache writes $2y$ (and older Apache
    # builds and nginx's crypt() read only that one).
    return f"{user}:$2y${hashed[4:]}"
