# Typed fields and C-level methods for the compiled build (setup.py); the .py is the code.
# The connection (connection.pxd) holds one of these; server/proxy.pxd's Exchange derives
# from it, and Python classes may too (policies/forward_auth.py).

cdef class UpstreamListener:
    cdef public object out
    cdef public bint up_seen  # last: an Exchange's own 4-byte fields follow without padding

    cpdef on_response_head(self, int status, bytes reason, list lines, special, bint keep_alive)
    cpdef on_response_body(self, bytes data)
    cpdef on_response_end(self)
    cpdef flush(self)
    cpdef on_upstream_lost(self, cause, bint got_bytes)
    cpdef on_upstream_paused(self, bint paused)
    cpdef on_upstream_upgrade(self, transport, bytes rest)
