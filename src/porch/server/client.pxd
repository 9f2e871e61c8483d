# Typed fields and C-level methods for the compiled build (setup.py); the .py is the code.
# Every attribute the class sets must be declared here: compiled, setting an undeclared one
# raises AttributeError (the suite runs compiled: tests/conftest.py).
from porch.server.proxy cimport Exchange
from porch.http.h1 cimport request_line_version
from porch.routing cimport HostTable
from porch.server.downstream cimport Downstream
cimport cython

cdef int _H_FORWARD, _H_HOST, _H_CL, _H_TE, _H_CONNECTION, _H_EXPECT, _H_DROP, _H_XFF, _H_XFPROTO
cdef int RQ_DONE, RS_DONE, RS_IDLE  # server/lifecycle.py
cdef int _H_XFHOST, _H_XFPORT, _H_REFERER, _H_UA, _H_UPGRADE, _H_UNDERSCORE, _H_REQID

cdef class ClientConnection:
    cdef public object server, loop, transport, parser, queue
    cdef public HostTable hosts
    cdef public Downstream down
    cdef public bytes scheme, local_port, forwarding
    cdef public str peer_ip
    cdef public bint peer_trusted, write_paused, closing, draining, gone
    cdef public Exchange active, reading
    cdef public int blocks, deadline_kind
    cdef public double write_paused_at, deadline
    cdef public Py_ssize_t _head_size, _head_bytes, _pos, _chunk_at
    cdef public bytes _data, _tail

    @cython.locals(kind=int, ex=Exchange, headers=list)
    cpdef on_header(self, bytes name, bytes value)
    cpdef _special_header(self, Exchange ex, int kind, bytes name, bytes value)
    cpdef exchange_finished(self, Exchange ex)
    cpdef _route_head(self, Exchange ex)
    cpdef block(self, int reason)
    cpdef unblock(self, int reason)
