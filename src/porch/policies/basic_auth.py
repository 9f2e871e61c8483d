"""`basic_auth`: HTTP Basic authentication (RFC 7617) against an htpasswd file.

    basic_auth = { htpasswd = "/etc/porch/htpasswd", realm = "Radicale",
                   user_header = "X-Remote-User", pass_authorization = true }
    basic_auth = false      # on a route: a public path under a protected site

- Missing, malformed or wrong credentials: 401 with `WWW-Authenticate: Basic
  realm="...", charset="UTF-8"` (RFC 7617 2.1: the client sends UTF-8).  The scheme
  word is read in any case (RFC 9110 11.1).  Failures are logged with the user name,
  as nginx logs "password mismatch"; a request with no credentials (every browser's
  first) is not.
- The user let in goes upstream in `user_header` (Radicale's http_x_remote_user,
  Nextcloud, Gitea's reverse-proxy auth) and in ctx.vars["remote_user"] (the access
  log, `{remote_user}` in header rules).  The client's own field of that name never
  arrives: identity fields are dropped before any policy runs (server/client.py).
- Authorization goes upstream as it came (Radicale's guide needs it) unless
  `pass_authorization = false`.
- bcrypt costs ~60 ms a check at cost 10: checks of slow formats run in a small
  thread pool (bcrypt releases the GIL), and a success is remembered for a minute,
  keyed by a keyed hash of the user, password and file entry, so a browser's next
  requests are answered without a thread hop.  Changing the password or the file
  entry changes the key.
- Failed logins are counted per client address: after 10 within a minute, 429 with
  Retry-After for a minute, whatever the credentials (else the guessing goes on),
  logged once when it starts.  The count lives in the machine's shared counter table
  (limits/table.py), so it holds across workers.  forward_auth needs no throttle of
  its own: the auth service sees every attempt and owns that policy (Authelia's
  regulation, Authentik's reputation), as with nginx's auth_request.
"""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import ipaddress
import math
import os
import re
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from porch.http.model import Headers, RequestHead
from porch.limits.table import CounterTable, local_table, now_ms
from porch.pipeline import Context, Policy, Reply
from porch.policies import htpasswd

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_KEYS = ("htpasswd", "realm", "user_header", "pass_authorization")
_EXAMPLE = '{ htpasswd = "/etc/porch/htpasswd", realm = "...", user_header = "X-Remote-User" }'
# Fields a user_header may not be: Porch writes them, or they carry the credentials.
_RESERVED = frozenset({"host", "authorization", "content-length", "transfer-encoding", "connection",
                       "keep-alive", "te", "trailer", "upgrade", "proxy-connection", "cookie"})

# The login throttle (issue 13): nginx has none; fail2ban's default is 5 in 10 minutes.
FAILURES = 10
WINDOW = 60.0
BLOCK = 60.0


@dataclass(frozen=True)
class BasicAuthConfig:
    htpasswd: str
    realm: str = "Restricted"
    user_header: str | None = None
    pass_authorization: bool = True
    users: int = 0  # in the file at load, for `porch check`
    warnings: tuple[str, ...] = ()  # the file's (plaintext passwords), for `porch check`


def parse(value: Any) -> BasicAuthConfig | None:
    if value is False:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{value!r} is not a table; write basic_auth = {_EXAMPLE}, or false")
    unknown = [key for key in value if key not in _KEYS]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not one of {', '.join(_KEYS)}")
    path = value.get("htpasswd")
    if not isinstance(path, str) or not path:
        raise ValueError(f'htpasswd is missing; name the password file: basic_auth = {_EXAMPLE}')
    if not os.path.isabs(path):
        raise ValueError(f'htpasswd: "{path}" is relative; write an absolute path')
    realm = value.get("realm", "Restricted")
    if not isinstance(realm, str) or any(c in realm for c in '"\\') or any(ord(c) < 32 for c in realm):
        raise ValueError(f'realm: {realm!r} is not a string without quotes, backslashes or'
                         ' control characters; write realm = "My app"')
    header = value.get("user_header")
    if header is not None and (not isinstance(header, str) or not _TOKEN.fullmatch(header)):
        raise ValueError(f'user_header: {header!r} is not a header name; write user_header = "X-Remote-User"')
    if header is not None and header.lower() in _RESERVED:
        raise ValueError(f"user_header: {header} carries something else; use a name of its own,"
                         ' such as "X-Remote-User"')
    passing = value.get("pass_authorization", True)
    if not isinstance(passing, bool):
        raise ValueError(f"pass_authorization: {passing!r} is not true or false")
    try:
        entries, warned, _ = htpasswd.read(path)
    except htpasswd.HtpasswdError as err:
        raise ValueError(f"htpasswd: {err}") from None
    return BasicAuthConfig(path, realm, header, passing, len(entries), tuple(warned))


def dump(config: BasicAuthConfig | None) -> dict[str, Any] | bool:
    """The value as porch.toml spells it (`porch check --dump`)."""
    if config is None:
        return False
    out: dict[str, Any] = {"htpasswd": config.htpasswd, "realm": config.realm}
    if config.user_header:
        out["user_header"] = config.user_header
    out["pass_authorization"] = config.pass_authorization
    return out


def describe(config: BasicAuthConfig | None) -> str:
    if config is None:
        return "off"
    text = f'{config.htpasswd} ({config.users} users), realm "{config.realm}"'
    if config.user_header:
        text += f", user in {config.user_header}"
    return text + ("" if config.pass_authorization else ", Authorization not passed")


def warnings(config: BasicAuthConfig | None) -> tuple[str, ...]:
    return () if config is None else config.warnings


def identity_headers(config: BasicAuthConfig | None) -> tuple[str, ...]:
    """The field Porch sets from the login: never taken from a client (server/client.py)."""
    return (config.user_header,) if config is not None and config.user_header else ()


def build(config: BasicAuthConfig | None, env: Any) -> Policy | None:
    if config is None:
        return None
    shared = env.shared.get("basic_auth")
    if shared is None:
        shared = env.shared["basic_auth"] = Shared(env.error_log, getattr(env, "counters", None))
    # The upstream_request hook only where it has work: a route whose only such hook
    # is the forwarding headers' builds the upstream head without a RequestHead
    # (server/proxy.py), ~5,000 instructions a request less (bench/hotpath.py).
    kind = BasicAuthUpstream if config.user_header or not config.pass_authorization else BasicAuth
    return kind(config, shared)


# -- the parts every basic_auth of a load shares -----------------------------------


class VerifiedCache:
    """Successful checks, for `ttl` seconds, at most `size` of them (least recently
    used first out): a keyed BLAKE2 of the Authorization value -> the htpasswd entry it
    was checked against.  The key is made per process: what is held in memory is no
    hash anyone can test guesses on.  A hit counts only while the file still holds that
    very entry (BasicAuth's Gate): a re-read file, a new password, and it is checked
    again."""

    def __init__(self, size: int = 1024, ttl: float = 60.0) -> None:
        self.size = size
        self.ttl = ttl
        # keyed once: a copy per token skips the key's own compression and the
        # keyword parsing (the same digest as blake2b(data, key=..., digest_size=32))
        self._keyed = hashlib.blake2b(key=os.urandom(32), digest_size=32)
        self._until: OrderedDict[bytes, tuple[float, htpasswd.Entry]] = OrderedDict()

    def token(self, authorization: bytes) -> bytes:
        h = self._keyed.copy()
        h.update(authorization)
        return h.digest()

    def fresh(self, token: bytes, now: float) -> htpasswd.Entry | None:
        """The entry a success of `token` was checked against, within its ttl."""
        found = self._until.get(token)
        if found is None:
            return None
        until, entry = found
        if until < now:
            del self._until[token]
            return None
        self._until.move_to_end(token)
        return entry

    def add(self, token: bytes, entry: htpasswd.Entry, now: float) -> None:
        self._until[token] = (now + self.ttl, entry)
        self._until.move_to_end(token)
        if len(self._until) > self.size:
            self._until.popitem(last=False)


class Throttle:
    """Failed logins per client key, in the machine's shared counter table
    (limits/table.py, the one rate_limit and the connection limits use): every worker
    counts together, as SO_REUSEPORT spreads one client's connections over them.
    After `limit` failures within `window` seconds of the first, the key is blocked for
    `block` seconds.  The table is fixed-size (least recently used slots recycled): a
    flood of addresses costs no memory, at the price of forgetting."""

    __slots__ = ("table", "limit", "window", "block")

    def __init__(self, table: CounterTable, limit: int = FAILURES, window: float = WINDOW,
                 block: float = BLOCK) -> None:
        self.table = table
        self.limit = limit
        self.window = int(window * 1000)
        self.block = int(block * 1000)

    def blocked(self, key: str, now: int) -> float:
        """Seconds the key stays blocked (0.0: not blocked); `now` in ms (now_ms)."""
        return self.table.blocked(login_key(key), now) / 1000

    def failed(self, key: str, now: int) -> bool:
        """Count a failure; True when it is the one that starts a block."""
        return bool(self.table.failed(login_key(key), now, self.limit, self.window, self.block))


def login_key(key: str) -> bytes:
    """A client key's name in the counter table (shared with the other limits)."""
    return b"login:" + key.encode()


def client_key(ip: str) -> str:
    """The throttle's key: the address, or its /64 for IPv6 (one host's usual share:
    walking the 2^64 addresses of one's own prefix must not reset the count)."""
    if ":" not in ip:
        return ip
    try:
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    except ValueError:
        return ip


class Shared:
    """What every basic_auth of one load shares: the files (each read once), the
    cache, the throttle and the checking threads."""

    def __init__(self, error_log: Any, counters: CounterTable | None = None) -> None:
        self.error_log = error_log
        self.files: dict[str, htpasswd.Watched] = {}
        self.cache = VerifiedCache()
        self.throttle = Throttle(counters or local_table())
        self._pool: ThreadPoolExecutor | None = None

    def file(self, path: str) -> htpasswd.Watched:
        found = self.files.get(path)
        if found is None:
            found = self.files[path] = htpasswd.Watched(path, self.error_log.error, time.monotonic())
        return found

    def pool(self) -> ThreadPoolExecutor:
        # Its own threads, not the loop's default executor, which resolves upstream
        # names: a burst of bcrypt checks must not delay connections.  Two threads:
        # each worker process has a core, and bcrypt holds it for the whole check.
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="porch-auth")
        return self._pool


# -- the policy ---------------------------------------------------------------------


class Malformed(ValueError):
    pass


def credentials(value: bytes) -> tuple[str, bytes] | None:
    """(user, password) of an Authorization value; None when it is not Basic;
    Malformed when it is Basic but not base64 of "user:password" in UTF-8."""
    scheme, _, token = value.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        raw = binascii.a2b_base64(token.strip(), strict_mode=True)  # base64.b64decode(validate=True)
    except (binascii.Error, ValueError):
        raise Malformed("Basic credentials are not base64") from None
    user, colon, password = raw.partition(b":")
    if not colon:
        raise Malformed("Basic credentials without a colon")
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        raise Malformed("Basic user name is not UTF-8") from None


class BasicAuth(Policy):
    name = "basic_auth"
    __slots__ = ("file", "shared", "challenge", "user_header", "drop_authorization", "gate")

    def __init__(self, config: BasicAuthConfig, shared: Shared) -> None:
        self.shared = shared
        self.file = shared.file(config.htpasswd)
        self.challenge = b'Basic realm="%s", charset="UTF-8"' % config.realm.encode()
        self.user_header = config.user_header.encode() if config.user_header else b""
        self.drop_authorization = not config.pass_authorization
        self.gate = Gate(self, shared.cache, shared.throttle.table, self.file)

    def hook(self, phase: str) -> Any:
        # The compiled Gate's method itself: no call through this class a request.
        return self.gate.request if phase == "request" else getattr(self, phase)

    def request(self, ctx: Context) -> Any:
        return self.gate.request(ctx)

    def check(self, ctx: Context, key: str, now: float, value: bytes, token: bytes) -> Any:
        """The request's Authorization `value` checked against the file (Gate.request
        found no success of it in the cache)."""
        try:
            found = credentials(value)
        except Malformed as err:
            return self._failed(ctx, key, now, str(err))
        if found is None:
            return self._unauthorized("")
        user, password = found
        entry = self.file.get(user, now)
        if entry is None:
            return self._failed(ctx, key, now, f"user {user!r} is not in {self.file.path}")
        if entry.scheme not in htpasswd.SLOW:
            return self._outcome(ctx, key, entry, token, htpasswd.verify(entry, password), now)
        return self._verify_off_loop(ctx, key, entry, password, token)

    async def _verify_off_loop(self, ctx: Context, key: str, entry: htpasswd.Entry, password: bytes,
                               token: bytes) -> Reply | None:
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(self.shared.pool(), htpasswd.verify, entry, password)
        return self._outcome(ctx, key, entry, token, ok, time.monotonic())

    def _outcome(self, ctx: Context, key: str, entry: htpasswd.Entry, token: bytes, ok: bool,
                 now: float) -> Reply | None:
        if not ok:
            return self._failed(ctx, key, now, f"user {entry.user!r}: password mismatch")
        self.shared.cache.add(token, entry, now)
        ctx.vars["remote_user"] = entry.user
        return None

    def _failed(self, ctx: Context, key: str, now: float, cause: str) -> Reply:
        # A success does not reset the count: one valid account must not buy an
        # attacker more guesses at another.
        if self.shared.throttle.failed(key, now_ms()):
            ctx.log_error(self.name, f"{FAILURES} failed logins from {key} within {WINDOW:.0f}s:"
                                     f" answered 429 for {BLOCK:.0f}s")
        return self._unauthorized(f"basic_auth: {cause}")

    def _unauthorized(self, cause: str) -> Reply:
        return Reply(401, headers=Headers.of([(b"WWW-Authenticate", self.challenge)]), cause=cause)


class Gate:
    """basic_auth's `request` hook (an extension type in the compiled build,
    basic_auth.pxd: it runs on every request of the route).  A client let in within the
    cache's ttl, with the same Authorization and the same file entry, passes here; the
    rest goes to BasicAuth.check."""

    name = "basic_auth"  # (Chain.owner names a hook's policy by it)

    def __init__(self, policy: BasicAuth, cache: VerifiedCache, table: Any, file: htpasswd.Watched) -> None:
        self.policy = policy
        self.cache = cache
        self.blocked = table.blocked  # the throttle's table (Throttle.blocked, inlined)
        self.file = file

    def request(self, ctx: Context) -> Any:
        ns = time.monotonic_ns()  # (the clock of time.monotonic and of now_ms)
        now = ns / 1e9
        key = client_key(ctx.client_ip)
        wait = self.blocked(login_key(key), ns // 1_000_000)
        if wait:
            headers = Headers.of([(b"Retry-After", b"%d" % math.ceil(wait / 1000))])
            return Reply(429, headers=headers)
        value = Headers(ctx.headers).get(b"authorization")
        if value is None:
            return self.policy._unauthorized("")
        token = self.cache.token(value)
        entry = self.cache.fresh(token, now)
        if entry is not None and self.file.get(entry.user, now) is entry:
            ctx.vars["remote_user"] = entry.user
            return None
        return self.policy.check(ctx, key, now, value, token)


class BasicAuthUpstream(BasicAuth):
    """basic_auth with a `user_header` or `pass_authorization = false`: the upstream
    head changes too."""

    __slots__ = ()

    def upstream_request(self, ctx: Context, head: RequestHead) -> None:
        headers = head.headers
        if self.user_header:
            user = ctx.vars.get("remote_user")
            if user is None:  # not let in by this policy (cannot happen): send no identity
                headers.remove(self.user_header)
            else:
                headers.set(self.user_header, user.encode())
        if self.drop_authorization:
            headers.remove(b"authorization")
