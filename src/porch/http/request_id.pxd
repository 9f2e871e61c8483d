# Typed globals and C-level functions for the compiled build (setup.py); the .py is the code.

cdef tuple _HEX2
cdef bytes _rid_prefix, _rid_base
cdef unsigned long long _rid_n

cpdef bytes next_request_id()
