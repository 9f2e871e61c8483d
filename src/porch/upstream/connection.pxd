# Typed fields and C-level methods for the compiled build (setup.py); the .py is the code.
# Every attribute the class sets must be declared here: compiled, setting an undeclared one
# raises AttributeError (the suite runs compiled: tests/conftest.py).
from porch.server.proxy cimport Exchange

cdef class UpstreamConnection:
    cdef public object target, transport, parser, _special
    cdef public Exchange exchange
    cdef public double idle_since
    cdef public bint closed, reused, _got_bytes, _skip_body, _final
    cdef public bytes _reason
    cdef public list _lines

    cpdef lease(self, Exchange exchange, bint skip_body)
    cpdef release(self)
    cpdef bint is_usable(self)
    cpdef close(self)
    cpdef abort(self)
