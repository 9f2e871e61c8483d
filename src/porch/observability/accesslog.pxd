# Typed fields and C-level methods for the compiled build (setup.py); the .py is the code.
from porch.observability.record cimport LogRecord
cimport cython

@cython.locals(c=cython.uchar)
cpdef bint plain(bytes value)

cdef bytes _V11

cdef class AccessLog:
    cdef public str path, format
    cdef public bint enabled, json, vhost
    cdef public object _sink
    cdef public list lines
    cdef public int count
    cdef public double _next_second
    cdef public bytes _stamp
    cdef public dict _durations, _ips, _statuses, _sizes

    cpdef log(self, LogRecord rec, double now)
    @cython.locals(ms=long, lines=list)
    cpdef _combined(self, LogRecord ex, double now)
