# Typed fields and C-level methods for the compiled build (setup.py); the .py is the code.
# Every attribute the class sets must be declared here: compiled, setting an undeclared one
# raises AttributeError (the suite runs compiled: tests/conftest.py).
from porch.upstream.listener cimport UpstreamListener
from porch.upstream.pool cimport Pooled
from porch.http.response_head cimport parse_response_head
cimport cython

cdef class UpstreamConnection(Pooled):
    cdef public object target, transport, parser, _parts
    cdef public UpstreamListener exchange
    cdef public bint closed, reused, _got_bytes, _skip_body, _final, _in_head, _ended
    cdef public bytes _data
    cdef public Py_ssize_t _pos, _kept

    cpdef lease(self, UpstreamListener exchange, bint skip_body)
    cpdef release(self)
    cpdef bint is_usable(self)
    cpdef close(self)
    cpdef abort(self)
    cpdef on_message_begin(self)
    @cython.locals(data=bytes, start=Py_ssize_t, end=Py_ssize_t, status=int)
    cpdef on_headers_complete(self)
