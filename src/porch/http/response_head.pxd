# C-level function and typed locals for the compiled build (setup.py); the .py is the code.
cimport cython

cdef dict _KINDS_SEEN
cdef bytes _GATE

@cython.locals(p=cython.p_uchar, gate=cython.p_uchar, length=Py_ssize_t, kind=object, n=Py_ssize_t, i=Py_ssize_t, sp=Py_ssize_t, j=Py_ssize_t,
               eol=Py_ssize_t, colon=Py_ssize_t, v=Py_ssize_t, e=Py_ssize_t, status=int, dated=bint,
               lines=list, name=bytes, value=bytes, reason=bytes)
cpdef parse_response_head(bytes head, Py_ssize_t start)
