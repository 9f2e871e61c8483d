# Typed fields for the compiled build (setup.py); the .py is the code.  Compiled, making
# a head and its Headers for the policies' hooks costs a few C allocations.

cimport cython

cdef class Headers:
    cdef public list flat
    # cpdef for the typed loop index (a C loop over the flat list, not a range object
    # of Python ints): the lookups that every policy makes.
    @cython.locals(flat=list, i=Py_ssize_t, size=Py_ssize_t)
    cpdef get(self, name, default=*)
    @cython.locals(flat=list, i=Py_ssize_t, size=Py_ssize_t, out=list)
    cpdef list get_all(self, name)
    @cython.locals(flat=list, i=Py_ssize_t, size=Py_ssize_t, at=Py_ssize_t)
    cpdef set(self, name, value)
    cpdef setdefault(self, name, value)
    cpdef add_missing(self, fields)
    @cython.locals(flat=list, i=Py_ssize_t, dropped=Py_ssize_t, sizes=set)
    cpdef remove_all(self, names)

cdef class RequestHead:
    cdef public bytes method, target, host, version
    cdef public Headers headers

cdef class ResponseHead:
    cdef public int status
    cdef public bytes reason
    cdef public Headers headers
