# Typed fields for the compiled build (setup.py); the .py is the code.  Compiled, making
# a head and its Headers for the policies' hooks costs a few C allocations.

cdef class Headers:
    cdef public list flat

cdef class RequestHead:
    cdef public bytes method, target, host, version
    cdef public Headers headers

cdef class ResponseHead:
    cdef public int status
    cdef public bytes reason
    cdef public Headers headers
