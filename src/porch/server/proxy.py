"""The request lifecycle: one Exchange per request, from parsed head to log line.

Phases, in order (see DESIGN.md):
1. request          `route_request()`: route, then the chain's request hooks (pipeline.py:
                    redirects, TRACE 405, max_body's 413, ...); may answer at once (404, 400)
2. upstream_request `_upstream_head()`: the head the upstream sees (prefix strip,
                    forwarding headers, hop-by-hop removal)
3. response         `on_response_head()`: the head the client sees (the upstream's
                    own URLs rewritten, framing, Connection)
4. body             `on_response_body()`: chunks forwarded as they arrive
5. log              `finish()`: exactly once, also for errors and aborted requests

Flow control both ways: the client connection pausing its writes pauses reading
from the upstream, and the upstream connection pausing its writes pauses reading
from the client, so memory stays bounded whatever the body size and peer speed.
"""

from __future__ import annotations

import asyncio
import socket
from functools import partial
from typing import TYPE_CHECKING

from porch.errors import ProxyError, client_error, upstream_error
from porch.http import h1
from porch.http.model import Headers, RequestHead, ResponseHead
# Names, not h1.NAME: a module attribute lookup per use costs ~120 instructions compiled.
from porch.http.h1 import (
    BODY_CHUNKED, BODY_CLOSE, BODY_LENGTH, BODY_NONE, IDEMPOTENT, LAST_CHUNK,
    RH_CONNECTION, RH_LENGTH, RH_LOCATION, RH_REFRESH, RH_TE,
)
from porch.http.conditional import date_now
from porch.http.forwarding import real_client
from porch.policies.forwarding import trusted_part
from porch.http.request_id import next_request_id
from porch.http.target import BadTarget, clean_path, needs_a_look
from porch.http.upgrade import WEBSOCKET_LINES
from porch.mux.proxy_protocol import encode_v1, encode_v2
from porch.observability.record import LogRecord
from porch.pipeline import EMPTY, FileBody, Reply
from porch.server import filesend
from porch.server.lifecycle import (
    EV_FINISH, EV_SWITCH, NO_MOVE, REQUEST_PACKED, RESPONSE_PACKED, RQ_BODY, RQ_DONE, RS_DONE,
    RS_IDLE, request_error, response_error,
)
from porch.server.tunnel import Tunnel
from porch.upstream.connection import UpstreamConnection
from porch.upstream.listener import UpstreamListener
from porch.upstream.tls import tls_failure

if TYPE_CHECKING:
    from porch.runtime import RouteRuntime, Runtime
    from porch.server.client import ClientConnection
    from porch.upstream.pool import Target

# Request body bytes kept for a retry on a fresh connection (idempotent methods).
REPLAY_LIMIT = 64 * 1024
# Body bytes buffered while the upstream connection is being made; past this, the
# client is paused (flow control), so the buffer never grows further.
PENDING_LIMIT = 64 * 1024

_CHUNKED_LINE = b"Transfer-Encoding: chunked\r\n"

_SEP = h1.SEP
_CRLF = h1.CRLF
_CLOSE_OR_KEEPALIVE = frozenset({b"close", b"keep-alive"})
_PLAIN_CONNECTION = frozenset({b"close", b"keep-alive", b"Close", b"Keep-Alive"})

# The access log's record (observability/record.py), one per process and filled again
# at the end of each exchange: the log turns it into bytes at once, before the next
# exchange can end (one thread, one loop).  No allocation a request.
_RECORD = LogRecord()


class Exchange(UpstreamListener):
    """One request and its response.  Built by ClientConnection, which feeds it; the
    upstream connection it leases calls it back as its `UpstreamListener`.

    Compiled, this is an extension type whose fields proxy.pxd declares with their
    C types: a field added here must be declared there too."""

    def __init__(self, client: ClientConnection, runtime: Runtime, t_start: float) -> None:
        self.setup(client, runtime, t_start)

    def setup(self, client: ClientConnection, runtime: Runtime, t_start: float) -> None:
        """The fields of a new exchange.  `Exchange.__new__(Exchange)` and then this is
        how the client connection makes one: compiled, two C calls instead of a type
        call with its arguments parsed (an Exchange derives from UpstreamListener, of
        another module, so Cython gives it no vectorcall constructor: ~1,000
        instructions, bench/hotpath.py under callgrind)."""
        self.client = client
        self.runtime = runtime
        self.t_start = t_start
        self.client_ip = client.peer_ip
        # the connection as policies see it (pipeline.Context); peer_ip and local_port
        # are the connection's (properties below)
        self.peer_trusted = self.client.peer_trusted  # (self.client: typed, a C field read)
        # set by the client connection while parsing
        self.headers: list[bytes] = []  # forwarded as received, flat: [name, b": ", value, b"\r\n", ...]
        self.method = b""
        self.target = b""
        self.version = b"1.1"
        self.host_header: bytes | None = None
        self.content_length: int | None = None
        self.chunked = False
        self.expect_continue = False
        self.xff: bytes | None = None
        self.xf_proto: bytes | None = None
        self.xf_host: bytes | None = None
        self.xf_port: bytes | None = None
        self.connection_tokens: set[bytes] | None = None
        self.websocket = False  # Upgrade: websocket (forwarded when Connection lists upgrade)
        self.referer = b""
        self.user_agent = b""
        self.keep_alive = True
        self.head_error: ProxyError | None = None  # found while parsing: answered once the head is whole
        # request phase
        self.host = ""
        self.site = "-"
        self.route: RouteRuntime | None = None
        self.upstream_target = b""
        self.local: bytes | None = None  # a response Porch answers itself
        self.path = b""  # clean, as routed
        self.query = b""  # b"" or b"?..."
        self.chain = EMPTY  # the policies that run (pipeline.py): the route's, or the site's
        self.waiting: asyncio.Future | None = None  # a request hook being awaited
        self.sending: FileBody | None = None  # a file being streamed to the client (filesend.py)
        self._vars: dict | None = None
        # upstream side
        self.upstream: UpstreamConnection | None = None
        self.upstream_head = b""
        self.pending: list[bytes] | None = None  # body chunks waiting for the upstream connection
        self.pending_size = 0
        self.replay: list[bytes] | None = None  # body chunks kept for a retry on a fresh connection
        self.replay_size = 0  # -1: gave up keeping it
        self.retried = False
        self.connect_task: asyncio.Task | None = None
        self.up_deadline = 0.0
        self.up_seen = False  # the upstream sent something since the sweeper last looked
        self.rq = RQ_BODY  # the request's side of its life (server/lifecycle.py)
        self.up_keep_alive = False
        self.up_until_close = False  # the upstream's body ends when it closes
        self.tunnel_early = b""  # bytes the client sent after its upgrade request, before the 101
        self.switch_head: bytes | None = None  # the 101 for the client, once the upstream sent it
        self.t_upstream_connect = 0.0
        self.t_upstream_header = 0.0
        self.chosen: Target | None = None
        self.candidates: list[Target] | tuple[Target, ...] = ()  # the balancer's order: retries go down it
        self.tries = 0  # connections tried on candidates (a pooled one's fresh retry not counted)
        self.try_until = 0.0  # no other target is tried after this (the connect timeout, overall)
        self.leased: Target | None = None  # counted in its `active` (least_conn) until the end
        self.cookie_target: Target | None = None  # the one a valid sticky cookie named (balance = "cookie")
        # response side
        self.status = 0
        self.upstream_status = 0
        self.rs = RS_IDLE  # the response's side
        self.framing = BODY_NONE
        self.out: list[bytes] | None = None  # response bytes gathered within one upstream read
        self.bytes_in = 0
        self.bytes_out = 0
        self.error: ProxyError | None = None
        self.t_end = 0.0
        # X-Request-ID: generated here; a trusted proxy's replaces it (server/client.py)
        self.request_id = next_request_id()

    # -- phase 1: request ------------------------------------------------------

    def route_request(self) -> ProxyError | None:
        """Validate the head and pick the route.  Returns the error to answer with,
        or None (then either a route is chosen or a local answer, a redirect, is set)."""
        if self.version not in (b"1.1", b"1.0", b"2.0"):  # 2.0: server/h2stream.py
            if self.version < b"1.0":  # HTTP/0.9 has no headers to route by (nginx: 400)
                return client_error(400, "HTTP/0.9 requests are not supported")
            return client_error(505, f"HTTP version {self.version.decode()} not supported")
        if self.method == b"CONNECT":
            return client_error(405, "CONNECT is not supported")
        host = self.host_header
        target = self.target
        if not target or target[0] != 47:  # "/" (compiled: a C test, not a slice)
            if target[:7].lower() == b"http://" or target[:8].lower() == b"https://":
                # absolute-form (RFC 9112 3.2.2): its authority replaces Host, for
                # routing and for what the upstream is told (Host, X-Forwarded-Host)
                authority, _, rest = target.split(b"//", 1)[1].partition(b"/")
                host, target = authority, b"/" + rest
                self.host_header = authority
            elif self.method == b"OPTIONS" and target == b"*":
                target = b"/"  # routed as the site's root, sent on as "*" (RFC 9112 3.2.4)
            else:
                return client_error(400, "request target is not an absolute path")
        if host is None:
            if self.version != b"1.0":
                return client_error(400, "missing Host header")
            host = b""
        found = self.client.hosts.find(host)  # the sites of its listener
        if found is None:
            return client_error(400, f"invalid Host header {host!r}")
        self.host, site = found
        if self.client.peer_trusted:
            self.client_ip = real_client(self.client.peer_ip, self.xff or b"", self.runtime.trusted)
        if site is None:
            return client_error(404, f"no site for host {self.host!r}")
        self.site = site.name
        path, sep, query = target.partition(b"?")
        if needs_a_look(path):
            try:
                path = clean_path(path)
            except BadTarget as exc:
                return client_error(400, str(exc))
        if sep:
            query = b"?" + query  # with its "?" from here on (b"" without one)
        self.path = path
        self.query = query
        route = site.root_only
        if route is None and not site.paths.needs_slash(path):
            # (a prefix route's name without its slash is taken by no route: the
            # site's chain redirects it, policies/trailing_slash.py)
            route = site.paths.match(path)
        self.route = route
        # the site's own chain for a path no route takes; a method's own chain when a
        # policy acts on it only (the TRACE refusal: pipeline.Chain.for_method)
        chain = site.chain if route is None else route.chain
        chain = chain.for_method(self.method)
        self.chain = chain
        if chain.request:
            return self._run_requests(0)
        return self._routed()

    def _run_requests(self, start: int) -> ProxyError | None:
        """The policies' request hooks from `start` on (pipeline.py): the first that
        answers ends the phase; one that returns an awaitable pauses the exchange."""
        hooks = self.chain.request
        for i in range(start, len(hooks)):
            hook = hooks[i]
            try:
                result = hook(self)
            except Exception as exc:
                return self._policy_failed(hook, exc)
            if result is not None:
                if isinstance(result, Reply):
                    self.reply(result)
                else:
                    self._wait(result, i)
                return None
        return self._routed()

    def _wait(self, awaitable: object, index: int) -> None:
        """A request hook is waiting (a subrequest, a shared counter): read nothing
        more from the client meanwhile, and go on when it is done."""
        client = self.client
        client.block(client.B_POLICY)
        self.waiting = fut = asyncio.ensure_future(awaitable, loop=client.loop)
        fut.add_done_callback(partial(self._resume, index))

    def _resume(self, index: int, fut: asyncio.Future) -> None:
        self.waiting = None
        if self.rs >= RS_DONE or fut.cancelled():
            return
        client = self.client
        client.unblock(client.B_POLICY)
        exc = fut.exception()
        if exc is not None:
            err = self._policy_failed(self.chain.request[index], exc)
        elif isinstance(fut.result(), Reply):
            self.reply(fut.result())
            err = None
        else:
            err = self._run_requests(index + 1)
        if err is not None:
            self.answer(err.status, err.cause, source_error=err)
        if client.active is self:
            self.begin()

    def _policy_failed(self, hook: object, exc: BaseException) -> ProxyError:
        name = self.chain.owner(hook)
        return ProxyError(500, "internal", f"policy {name} failed: {type(exc).__name__}: {exc}")

    def _routed(self) -> ProxyError | None:
        """The request phase is over and nothing answered: on to the route's upstream."""
        route = self.route
        if route is None:
            return client_error(404, "no route for path")
        query = self.query
        if self.target == b"*":  # OPTIONS * (route_request let nothing else through)
            self.upstream_target = b"*"
        else:  # relative to the proxy URL's path until the upstream_request phase is over
            self.upstream_target = self.path + query if query else self.path
        return None

    def reply(self, reply: Reply) -> None:
        """A policy's answer (pipeline.Reply)."""
        err = None
        status = reply.status
        if reply.cause and status >= 400:
            err = ProxyError(status, "client" if status < 500 else "internal", reply.cause)
        body = reply.body
        if reply.content_type is None and type(body) is not FileBody and status != 304 and status != 204:
            self.answer(status, reply.cause, body, err, reply.headers)
        else:
            self._answer_content(reply, err)

    def _answer_content(self, reply: Reply, err: ProxyError | None) -> None:
        """A policy's answer with content of its own (pipeline.Reply): bytes, or a file
        streamed once the head is out (`send_file`); none for a 204/304 or a HEAD."""
        status = reply.status
        body = reply.body
        self._note_answer(status, reply.cause, err)
        empty = status == 204 or status == 304
        head_only = empty or self.method == b"HEAD"
        if type(body) is FileBody:
            length = body.length
            if head_only or not length:
                body.close()
            else:
                self.sending = body
            data = b""
        else:
            data = b"" if body is None or head_only else body
            length = len(body or b"")
        fields = self._local_fields(status, reply.headers)
        self.local = (_local_head(status, None if empty else reply.content_type,
                                  None if empty else length, fields), data)
        self.bytes_out = len(data)
        self.status = status

    def answer(self, status: int, cause: str, body: bytes | None = None,
               source_error: ProxyError | None = None, headers: Headers | None = None) -> None:
        """Prepare a response Porch gives itself instead of proxying: `headers` are
        its fields besides Content-Type, Content-Length and Connection."""
        self._note_answer(status, cause, source_error)
        if body is None:
            body = h1.error_body(status)
        self.local = self._local_answer(status, body, self._local_fields(status, headers))
        self.bytes_out = 0 if self.method == b"HEAD" else len(body)  # as nginx's $body_bytes_sent
        self.status = status

    def _note_answer(self, status: int, cause: str, source_error: ProxyError | None) -> None:
        """What every answer of Porch's own does first: its error logged, and the
        connection's end decided."""
        if source_error is not None:
            self.error = source_error
            if status >= 400 and status != 404:
                self._error_log().error(
                    cause or source_error.cause, site=self.site, client=self.client_ip, request=self._request_line()
                )
        # A body we will not read makes the connection unusable afterwards.
        if self.content_length or self.chunked or status in (400, 408, 413, 431, 505):
            self.keep_alive = False

    def _local_fields(self, status: int, headers: Headers | None) -> Headers:
        """The fields of Porch's own answer, after the policies' response hooks."""
        if headers is None:
            headers = Headers()
        headers.add(b"X-Request-ID", self.request_id)
        if self.chain.response:
            head = ResponseHead(status, headers)
            for hook in self.chain.response:
                try:
                    hook(self, head)
                except Exception as exc:  # answer without it: the answer is an error already, or ours
                    self.log_error(self.chain.owner(hook), f"failed on Porch's own {status} answer: "
                                                           f"{type(exc).__name__}: {exc}")
            headers = head.headers
        return headers

    def _local_answer(self, status: int, body: bytes, headers: Headers) -> tuple:
        """Porch's own short answer: its head (Content-Type, Content-Length, then
        `headers`) and its body (none for a HEAD, the length a GET would get)."""
        content_type = local_content_type(headers)  # (taken out of `headers` first)
        head = _local_head(status, content_type, len(body), headers)
        return head, (b"" if self.method == b"HEAD" else body)

    # -- what policies see (pipeline.Context) ----------------------------------

    @property
    def scheme(self) -> bytes:
        return self.client.scheme

    @property
    def peer_ip(self) -> str:
        return self.client.peer_ip

    @property
    def local_port(self) -> bytes:
        return self.client.local_port

    @property
    def upstream_peer(self) -> tuple[str, str, int] | None:
        """The chosen upstream's scheme and the address its connection reached ("", 0
        when not known); None before one is chosen (pipeline.Context)."""
        chosen = self.chosen
        if chosen is None:
            return None
        upstream = self.upstream
        peer = upstream.transport.get_extra_info("peername") if upstream is not None and upstream.transport is not None else None
        if peer:
            return chosen.spec.scheme, peer[0], peer[1]
        return chosen.spec.scheme, "", 0

    @property
    def vars(self) -> dict:
        if self._vars is None:
            self._vars = {}
        return self._vars

    @property
    def request(self) -> RequestHead:
        """The client's request head (its fields as forwarded: no hop-by-hop, forwarding
        or identity fields) and the host it was routed by: a copy, to read; what goes
        upstream is changed in the `upstream_request` phase."""
        return RequestHead(self.method, self.path + self.query, self.host.encode(), self.version,
                           Headers(list(self.headers)))

    def log_error(self, policy: str, message: str) -> None:
        self._error_log().error(f"{policy}: {message}", site=self.site, client=self.client_ip,
                                request=self._request_line())

    def _error_log(self):
        """The route's error log (its site's own, or [porch]'s)."""
        route = self.route
        if route is not None and route.error_log is not None:
            return route.error_log
        return self.runtime.error_log

    # -- driving ---------------------------------------------------------------

    def begin(self) -> None:
        """Our turn on the client connection (earlier pipelined requests are done)."""
        if self.waiting is not None:
            return  # a policy is not done: `_resume` begins when it is
        if self.local is not None:
            self._write_local()
            return
        if self.expect_continue and self.rq != RQ_DONE:
            self.client.down.send_continue(self)
        self.upstream_head = self._upstream_head()
        if self.rs >= RS_DONE:
            return  # a policy failed on the upstream's head: answered 500
        self._find_upstream(fresh=False)

    def _write_local(self) -> None:
        head, body = self.local
        self.client.down.send_local(self, head, body, self.sending is not None)
        if self.sending is not None:
            self.send_file()
        else:
            self.finish()

    # -- a file body (pipeline.FileBody, server/filesend.py) ---------------------

    def send_file(self) -> None:
        """Stream `sending` after the head: pieces while the client takes them, at most
        filesend.TURN bytes a loop turn; paused, `resume_writing` calls this again."""
        body = self.sending
        client = self.client
        budget = filesend.TURN
        while body is not None and self.rs < RS_DONE:
            if not body.length:
                self.sending = None
                body.close()
                self._file_sent()
                return
            if client.write_paused:
                return
            if budget <= 0:
                client.loop.call_soon(self.send_file)
                return
            try:
                sent = client.down.send_file_piece(self, body)
            except OSError as exc:
                self.fail(ProxyError(0, "internal", f"reading the file failed: {exc}"))
                return
            budget -= sent
            self.bytes_out += sent

    def _file_sent(self) -> None:
        self.client.down.send_end(self)
        self.finish()

    # -- phase 2: upstream_request ---------------------------------------------

    def _upstream_head(self) -> bytes:
        """The head the upstream gets: the client's fields (hop-by-hop ones out), then
        the policies' upstream_request hooks over it (every route has some: the
        forwarding headers are policies/forwarding.py), then Porch's framing.  The
        hooks see the target relative to the proxy URL's path, which goes in front
        after them.  b"" when a hook failed (the exchange is answered 500)."""
        route = self.route
        tokens = self.connection_tokens
        if self.chain.upstream_request is route.plain_upstream:
            # Only the forwarding headers change this head: their fields without a
            # RequestHead round trip (policies/forwarding.py says the cost).
            target = self.upstream_target
            if route.base_path and target != b"*":
                target = route.base_path + target
            # X-Request-ID right after Host, as on the hooked path below: in the list
            # as made (growing it for three more pieces cost ~700 instructions)
            parts = [self.method, b" ", target, b" HTTP/1.1\r\nHost: ", route.upstream_host or self.host_header or b"",
                     b"\r\nX-Request-ID: ", self.request_id, _CRLF]
            parts += _without_listed(self.headers, tokens) if tokens else self.headers
            if self.peer_trusted:
                parts.append(trusted_part(self.client.peer_ip, self.client.scheme, self.client.local_port,
                                          self.host_header, self.client_ip, self.xff, self.xf_proto,
                                          self.xf_host, self.xf_port))
            else:  # the connection's part, made once (server/client.py)
                parts += (self.client.forwarding, b"X-Forwarded-Host: ", self.host_header or b"", _CRLF)
            return self._end_head(parts)
        fields = [b"X-Request-ID", _SEP, self.request_id, _CRLF]  # a header rule may replace it
        fields += _without_listed(self.headers, tokens) if tokens else self.headers
        head = RequestHead(self.method, self.upstream_target, route.upstream_host or self.host_header or b"",
                           b"1.1", Headers(fields))
        if not self._run_head_hooks(self.chain.upstream_request, head):
            return b""
        target = head.target
        if route.base_path and target != b"*":
            target = route.base_path + target
        parts = [head.method, b" ", target, b" HTTP/1.1\r\nHost: ", head.host, _CRLF]
        parts += head.headers.flat
        return self._end_head(parts)

    def _end_head(self, parts: list[bytes]) -> bytes:
        """The upstream head's last lines, which are Porch's alone: the WebSocket
        handshake and the body's framing."""
        tokens = self.connection_tokens
        # RFC 6455 4.1: the opening handshake is a GET without a body; with one,
        # the request is passed on as a plain request (http/upgrade.py).
        if tokens and self.websocket and b"upgrade" in tokens and not (self.content_length or self.chunked):
            parts.append(WEBSOCKET_LINES)
        if self.chunked:
            parts.append(_CHUNKED_LINE)
        elif self.content_length is not None:
            parts += (b"Content-Length: ", b"%d" % self.content_length, _CRLF)
        parts.append(_CRLF)
        return b"".join(parts)

    def _run_head_hooks(self, hooks: tuple, head: object) -> bool:
        """Each of `hooks` over `head`, changed in place; False when one failed: the
        exchange is then answered 500 (nothing has been written to the client yet)."""
        for hook in hooks:
            try:
                hook(self, head)
            except Exception as exc:
                self.fail(self._policy_failed(hook, exc))
                return False
        return True

    def _find_upstream(self, fresh: bool) -> None:
        loop = self.client.loop
        now = loop.time()
        route = self.route
        balancer = route.balancer
        if balancer.single:
            targets = balancer.targets
        else:
            targets = balancer.order(now, self)
            if not targets:  # nginx "no live upstreams": at once, not a connect timeout each
                self.fail(upstream_error(502, f"no live upstream for route {route.path}: {balancer.why_down(now)}"))
                return
        self.candidates = targets
        self.tries = 0
        self.try_until = now + route.upstream_connect_timeout
        if not fresh and not route.proxy_protocol:  # such connections are one client's
            target = targets[0]
            conn = target.take_idle(now)
            if conn is not None:
                self._attach(conn, target, now)  # type: ignore[arg-type]
                return
        self.connect_task = loop.create_task(self._connect(targets))

    async def _connect(self, targets: list[Target]) -> None:
        """Connect to the next candidates in turn, up to the route's tries and within
        the try budget (proxy_next_upstream_tries / _timeout); the last error if none."""
        loop = self.client.loop
        route = self.route
        tries = min(route.balancer.tries, len(targets))  # targets: those up, maybe fewer
        timeout = route.upstream_connect_timeout
        err: ProxyError | None = None
        while self.tries < tries:
            target = targets[self.tries]
            left = self.try_until - loop.time()
            if self.tries and left <= 0:
                break  # the budget is spent: the last error stands
            self.tries += 1
            self.chosen = target
            wait = min(timeout, left) if self.tries > 1 else timeout
            try:
                if route.proxy_protocol:
                    opening = self._open_with_proxy_header(target, route.proxy_protocol)
                else:
                    opening = loop.create_connection(
                        partial(UpstreamConnection, target), target.host, target.port,
                        ssl=target.ssl, server_hostname=target.server_hostname,
                    )
                _, conn = await asyncio.wait_for(opening, wait)
            except asyncio.TimeoutError:
                what = " (TCP connect and TLS handshake)" if target.ssl is not None else ""
                err = upstream_error(504, f"connecting to {target.label} timed out after {wait:g}s{what}")
            except OSError as exc:
                reason = exc.strerror or exc if target.ssl is None else tls_failure(exc)
                err = upstream_error(502, f"connecting to {target.label} failed: {reason}")
            else:
                self.connect_task = None
                if self.rs >= RS_DONE:
                    conn.close()
                else:
                    self._attach(conn, target, loop.time())
                return
            self._target_failed(target, err.cause)
        self.connect_task = None
        if self.rs < RS_DONE:
            self.fail(err or upstream_error(502, "no upstream left to try within the connect timeout"))

    async def _open_with_proxy_header(self, target: Target, version: int) -> tuple:
        """A connection to `target` whose first bytes, before any TLS, are a PROXY
        header naming this exchange's client (`upstream_proxy_protocol`)."""
        loop = self.client.loop
        infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
            await loop.sock_sendall(sock, self._proxy_header(version))
            return await loop.create_connection(partial(UpstreamConnection, target), sock=sock,
                                                ssl=target.ssl, server_hostname=target.server_hostname)
        except BaseException:
            sock.close()
            raise

    def _proxy_header(self, version: int) -> bytes:
        """The client (after trusted proxies and PROXY headers received) and the address
        it reached Porch on."""
        transport = self.client.transport
        peer = transport.get_extra_info("peername") or ("", 0)
        local = transport.get_extra_info("sockname") or ("0.0.0.0", 0)
        source = (self.client_ip, peer[1] if peer[0] in (self.client_ip, "::ffff:" + self.client_ip) else 0)
        encode = encode_v1 if version == 1 else encode_v2
        return encode(source, (local[0], local[1]))

    def _target_failed(self, target: Target, cause: str) -> None:
        """Passive health: count the failure; log when it takes the target out."""
        balancer = self.route.balancer
        target.failures += 1
        target.last_error = cause
        if balancer.mark_failed(target, self.client.loop.time()):
            self._error_log().warn(
                f"upstream {target.label} taken out for {balancer.fail_timeout:g}s after"
                f" {balancer.max_fails} failure(s) within {balancer.fail_timeout:g}s: {cause}",
                site=self.site, route=self.route.path)

    def _attach(self, conn: UpstreamConnection, target: Target, now: float) -> None:
        self.chosen = target
        if self.leased is not None:
            self.leased.active -= 1
        target.active += 1
        self.leased = target
        self.upstream = conn
        conn.lease(self, self.method == b"HEAD")
        transport = conn.transport
        if self.retried and self.replay:  # what the first attempt sent, again
            transport.writelines([self.upstream_head, *self.replay])
        else:
            transport.write(self.upstream_head)
        if self.pending:
            for chunk in self.pending:
                transport.write(chunk)
                self._keep_for_replay(chunk)  # also on a retry: a later one replays it all
            self.pending = None
            self.pending_size = 0
            self.client.unblock(self.client.B_PENDING)
        self.t_upstream_connect = now
        if self.rq == RQ_DONE:
            if self.chunked:
                transport.write(LAST_CHUNK)
            self.up_deadline = now + self.route.upstream_timeout

    def _keep_for_replay(self, chunk: bytes) -> None:
        if self.replay_size < 0:
            return  # gave up: too big to replay
        size = self.replay_size + len(chunk)
        if size > REPLAY_LIMIT:
            self.replay = None
            self.replay_size = -1
        elif self.replay is None:
            self.replay = [chunk]
            self.replay_size = size
        else:
            self.replay.append(chunk)
            self.replay_size = size

    # -- request body, fed by the client connection -----------------------------

    def on_request_body(self, data: bytes) -> None:
        if self.rs >= RS_DONE or self.local is not None:
            return
        self.bytes_in += len(data)
        route = self.route
        if route is not None and route.max_body is not None and self.bytes_in > route.max_body:
            self.fail(client_error(413, f"body passed max_body {route.max_body}"))
            return
        if self.chunked:
            data = h1.encode_chunk(data)
        upstream = self.upstream
        if upstream is not None:
            upstream.transport.write(data)
            self._keep_for_replay(data)
        else:
            if self.pending is None:
                self.pending = []
            self.pending.append(data)
            self.pending_size += len(data)
            if self.pending_size > PENDING_LIMIT:
                self.client.block(self.client.B_PENDING)

    def on_request_end(self) -> None:
        if self.rq == RQ_DONE:
            return  # no body: done with its head (server/client.py), deadline armed
        self.end_request()
        upstream = self.upstream
        if upstream is not None and self.rs < RS_DONE:
            if self.chunked:
                upstream.transport.write(LAST_CHUNK)
            self.up_deadline = self.client.loop.time() + self.route.upstream_timeout

    # -- phase 3 and 4: response ----------------------------------------------

    def on_response_head(self, status: int, reason: bytes, lines: list[bytes],
                         special: list[tuple[int, bytes, bytes]] | None, keep_alive: bool) -> None:
        """Build the head the client sees.  It is not written yet: `flush()` writes it
        with whatever body the same upstream read brought (one send, not two)."""
        if self.rs >= RS_DONE:
            return
        client = self.client
        if status < 200:
            if status == 101:
                if self.websocket:  # on_upstream_upgrade sends it: the switch is next
                    # the request id goes back on every response (issue 13), the 101 too
                    lines += (b"X-Request-ID", _SEP, self.request_id, _CRLF)
                    if self.chain.response and not self._run_responses(101, lines):
                        return
                    client.down.prepare_switch(self, reason, lines)
                return
            # 100 Continue was ours to give; other 1xx (103 Early Hints) pass.
            if status != 100:
                client.down.send_interim(self, status, reason, lines)
            return
        self.t_upstream_header = client.loop.time()
        self.upstream_status = self.status = status
        self.up_keep_alive = keep_alive
        lines = self._relayed_lines(lines, special)
        if lines is None:  # not relayable as it is (the cause is in self.error)
            self.fail(self.error)
            return
        if self.chain.response:
            if not self._run_responses(status, lines):
                return
            if self.chain.response_body:
                self._reframe(lines)
        if self.method == b"HEAD" or status == 204 or status == 304:
            self.framing = BODY_NONE
        else:
            self.up_until_close = self.framing == BODY_CLOSE  # the close ends it
        if self.route.balancer.sticky is not None:  # balance = "cookie"
            self.add_sticky_cookie(lines)
        client.down.send_head(self, status, reason, lines)

    def add_sticky_cookie(self, lines: list[bytes]) -> None:
        """balance = "cookie": a Set-Cookie naming the target used, unless the client's
        valid cookie named it already (upstream/sticky.py)."""
        if self.chosen is not self.cookie_target:
            value = self.route.balancer.sticky.set_cookie(self.chosen.address, self.client.scheme == b"https")
            lines += (b"Set-Cookie", _SEP, value, _CRLF)

    def _relayed_lines(self, lines: list[bytes], special: list[tuple[int, bytes, bytes]] | None) -> list[bytes]:
        """The upstream's response headers the client gets (`lines`, with the special
        ones put back: Location rewritten, framing and hop-by-hop ones left out).
        Sets `framing` to how the upstream delimits the body: BODY_LENGTH
        (Content-Length), BODY_CHUNKED, or BODY_CLOSE (until it closes).
        None (and `error` set) for a response that cannot be relayed as it is."""
        has_length = has_te = False
        if special is not None:
            listed: set[bytes] | None = None
            for kind, name, value in special:
                if kind == RH_LENGTH:
                    has_length = True
                elif kind == RH_LOCATION:  # the upstream's own URLs (policies/location_rewrite.py)
                    value = self.route.location_rewrite.location(self, value)
                elif kind == RH_REFRESH:
                    value = self.route.location_rewrite.refresh(self, value)
                elif kind == RH_TE:
                    if value != b"chunked" and value.strip().lower() != b"chunked":
                        # `gzip, chunked`: llhttp takes the chunks off and the body is
                        # still gzip-coded, which a client cannot know once the header is
                        # gone.  Decoding it here would take a streaming inflater per
                        # response, bounded against decompression bombs, for a coding
                        # no server sends unasked: 502, as nginx ("upstream sent unknown
                        # Transfer-Encoding"); RFC 9112 6.1 lets a proxy refuse it.
                        self.error = upstream_error(
                            502, f"upstream sent unknown Transfer-Encoding {value.decode('latin-1')!r}")
                        return None
                    has_te = True
                    continue
                else:
                    if kind == RH_CONNECTION:
                        if value not in _PLAIN_CONNECTION:
                            listed = h1.connection_tokens(value)
                    continue
                lines += (name, _SEP, value, _CRLF)
            if listed and listed - _CLOSE_OR_KEEPALIVE:
                lines = _without_listed(lines, listed)
        self.framing = BODY_CHUNKED if has_te else BODY_LENGTH if has_length else BODY_CLOSE
        # Ours, the one the upstream was sent (the upstream's own is dropped: h1.py)
        lines.append(b"X-Request-ID")
        lines.append(_SEP)
        lines.append(self.request_id)
        lines.append(_CRLF)
        return lines

    def _run_bodies(self, data: bytes, end: bool) -> bytes:
        """The policies' body hooks, in turn, over one chunk (pipeline.py); b"" when the
        exchange failed (a hook raised: the client's connection is cut, as for an upstream
        that breaks mid-body)."""
        for hook in self.chain.response_body:
            try:
                data = hook(self, data, end)
            except Exception as exc:
                self.fail(self._policy_failed(hook, exc))
                return b""
        return data

    def _end_bodies(self) -> bool:
        """The body hooks' last call (`end`), its bytes sent; False when one failed."""
        if self.framing != BODY_NONE:
            tail = self._run_bodies(b"", True)
            if self.rs >= RS_DONE:
                return False
            if tail:
                self.on_response_body_raw(tail)
        return True

    def on_response_body_raw(self, data: bytes) -> None:
        """Body bytes as they go to the client, past the body hooks (their last words)."""
        self.bytes_out += len(data)
        self.client.down.send_data(self, data)

    def _reframe(self, lines: list[bytes]) -> None:
        """Body hooks may change the length: when a response hook took Content-Length
        away, the client gets the body chunked (HTTP/1.1) or until close (HTTP/1.0)."""
        if self.framing == BODY_LENGTH and Headers(lines).get(b"content-length") is None:
            self.framing = BODY_CHUNKED  # not BODY_CLOSE: the upstream's body has its length

    def _run_responses(self, status: int, lines: list[bytes]) -> bool:
        """The policies' response hooks over the upstream's head (`lines`, the flat
        field list, changed in place).  False when one failed: the exchange is then
        answered 500 (nothing has been written to the client yet)."""
        return self._run_head_hooks(self.chain.response, ResponseHead(status, Headers(lines)))

    def on_response_body(self, data: bytes) -> None:
        if self.rs >= RS_DONE or self.framing == BODY_NONE:
            return
        if self.chain.response_body:
            data = self._run_bodies(data, False)
            if not data:
                return
        self.bytes_out += len(data)
        self.client.down.send_data(self, data)

    def flush(self) -> None:
        """Write what the last upstream read produced, in one call (writev)."""
        if self.out is not None:
            self.client.down.flush(self)

    def on_response_end(self) -> None:
        if self.rs >= RS_DONE:
            return
        if self.chain.response_body and not self._end_bodies():
            return
        self.client.down.send_end(self)
        self.finish()

    def on_upstream_paused(self, paused: bool) -> None:
        """The upstream stopped (or resumed) taking the request body.  Stopped, it must
        take more within upstream_timeout or it is a 504 (nginx proxy_send_timeout):
        the client, held back meanwhile, has no body deadline to run out."""
        client = self.client
        if paused:
            client.block(client.B_UPSTREAM)
            if not self.up_deadline:
                self.up_deadline = client.loop.time() + self.route.upstream_timeout
        else:
            client.unblock(client.B_UPSTREAM)
            if self.rq != RQ_DONE:
                self.up_deadline = 0.0  # the rest of the body is the client's to send

    def on_upstream_lost(self, cause: str, got_bytes: bool) -> None:
        if self.rs >= RS_DONE:
            return
        upstream = self.upstream
        self.upstream = None
        if self.rs == RS_IDLE:
            if upstream is not None and not got_bytes and self._retry(upstream.reused, cause):
                return
            self.fail(upstream_error(502, cause))
        elif self.up_until_close:
            self.on_response_end()  # the body was delimited by the close: it is complete
        else:
            self.fail(upstream_error(0, f"{cause} in the middle of the response"))

    def _retry(self, reused: bool, cause: str) -> bool:
        """The upstream connection ended before any response byte: try again if that
        is safe (an idempotent request whose body sent so far is kept, RFC 9110 9.2.2).
        A pooled connection the upstream had closed (its keep-alive timeout): once, on a
        fresh connection, not counted against the target.  A fresh one: a failure of
        the target (passive health), then the next candidate within `retries`."""
        if not reused:
            self._target_failed(self.chosen, cause)
        if self.method not in IDEMPOTENT or self.replay_size < 0:
            return False
        if reused:
            if self.retried:
                return False
            self.retried = True
            self.up_deadline = 0.0
            self._find_upstream(fresh=True)
            return True
        loop = self.client.loop
        if self.tries >= min(self.route.balancer.tries, len(self.candidates)) or loop.time() >= self.try_until:
            return False
        self.retried = True  # the head and body kept are sent again
        self.up_deadline = 0.0
        self.connect_task = loop.create_task(self._connect(self.candidates))
        return True

    def on_upstream_upgrade(self, transport: asyncio.Transport, rest: bytes) -> bool:
        """The upstream's HTTP ended with a 101 (its connection calls this).  When it
        answers our WebSocket upgrade, both connections become a tunnel (server/tunnel.py),
        `rest` being its first bytes for the client, and True is returned; otherwise the
        upstream switched without being asked: False, and it is treated as broken."""
        if self.switch_head is None or self.rs >= RS_DONE:
            return False
        client = self.client
        now = client.loop.time()
        self.upstream = None  # never back to the pool
        self.move(EV_SWITCH)  # no finish(): the tunnel logs the exchange when it ends
        if self.leased is not None:  # no longer a request in flight (least_conn)
            self.leased.active -= 1
            self.leased = None
        self.status = self.upstream_status = 101
        self.t_upstream_header = now
        client_paused = client.write_paused
        upstream_paused = bool(client.blocks & client.B_UPSTREAM)
        client_transport = client.hand_over()
        self.status = client.down.send_switch(self, client_transport)  # what the client got
        tunnel = Tunnel(client.server.tunnels, self, client_transport, transport,
                        self.route.tunnel_idle_timeout, now)
        tunnel.start(self.tunnel_early, rest, client_paused, upstream_paused)
        return True

    def on_upstream_timeout(self) -> None:
        timeout = self.route.upstream_timeout if self.route else 0
        if self.rq == RQ_DONE:
            self.fail(upstream_error(504, f"upstream timed out: nothing received for {timeout:g}s"))
        else:
            self.fail(upstream_error(504, f"upstream timed out: it took none of the request body for {timeout:g}s"))

    # -- the life of the exchange (server/lifecycle.py) ------------------------

    def move(self, event: int) -> None:
        """The response side's next state for `event`, by the table."""
        state = (RESPONSE_PACKED >> ((self.rs * 3 + event) * 4)) & 15
        if state == NO_MOVE:
            raise response_error(self.rs, event)
        self.rs = state

    def end_request(self) -> None:
        """The request is whole (its body, or its head alone)."""
        state = (REQUEST_PACKED >> (self.rq * 4)) & 15
        if state == NO_MOVE:
            raise request_error(self.rq)
        self.rq = state

    @property
    def done(self) -> bool:
        """Finished or handed to a tunnel: nothing more happens on this exchange."""
        return self.rs >= RS_DONE

    @property
    def response_started(self) -> bool:
        """Something of the response has gone to the client: an error can only cut it."""
        return self.rs != RS_IDLE

    @property
    def request_done(self) -> bool:
        return self.rq == RQ_DONE

    # -- endings -------------------------------------------------------------

    def fail(self, err: ProxyError) -> None:
        """End the exchange on an error: answer it if no response has started yet,
        else close the client connection so a short body is never passed as whole."""
        if self.rs >= RS_DONE:
            return
        if self.client.active is not self and self.local is None:
            # still queued behind a pipelined request: answer when its turn comes
            self.answer(err.status or 400, err.cause, source_error=err)
            return
        self.error = err
        self.out = None  # a head or body not written yet: never written (cut short)
        self._drop_upstream()
        self._error_log().error(
            err.cause, site=self.site, route=self.route.path if self.route else None,
            upstream=self.chosen.label if self.chosen else None,
            client=self.client_ip, request=self._request_line(),
        )
        client = self.client
        if self.rs == RS_IDLE and err.status and not client.gone:
            if self.rq != RQ_DONE:
                self.keep_alive = False
            if err.status in (408, 413):
                self.keep_alive = False
            body = h1.error_body(err.status)
            self.bytes_out = len(body)
            self.status = err.status
            head, body = self._local_answer(err.status, body, self._local_fields(err.status, None))
            client.down.send_local(self, head, body, False)
        else:
            self.keep_alive = False
            if not self.status:
                self.status = 499 if err.source == "client" else 502
            client.down.reset(self)
        self.finish()

    def client_gone(self, cut: ProxyError | None = None) -> None:
        """The client connection is gone: abort the upstream side and log the request.
        It closed (`cut` None): 499, nginx's "client closed request".  Porch cut it
        (`cut`: the drain timeout ran out): that cause, and 444 when no response
        had begun (nginx's "closed without a response")."""
        if self.rs >= RS_DONE:
            return
        if self.rs == RS_IDLE:
            self.status = 499 if cut is None else 444
        self.error = client_error(0, "client closed the connection") if cut is None else cut
        self._drop_upstream()
        self.finish()

    def _drop_upstream(self) -> None:
        if self.connect_task is not None:
            self.connect_task.cancel()
            self.connect_task = None
        upstream = self.upstream
        if upstream is not None:
            self.upstream = None
            upstream.abort()

    def finish(self) -> None:
        if self.rs >= RS_DONE:
            return
        if self.out is not None:  # the response's last bytes (often all of it, head too)
            self.client.down.flush(self)
        # The table's `finish` (server/lifecycle.py), inlined: from IDLE or SENDING, the
        # only states the guard above lets through, it is DONE (test_lifecycle checks
        # the table says so).  A call here cost ~40 instructions a request.
        self.rs = RS_DONE
        if self.waiting is not None:
            self.waiting.cancel()
        if self.sending is not None:  # cut short: the file is not needed any more
            self.sending.close()
            self.sending = None
        client = self.client
        now = self.t_end = client.loop.time()
        if self.leased is not None:
            self.leased.active -= 1
            self.leased = None
        upstream = self.upstream
        if upstream is not None:
            self.upstream = None
            if self.up_keep_alive and self.rq == RQ_DONE and not upstream.closed and not self.route.proxy_protocol:
                if client.write_paused:  # paused for this client's sake, not the next one's
                    upstream.transport.resume_reading()
                self.chosen.put_idle(upstream, now)
            else:
                upstream.close()
        if self.chain.log:
            self._run_logs()
        self.account(now)
        client.exchange_finished(self)

    def account(self, now: float) -> None:
        """The log phase's own part, once per exchange: the access-log line (from the
        record `fill_record` makes) and the route's counters (observability/stats.py)."""
        route = self.route
        log = self.runtime.access_log
        stats = self.runtime.stats
        if route is not None:
            stats = route.stats
            if route.access_log is not None:  # None: a route built by hand (tests)
                log = route.access_log
        if log.enabled:
            log.log(self.fill_record(_RECORD), now)
        stats.record(self.status, self.version, self.bytes_in, self.bytes_out, now - self.t_start,
                     now - self.t_upstream_connect if self.t_upstream_connect > 0.0 else -1.0)

    def fill_record(self, rec: LogRecord) -> LogRecord:
        """`rec` with this exchange's log fields (issue 12 item 6: the access log reads
        the record, not the Exchange)."""
        rec.client_ip = self.client_ip
        rec.host = self.host
        rec.site = self.site
        rec.route = self.route.path if self.route is not None else "-"
        rec.upstream = self.chosen.label if self.chosen is not None else "-"
        rec.port = self.client.local_port
        rec.method = self.method
        rec.target = self.target
        rec.version = self.version
        rec.referer = self.referer
        rec.user_agent = self.user_agent
        rec.request_id = self.request_id
        rec.user = None if self._vars is None else self._vars.get("remote_user")
        rec.status = self.status
        rec.upstream_status = self.upstream_status
        rec.bytes_in = self.bytes_in
        rec.bytes_out = self.bytes_out
        rec.t_start = self.t_start
        rec.t_upstream_connect = self.t_upstream_connect
        rec.t_upstream_header = self.t_upstream_header
        rec.error = self.error
        return rec

    def _run_logs(self) -> None:
        for hook in self.chain.log:
            try:
                hook(self)
            except Exception as exc:
                self.log_error(self.chain.owner(hook), f"log hook failed: {type(exc).__name__}: {exc}")

    # -- for logs ------------------------------------------------------------

    def _request_line(self) -> str:
        return (b"%s %s HTTP/%s" % (self.method, self.target, self.version)).decode("latin-1")


def _local_head(status: int, content_type: bytes | None, length: int | None, headers: Headers) -> ResponseHead:
    """The head of Porch's own answer: Date (RFC 9110 6.6.1), `content_type` and
    `length` (None: left out, as a 304 has neither, RFC 9110 15.4.5), then `headers`."""
    flat = [] if b"date" in headers else [b"Date", _SEP, date_now(), _CRLF]  # forward_auth's page has one
    if content_type is not None:
        flat += (b"Content-Type", _SEP, content_type, _CRLF)
    if length is not None:
        flat += (b"Content-Length", _SEP, b"%d" % length, _CRLF)
    return ResponseHead(status, Headers(flat + headers.flat))


def local_content_type(headers: Headers) -> bytes:
    """The Content-Type of Porch's own answer: text/plain, unless the answer brings its
    own (a policy's Reply passing on another server's page: forward_auth), which is
    then taken out of `headers`."""
    value = headers.get(b"content-type")
    if value is None:
        return h1.TEXT_PLAIN
    headers.remove(b"content-type")
    return value


def _without_listed(lines: list[bytes], listed: set[bytes]) -> list[bytes]:
    """Drop the headers named in `listed` (lowercase: those of a Connection header,
    RFC 9110 7.6.1) from a flat [name, b": ", value, b"\\r\\n", ...] list."""
    out: list[bytes] = []
    for i in range(0, len(lines) - 3, 4):
        if lines[i].lower() not in listed:
            out += lines[i : i + 4]
    return out
