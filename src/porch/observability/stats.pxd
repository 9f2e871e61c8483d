# Typed fields and C-level methods for the compiled build (setup.py); the .py is the code.
cimport cython

cdef class RouteStats:
    cdef public str site, route
    cdef long long requests[18]
    cdef long long total[17]
    cdef long long upstream[17]
    cdef double bounds[16]
    cdef public double total_sum, upstream_sum
    cdef public long long bytes_in, bytes_out

    @cython.locals(proto=int, cls=int)
    cpdef record(self, int status, bytes version, long long bytes_in, long long bytes_out, double took,
                 double upstream)
    @cython.locals(i=int)
    cdef int _bucket(self, double seconds)
