# Typed for the compiled build (setup.py); the .py is the code.  Plan is an extension
# type: its hooks run on every response of a route with `compress`, and its fields,
# its pass over the head and its calls are C ones (bench/hotpath.py --policies bench).
cimport cython
from porch.http.model cimport Headers, ResponseHead
from porch.policies.codings cimport Chooser

cdef dict _NAMES, _CODES, _CODING_NAMES
cdef int _NO, _YES, _STREAM
cdef int _F_NONE, _F_TYPE, _F_LENGTH, _F_CONTROL, _F_ETAG, _F_VARY, _F_RANGES, _F_SKIP

cdef class Plan:
    cdef public object zstd
    cdef public Chooser choose
    cdef public dict levels, typed
    cdef public Py_ssize_t min_length
    cdef public frozenset types
    cdef public tuple majors
    cdef public bint any_type

    @cython.locals(status=int, headers=Headers, flat=list, i=Py_ssize_t, code=int, typed=int,
                   length=Py_ssize_t, etag_at=Py_ssize_t)
    cpdef response(self, ctx, ResponseHead head)
    cpdef response_body(self, ctx, bytes data, bint end)
    cpdef int classify(self, bytes value)
    cpdef encoder(self, str coding, Py_ssize_t length, bint stream)

@cython.locals(code=int)
cpdef int _code(bytes field)
@cython.locals(flat=list, i=Py_ssize_t)
cpdef _add_vary(Headers headers, vary)
cpdef _weaken_etag(Headers headers, etag)
