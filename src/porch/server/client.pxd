# Typed fields and C-level methods for the compiled build (setup.py); the .py is the code.
# Every attribute the class sets must be declared here: compiled, setting an undeclared one
# raises AttributeError (the suite runs compiled: tests/conftest.py).
from porch.server.proxy cimport Exchange

cdef class ClientConnection:
    cdef public object server, loop, transport, parser, queue
    cdef public bytes scheme, local_port, forwarding
    cdef public str peer_ip
    cdef public bint peer_trusted, write_paused, closing, gone
    cdef public Exchange active, reading
    cdef public int blocks, deadline_kind
    cdef public double write_paused_at, deadline
    cdef public Py_ssize_t _head_size, _head_bytes

    cpdef exchange_finished(self, Exchange ex)
    cpdef block(self, int reason)
    cpdef unblock(self, int reason)
