# Typed fields for the compiled build (setup.py); the .py is the code.  Chain is an
# extension type so that the exchange's per-phase test (`chain.response`) is a C field
# read, not an attribute lookup: a route without policies pays ~nothing (bench/hotpath.py).

cdef class Chain:
    cdef public tuple policies, names, request, upstream_request, response, response_body, log
