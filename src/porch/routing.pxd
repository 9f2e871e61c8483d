# Typed fields and C-level methods for the compiled build (setup.py); the .py is the code.
cdef class PathTable:
    cdef public tuple entries, patterns
    cdef public frozenset slashless, stops
    cdef public dict exact
    cdef public bint nginx

    cpdef match(self, bytes path)
    cpdef _select(self, bytes path)
    cpdef bint needs_slash(self, bytes path)


cdef class HostTable:
    cdef public dict exact, memo
    cdef public tuple wildcards
    cdef public object default

    cpdef lookup(self, str host)
    cpdef find(self, bytes header)
