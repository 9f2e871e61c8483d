# Typed for the compiled build (setup.py); the .py is the code.  The cache and the Gate
# are extension types: the Gate's request hook and the cache lookups it makes run on
# every request of a route with basic_auth (bench/hotpath.py --policies bench).
cimport cython

cdef class VerifiedCache:
    cdef public Py_ssize_t size
    cdef public double ttl
    cdef object _keyed
    cdef public object _until
    cpdef bytes token(self, bytes authorization)
    @cython.locals(until=double)
    cpdef fresh(self, bytes token, double now)
    cpdef add(self, bytes token, entry, double now)

cdef class Gate:
    cdef public object policy, blocked, file
    cdef public VerifiedCache cache
    @cython.locals(ns=cython.longlong, now=double)
    cpdef request(self, ctx)

cpdef bytes login_key(str key)
