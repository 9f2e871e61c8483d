# C-level functions for the compiled build (setup.py); the .py is the code.
cdef int _last_status
cdef bytes _last_reason, _last_line

cpdef bytes relayed_status_line(int status, bytes reason_phrase)
cimport cython

cdef bint _COMPILED

@cython.locals(n=Py_ssize_t, eol=Py_ssize_t, end=Py_ssize_t, p=cython.p_uchar, minor=cython.uchar)
cpdef request_line_version(bytes data, Py_ssize_t start)
