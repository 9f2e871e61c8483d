# Typed for the compiled build (setup.py); the .py is the code.  The encoders and the
# chooser are extension types: compress calls them on every response it codes.
cimport cython

cdef class Chooser:
    cdef public tuple offered
    cdef readonly dict _cache
    cpdef pick(self, bytes accept)

cdef class GzipEncoder:
    cdef public object z
    cdef public bint flush_each
    cpdef bytes push(self, bytes data)
    cpdef bytes finish(self, bytes data)

cdef class BrotliEncoder:
    cdef public object c
    cdef public bint flush_each
    cpdef bytes push(self, bytes data)
    cpdef bytes finish(self, bytes data)

cdef class ZstdEncoder:
    cdef public object obj, pool, cctx
    cdef public bint flush_each
    cpdef bytes push(self, bytes data)
    cpdef bytes finish(self, bytes data)

cpdef int _window_bits(Py_ssize_t length, int largest, int smallest)
