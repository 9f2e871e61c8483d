# Typed fields and C-level methods for the compiled build (setup.py); the .py is the code.
# Every attribute the class sets must be declared here: compiled, setting an undeclared one
# raises AttributeError (the suite runs compiled: tests/conftest.py).
from porch.server.client cimport ClientConnection
from porch.upstream.connection cimport UpstreamConnection
from porch.upstream.listener cimport UpstreamListener
from porch.runtime cimport RouteRuntime, Runtime, SiteRuntime
from porch.observability.accesslog cimport AccessLog
from porch.observability.record cimport LogRecord
from porch.observability.stats cimport RouteStats
from porch.upstream.pool cimport Target
from porch.pipeline cimport Chain
from porch.http.model cimport Headers, RequestHead, ResponseHead
from porch.policies.forwarding cimport trusted_part
from porch.http.target cimport needs_a_look
from porch.http.request_id cimport next_request_id
cimport cython

cdef LogRecord _RECORD
# server/lifecycle.py's states, events and tables, as C values here
cdef int RS_IDLE, RS_DONE, RQ_BODY, RQ_DONE, EV_FINISH, EV_SWITCH, NO_MOVE
cdef unsigned long long RESPONSE_PACKED, REQUEST_PACKED
# http/h1.py's framing and special-header kinds, as C values (compared per request)
cdef int BODY_CHUNKED, BODY_CLOSE, BODY_LENGTH, BODY_NONE
cdef int RH_CONNECTION, RH_LENGTH, RH_LOCATION, RH_REFRESH, RH_TE

cdef class Exchange(UpstreamListener):
    # The 4-, 2- and 1-byte fields first, right after the base's `up_seen`, and the statuses
    # (100-999) as shorts: no padding between them.  Under 496 bytes: with the GC header the
    # object comes from pymalloc instead of malloc() (~350 instructions a request less,
    # bench/hotpath.py under callgrind); the connection's peer_ip and local_port are read
    # from `client`, and the body counters are ints (bounded by PENDING_LIMIT and
    # REPLAY_LIMIT, plus one read).  test_pipeline_exchange checks the size.
    cdef public int framing, tries, pending_size, replay_size
    cdef public short status, upstream_status
    # The flags as bytes, not `bint` (a C int): 36 bytes less, which keeps room for the
    # next field within pymalloc's limit.  Python code reads them as 0/1 ints.
    cdef public unsigned char chunked, expect_continue, keep_alive, retried, websocket
    cdef public unsigned char up_keep_alive, up_until_close, peer_trusted
    # the two sides' states (server/lifecycle.py): moved by move() and end_request() only
    cdef public unsigned char rq, rs
    cdef public bytes method, target, version, referer, user_agent, upstream_target, upstream_head
    cdef public bytes tunnel_early, path, query, request_id
    cdef public object switch_head
    cdef public object host_header, content_length, xff, xf_proto, xf_host, xf_port, connection_tokens
    cdef public str host, site, client_ip
    cdef public object sending
    cdef public object head_error, local, pending, replay, connect_task, error, waiting, _vars
    cdef public Chain chain
    cdef public Target chosen, leased, cookie_target
    cdef public object candidates
    cdef public double try_until
    cdef public RouteRuntime route
    cdef public Runtime runtime
    cdef public UpstreamConnection upstream
    cdef public ClientConnection client
    cdef public long long bytes_in, bytes_out
    cdef public double up_deadline, t_upstream_connect, t_upstream_header, t_end, t_start
    cdef public list headers

    cpdef setup(self, client, runtime, double t_start)
    @cython.locals(site=SiteRuntime, route=RouteRuntime, target=bytes, path=bytes, sep=bytes, query=bytes, chain=Chain)
    cpdef route_request(self)
    @cython.locals(route=RouteRuntime, path=bytes, query=bytes)
    cpdef _routed(self)
    cpdef begin(self)
    @cython.locals(route=RouteRuntime, head=RequestHead, fields=list, target=bytes, parts=list)
    cpdef bytes _upstream_head(self)
    cpdef bint _run_head_hooks(self, tuple hooks, object head)
    cpdef bytes _end_head(self, list parts)
    @cython.locals(target=Target)
    cpdef _find_upstream(self, bint fresh)
    cpdef _attach(self, UpstreamConnection conn, Target target, double now)
    cpdef on_request_body(self, bytes data)
    cpdef on_request_end(self)
    cpdef on_response_head(self, int status, bytes reason, list lines, special, bint keep_alive)
    @cython.locals(has_length=bint, has_te=bint)
    cpdef list _relayed_lines(self, list lines, special)
    cpdef on_response_body(self, bytes data)
    cpdef flush(self)
    cpdef on_response_end(self)
    cpdef on_upstream_lost(self, cause, bint got_bytes)
    cpdef on_upstream_paused(self, bint paused)
    cpdef on_upstream_upgrade(self, transport, bytes rest)
    cpdef finish(self)
    @cython.locals(state=int)
    cpdef move(self, int event)
    @cython.locals(state=int)
    cpdef end_request(self)
    @cython.locals(route=RouteRuntime, log=AccessLog, stats=RouteStats)
    cpdef account(self, double now)
    cpdef LogRecord fill_record(self, LogRecord rec)
