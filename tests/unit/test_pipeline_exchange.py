"""The pipeline's phases on a real Exchange, without sockets: a ClientConnection and
a pooled UpstreamConnection over fake transports (as bench/hotpath.py), fed bytes.
Each test puts a sample policy on the route and checks what the client and the
upstream got: answering, rewriting both heads, transforming the body, waiting
asynchronously, and failing."""

from __future__ import annotations

import asyncio
import re

import pytest
import uvloop

from porch.config.compile import compile_config
from porch.config.toml import loads
from porch.http.model import Headers
from porch.observability.accesslog import AccessLog
from porch.observability.errorlog import ErrorLog
from porch.pipeline import Policy, Reply, compile_chain
from porch.server.client import ClientConnection
from porch.upstream.connection import UpstreamConnection

CONFIG = """
[porch]
http_port = 8080
bind = ["127.0.0.1"]
[[site]]
hosts = ["app.test"]
tls = "off"
proxy = "http://127.0.0.1:9"
"""
OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"


class Transport:
    def __init__(self, peer):
        self.extra = {"peername": peer, "sockname": ("127.0.0.1", 8080)}
        self.data = bytearray()
        self.closed = False
        self.paused = False

    def get_extra_info(self, name, default=None):
        return self.extra.get(name, default)

    def write(self, data):
        self.data += data

    def writelines(self, chunks):
        for c in chunks:
            self.data += c

    def is_closing(self):
        return self.closed

    def pause_reading(self):
        self.paused = True

    def resume_reading(self):
        self.paused = False

    def can_write_eof(self):
        return True

    def write_eof(self):
        pass

    def get_write_buffer_size(self):
        return 0

    def close(self):
        self.closed = True

    abort = close


class Server:
    def __init__(self, loop, runtime):
        self.loop = loop
        self.runtime = runtime
        self.scheme = b"http"
        self.connections = set()
        self.tunnels = set()
        self.draining = False
        self.limits = None  # no connection limits (server/listener.py Server.limits)


class Harness:
    def __init__(self, tmp_path, *policies, config=CONFIG):
        self.loop = uvloop.new_event_loop()
        self.errors = tmp_path / "error.log"
        runtime = compile_config(loads(config), access_log=AccessLog("off", "combined"),
                                 error_log=ErrorLog(str(self.errors)))
        _, site = runtime.hosts.find(b"app.test")
        if policies:
            site.root_only.chain = compile_chain(list(site.root_only.chain.policies) + list(policies))
        self.site = site
        self.runtime = runtime
        self.client = ClientConnection(Server(self.loop, runtime))
        self.ct = Transport(("127.0.0.1", 50000))
        self.client.connection_made(self.ct)
        self.ut = Transport(("127.0.0.1", 9))
        if not runtime.targets:  # a site that answers itself (root)
            return
        target = runtime.targets[0]
        self.up = UpstreamConnection(target)
        self.up.connection_made(self.ut)
        target.put_idle(self.up, self.loop.time())

    def request(self, head=b"GET /x HTTP/1.1\r\nHost: app.test\r\n\r\n"):
        self.client.data_received(head)

    def respond(self, data=OK):
        self.up.data_received(data)

    def run(self, seconds=0.05):
        self.loop.run_until_complete(asyncio.sleep(seconds))

    def error_log(self):
        return self.errors.read_text() if self.errors.exists() else ""

    def close(self):
        self.loop.close()


@pytest.fixture
def harness(tmp_path):
    made = []

    def make(*policies, config=CONFIG):
        h = Harness(tmp_path, *policies, config=config)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


class NeedsToken(Policy):
    """request: answers at once unless the client sent a token."""
    name = "basic_auth"

    def request(self, ctx):
        if ctx.request.headers.get(b"authorization") == b"Bearer ok":
            ctx.vars["user"] = "alice"
            return None
        return Reply(401, b"who are you?\n", Headers.of([(b"WWW-Authenticate", b'Bearer realm="x"')]),
                     cause="no token")


class Rewrite(Policy):
    """upstream_request and response: header rules on both heads."""
    name = "request_headers"

    def upstream_request(self, ctx, head):
        head.headers.set(b"X-User", ctx.vars.get("user", "-").encode())
        head.headers.remove(b"X-Debug")

    def response(self, ctx, head):
        head.headers.set(b"X-Frame-Options", b"SAMEORIGIN")
        head.headers.remove(b"Content-Type")


class Upper(Policy):
    """response_body: a transformation that changes the length."""
    name = "compress"

    def response(self, ctx, head):
        head.headers.remove(b"Content-Length")

    def response_body(self, ctx, data, end):
        return data.upper() + (b"!" if end else b"")


class Slow(Policy):
    """request: waits (a subrequest), then lets the request go on or refuses it."""
    name = "forward_auth"

    def __init__(self, verdict, delay=0.01):
        self.verdict = verdict
        self.delay = delay

    async def _ask(self, ctx):
        await asyncio.sleep(self.delay)
        return None if self.verdict else Reply(403, cause="refused by the auth service")

    def request(self, ctx):
        return self._ask(ctx)


class Broken(Policy):
    name = "rate_limit"

    def request(self, ctx):
        raise KeyError("no such counter")


def test_request_hook_answers_and_nothing_goes_upstream(harness):
    h = harness(NeedsToken())
    h.request()
    assert h.ct.data.startswith(b"HTTP/1.1 401 ")
    assert b"WWW-Authenticate: Bearer realm=\"x\"\r\n" in h.ct.data
    assert h.ct.data.endswith(b"\r\n\r\nwho are you?\n")
    assert h.ut.data == b""


def test_upstream_request_and_response_hooks_rewrite_the_heads(harness):
    h = harness(NeedsToken(), Rewrite())
    h.request(b"GET /x HTTP/1.1\r\nHost: app.test\r\nAuthorization: Bearer ok\r\nX-Debug: 1\r\n\r\n")
    sent = bytes(h.ut.data)
    assert sent.startswith(b"GET /x HTTP/1.1\r\nHost: app.test\r\n")
    assert b"X-User: alice\r\n" in sent and b"X-Debug" not in sent
    assert b"X-Forwarded-For: 127.0.0.1\r\n" in sent  # Porch's own fields still there
    h.respond()
    got = bytes(h.ct.data)
    assert got.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"X-Frame-Options: SAMEORIGIN\r\n" in got and b"Content-Type" not in got
    assert got.endswith(b"\r\n\r\nhello")


def test_response_hooks_apply_to_porchs_own_answers_too(harness):
    h = harness(Rewrite())
    h.request(b"GET /x HTTP/1.1\r\n\r\n")  # no Host: Porch answers 400 itself
    assert h.ct.data.startswith(b"HTTP/1.1 400 ")
    h2 = harness(NeedsToken(), Rewrite())
    h2.request()
    assert b"X-Frame-Options: SAMEORIGIN\r\n" in h2.ct.data  # the policy's own 401


def test_response_body_hook_transforms_and_the_length_becomes_chunked(harness):
    h = harness(Upper())
    h.request()
    h.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello")
    h.respond(b" world")
    got = bytes(h.ct.data)
    assert b"Content-Length" not in got and b"Transfer-Encoding: chunked\r\n" in got
    body = got.split(b"\r\n\r\n", 1)[1]
    assert body == b"5\r\nHELLO\r\n6\r\n WORLD\r\n1\r\n!\r\n0\r\n\r\n"


def test_async_request_hook_pauses_the_client_then_goes_on(harness):
    h = harness(Slow(True))
    h.request(b"POST /x HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\n\r\nabc")
    assert h.ct.paused and h.ut.data == b""  # waiting: nothing read, nothing sent
    h.run()
    assert not h.ct.paused
    assert h.ut.data.startswith(b"POST /x HTTP/1.1\r\n") and h.ut.data.endswith(b"\r\n\r\nabc")
    h.respond()
    assert h.ct.data.endswith(b"hello")


def test_async_request_hook_may_refuse(harness):
    h = harness(Slow(False))
    h.request()
    h.run()
    assert h.ct.data.startswith(b"HTTP/1.1 403 ") and h.ut.data == b""
    assert "refused by the auth service" in h.error_log()


def test_a_failing_policy_is_a_500_naming_it_and_the_connection_lives_on(harness):
    h = harness(Broken())
    h.request()
    assert h.ct.data.startswith(b"HTTP/1.1 500 ") and h.ut.data == b""
    assert "policy rate_limit failed: KeyError" in h.error_log()
    assert not h.ct.closed  # a request without a body: keep-alive goes on
    h.ct.data.clear()
    h.request()
    assert h.ct.data.startswith(b"HTTP/1.1 500 ")


def test_a_route_without_policies_runs_no_hook(harness):
    h = harness()
    h.request()
    h.respond()
    assert h.ct.data.startswith(b"HTTP/1.1 200 OK\r\n") and h.ct.data.endswith(b"hello")


# -- the same phases over HTTP/2 -------------------------------------------------------

import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402


class SslObject:
    def selected_alpn_protocol(self):
        return "h2"


class H2Harness(Harness):
    """The client side speaks HTTP/2 (an `h2` client codec) to Porch's HTTP/2 connection,
    made as ALPN makes it; the upstream side is the same fake pooled connection."""

    def __init__(self, tmp_path, *policies, engine="h2", config=CONFIG):
        super().__init__(tmp_path, *policies, config=config)
        self.runtime.http2_engine = engine
        self.ct.extra["ssl_object"] = SslObject()
        self.ct.set_protocol = lambda protocol: setattr(self, "conn", protocol)
        self.client.scheme = b"https"
        self.client._speak_h2()
        self.codec = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                          header_encoding=None))
        self.codec.initiate_connection()
        self.responses: dict[int, dict] = {}
        self.exchange()
        assert type(self.conn.h2).__name__ == ("NgEngine" if engine == "nghttp2" else "H2Engine")

    def exchange(self):
        """Our frames in, Porch's frames out (its writes happen once per loop turn)."""
        out = self.codec.data_to_send()
        if out:
            self.conn.data_received(out)
        self.run(0.01)
        data = bytes(self.ct.data)
        self.ct.data.clear()
        for event in self.codec.receive_data(data):
            r = self.responses.setdefault(getattr(event, "stream_id", 0), {"headers": [], "body": b""})
            if isinstance(event, h2.events.ResponseReceived):
                r["headers"] = event.headers
            elif isinstance(event, h2.events.DataReceived):
                r["body"] += event.data
                self.codec.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                r["ended"] = True
        out = self.codec.data_to_send()
        if out:
            self.conn.data_received(out)

    def get(self, path="/x", extra=(), method=b"GET", body=None):
        sid = self.codec.get_next_available_stream_id()
        self.codec.send_headers(sid, [(b":method", method), (b":path", path.encode()),
                                      (b":scheme", b"https"), (b":authority", b"app.test"), *extra],
                                end_stream=body is None)
        if body is not None:
            self.codec.send_data(sid, body, end_stream=True)
        self.exchange()
        return sid

    def response(self, sid):
        r = self.responses[sid]
        return dict(r["headers"]), r["body"]


@pytest.fixture(params=["h2", "nghttp2"])
def h2harness(request, tmp_path):
    """Both HTTP/2 engines (server/h2engine.py): the phases must not depend on which."""
    made = []

    def make(*policies, config=CONFIG):
        h = H2Harness(tmp_path, *policies, engine=request.param, config=config)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def test_h2_request_hook_answers(h2harness):
    h = h2harness(NeedsToken())
    sid = h.get()
    headers, body = h.response(sid)
    assert headers[b":status"] == b"401" and headers[b"www-authenticate"] == b'Bearer realm="x"'
    assert body == b"who are you?\n" and h.ut.data == b""


def test_h2_heads_rewritten_and_body_transformed(h2harness):
    h = h2harness(NeedsToken(), Rewrite(), Upper())
    sid = h.get(extra=[(b"authorization", b"Bearer ok"), (b"x-debug", b"1")])
    sent = bytes(h.ut.data)
    assert b"\r\nX-User: alice\r\n" in sent and b"x-debug" not in sent.lower()
    h.respond(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")
    h.exchange()
    headers, body = h.response(sid)
    assert headers[b":status"] == b"200" and headers[b"x-frame-options"] == b"SAMEORIGIN"
    assert b"content-type" not in headers and b"content-length" not in headers
    assert body == b"HELLO!"


def test_h2_async_hook_then_failure_keeps_the_connection(h2harness, tmp_path):
    h = h2harness(Slow(True, delay=0.2))
    sid = h.get()
    assert h.ut.data == b""  # waiting
    h.run(0.3)
    h.exchange()
    assert h.ut.data.startswith(b"GET /x HTTP/1.1\r\n")
    h.respond()
    h.exchange()
    assert h.response(sid)[1] == b"hello"
    b = h2harness(Broken())
    first = b.get()
    second = b.get()
    assert b.response(first)[0][b":status"] == b"500" and b.response(second)[0][b":status"] == b"500"


class Passive(Policy):
    """upstream_request: hooks the phase and changes nothing."""

    name = "request_headers"

    def upstream_request(self, ctx, head):
        return None


@pytest.mark.parametrize("trusted", [False, True])
def test_forwarding_fields_are_the_same_with_and_without_other_upstream_hooks(harness, trusted):
    """policies/forwarding.py has a direct path (a route whose only upstream hook is the
    forwarding headers') and the policy's hook (a route with other hooks): the upstream
    gets the same head either way, from a client and from a trusted proxy."""
    config = CONFIG.replace("[porch]\n", '[porch]\ntrusted_proxies = ["127.0.0.1"]\n') if trusted else CONFIG
    head = (b"GET /x?q=1 HTTP/1.1\r\nHost: app.test:8080\r\nX-Forwarded-For: 203.0.113.7\r\n"
            b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: app.example\r\nX-Forwarded-Port: 443\r\n\r\n")
    sent = []
    for policies in ((), (Passive(),)):
        h = harness(*policies, config=config)
        h.request(head)
        # each request has its own X-Request-ID (server/proxy.py), in the same place
        sent.append(re.sub(rb"X-Request-ID: [0-9a-f]{24}\r\n", b"X-Request-ID: (id)\r\n", bytes(h.ut.data)))
    assert sent[0] == sent[1] and b"X-Request-ID: (id)\r\n" in sent[0]
    if trusted:
        assert b"X-Forwarded-For: 203.0.113.7, 127.0.0.1\r\n" in sent[0]
        assert b"X-Real-IP: 203.0.113.7\r\n" in sent[0]
        assert b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: app.example\r\nX-Forwarded-Port: 443\r\n" in sent[0]
    else:
        assert b"X-Forwarded-For: 127.0.0.1\r\nX-Real-IP: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n" in sent[0]
        assert b"X-Forwarded-Host: app.test:8080\r\n" in sent[0] and b"203.0.113.7" not in sent[0]


def test_compiled_exchange_comes_from_pymalloc():
    """An Exchange is made per request: with its GC header (16 bytes) it must stay
    within CPython's small-object limit (512 bytes), or each request pays malloc()
    and free() (~350 instructions, bench/hotpath.py under callgrind).  A field added
    to proxy.pxd must make room (see the comment there)."""
    from porch.server.proxy import Exchange

    assert hasattr(Exchange, "__pyx_vtable__"), "the suite runs compiled (tests/conftest.py)"
    assert Exchange.__basicsize__ + 16 <= 512, Exchange.__basicsize__


# -- the request checks that were hard-wired in server/proxy.py, as policies (issue 12) ---

from porch.policies.max_body import MaxBody  # noqa: E402
from porch.policies.trace import ALLOW, REFUSE_TRACE  # noqa: E402
from porch.policies.trailing_slash import TrailingSlash  # noqa: E402

TRACED = CONFIG + '[[site.route]]\npath = "/traced/"\nallow_trace = true\n'
LIMITED = CONFIG.replace('proxy = "http://127.0.0.1:9"\n', 'proxy = "http://127.0.0.1:9"\nmax_body = "1k"\n')
MOUNTED = CONFIG.replace('proxy = "http://127.0.0.1:9"\n', '') + (
    '[[site.route]]\npath = "/radicale/"\nproxy = "http://127.0.0.1:9"\n'
    '[[site.route]]\npath = "/"\nproxy = "http://127.0.0.1:9"\n'
    '[[site.route]]\npath = "/app/"\nproxy = "http://127.0.0.1:9"\n'
    '[[site.route]]\nexact = "/app"\nproxy = "http://127.0.0.1:9"\n')


def test_trace_is_refused_with_405_and_allow_and_the_connection_lives_on(harness):
    h = harness()
    h.request(b"TRACE /x HTTP/1.1\r\nHost: app.test\r\nCookie: s=1\r\n\r\n")
    assert h.ct.data.startswith(b"HTTP/1.1 405 ") and h.ut.data == b""
    assert b"\r\nAllow: GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH\r\n" in h.ct.data
    assert "TRACE is not allowed (allow_trace = true on the route passes it)" in h.error_log()
    assert not h.ct.closed
    h.ct.data.clear()
    h.request()
    assert h.ut.data.startswith(b"GET /x HTTP/1.1\r\n")


def test_trace_refusal_is_in_the_trace_chain_only(harness):
    """Other methods' chain leaves it out: a GET on a route without policies of its
    own runs no request hook (pipeline.Chain.for_method)."""
    route = harness().site.root_only
    assert REFUSE_TRACE in route.chain.policies and route.chain.request == ()
    trace = route.chain.for_method(b"TRACE")
    assert trace.request == (REFUSE_TRACE.request,)
    assert trace.upstream_request is route.chain.upstream_request  # the forwarding fast path holds
    assert route.chain.for_method(b"GET") is route.chain and route.chain.for_method(b"TRAC") is route.chain


def test_a_route_with_allow_trace_passes_trace_upstream(harness):
    h = harness(config=TRACED)
    routes = {r.path: r for _, r in h.site.paths.entries}
    assert routes["/traced/"].chain.for_method(b"TRACE") is routes["/traced/"].chain
    assert REFUSE_TRACE not in routes["/traced/"].chain.policies
    h.request(b"TRACE /traced/x HTTP/1.1\r\nHost: app.test\r\n\r\n")
    assert h.ut.data.startswith(b"TRACE /traced/x HTTP/1.1\r\n")
    h.respond()
    assert h.ct.data.startswith(b"HTTP/1.1 200 OK\r\n")
    h.ct.data.clear()
    h.request(b"TRACE /other HTTP/1.1\r\nHost: app.test\r\n\r\n")
    assert h.ct.data.startswith(b"HTTP/1.1 405 ")


def test_declared_body_over_max_body_is_413_before_the_upstream(harness):
    h = harness(config=LIMITED)
    route = h.site.root_only
    assert [p.limit for p in route.chain.policies if isinstance(p, MaxBody)] == [1024]
    h.request(b"POST /x HTTP/1.1\r\nHost: app.test\r\nContent-Length: 1025\r\n\r\n")
    assert h.ct.data.startswith(b"HTTP/1.1 413 ") and h.ut.data == b""
    assert b"\r\nConnection: close\r\n" in h.ct.data  # the body is not read
    assert "body of 1025 bytes over max_body 1024" in h.error_log()


def test_declared_body_within_max_body_goes_upstream(harness):
    h = harness(config=LIMITED)
    h.request(b"POST /x HTTP/1.1\r\nHost: app.test\r\nContent-Length: 1024\r\n\r\n" + b"a" * 1024)
    assert h.ut.data.startswith(b"POST /x HTTP/1.1\r\n") and h.ut.data.endswith(b"a" * 1024)
    h.respond()
    assert h.ct.data.startswith(b"HTTP/1.1 200 OK\r\n")


def test_chunked_body_over_max_body_is_counted_as_it_arrives(harness):
    """No Content-Length: the request phase cannot know, Exchange.on_request_body counts."""
    h = harness(config=LIMITED)
    h.request(b"POST /x HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"400\r\n" + b"a" * 1024 + b"\r\n")
    assert not h.ct.data  # within the limit so far: on its way
    h.request(b"1\r\nb\r\n0\r\n\r\n")
    h.run()
    assert h.ct.data.startswith(b"HTTP/1.1 413 ")
    assert "body passed max_body 1024" in h.error_log()


def test_a_route_without_max_body_has_no_such_policy(harness):
    route = harness().site.root_only
    assert route.max_body is None and not [p for p in route.chain.policies if isinstance(p, MaxBody)]


@pytest.mark.parametrize("target, location", [(b"/radicale", b"/radicale/"),
                                              (b"/radicale?x=1", b"/radicale/?x=1")])
def test_prefix_name_without_slash_is_redirected_by_the_sites_chain(harness, target, location):
    h = harness(config=MOUNTED)
    assert h.site.root_only is None
    assert [p.slashless for p in h.site.chain.policies if isinstance(p, TrailingSlash)] == [
        frozenset({b"/radicale"})]  # "/app" has an exact route
    assert all(not isinstance(p, TrailingSlash) for _, r in h.site.paths.entries for p in r.chain.policies)
    h.request(b"GET " + target + b" HTTP/1.1\r\nHost: app.test\r\n\r\n")
    assert h.ct.data.startswith(b"HTTP/1.1 301 ") and h.ut.data == b""
    assert b"\r\nLocation: " + location + b"\r\n" in h.ct.data
    assert not h.ct.closed


@pytest.mark.parametrize("target", [b"/app", b"/radicale/", b"/radicalex", b"/"])
def test_other_paths_are_routed(harness, target):
    """An exact route keeps its name; the route "/" takes the rest, but for "/radicale"."""
    h = harness(config=MOUNTED)
    h.request(b"GET " + target + b" HTTP/1.1\r\nHost: app.test\r\n\r\n")
    assert h.ut.data.startswith(b"GET " + target + b" HTTP/1.1\r\n")


def test_without_a_route_for_the_path_404_and_no_slash_policy(harness):
    config = CONFIG.replace('proxy = "http://127.0.0.1:9"\n', '') + (
        '[[site.route]]\npath = "/radicale/"\nproxy = "http://127.0.0.1:9"\n')
    h = harness(config=config)
    h.request(b"GET /other HTTP/1.1\r\nHost: app.test\r\n\r\n")
    assert h.ct.data.startswith(b"HTTP/1.1 404 ")
    no_prefix = harness(config=TRACED.replace('path = "/traced/"', 'exact = "/traced"'))
    assert not no_prefix.site.paths.slashless
    assert all(not isinstance(p, TrailingSlash) for p in no_prefix.site.chain.policies)


def test_h2_trace_405_max_body_413_and_slash_301(h2harness):
    h = h2harness()
    headers, body = h.response(h.get(method=b"TRACE"))
    assert headers[b":status"] == b"405" and headers[b"allow"] == ALLOW and body
    assert h.ut.data == b""
    limited = h2harness(config=LIMITED)
    sid = limited.get(method=b"POST", extra=[(b"content-length", b"2000")], body=b"y" * 2000)
    assert limited.response(sid)[0][b":status"] == b"413" and limited.ut.data == b""
    assert "body of 2000 bytes over max_body 1024" in limited.error_log()
    mounted = h2harness(config=MOUNTED)
    headers, body = mounted.response(mounted.get("/radicale?x=1"))
    assert headers[b":status"] == b"301" and headers[b"location"] == b"/radicale/?x=1"
    assert mounted.ut.data == b""


def test_static_files_answer_before_the_trace_and_body_checks(harness, tmp_path):
    """pipeline.ORDER: root first, as when proxy.py ran these checks after every request
    hook: its own 405 (Allow: GET, HEAD) for TRACE and for a POST over max_body."""
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "a.txt").write_text("a\n")
    config = CONFIG.replace('proxy = "http://127.0.0.1:9"\n', f'root = "{tmp_path / "www"}"\nmax_body = "1k"\n')
    h = harness(config=config)
    assert h.site.root_only.chain.names[:3] == ("root", "allow_trace", "max_body")
    for head in (b"TRACE /a.txt HTTP/1.1\r\nHost: app.test\r\n\r\n",
                 b"POST /a.txt HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5000\r\n\r\n"):
        h.ct.data.clear()
        h.request(head)
        assert h.ct.data.startswith(b"HTTP/1.1 405 ") and b"\r\nAllow: GET, HEAD\r\n" in h.ct.data
