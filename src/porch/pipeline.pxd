# Typed fields for the compiled build (setup.py); the .py is the code.  Chain is an
# extension type so that the exchange's per-phase test (`chain.response`) is a C field
# read, not an attribute lookup: a route without policies pays ~nothing (bench/hotpath.py).
cimport cython


cdef class Chain:
    cdef public tuple policies, names, request, upstream_request, response, response_body, log
    cdef public tuple methods, method_chains  # None without a policy limited to some methods

    @cython.locals(methods=tuple, m=bytes, i=Py_ssize_t)
    cpdef Chain for_method(self, bytes method)
