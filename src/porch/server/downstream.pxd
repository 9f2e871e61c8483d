# Typed methods for the compiled build (setup.py); the .py is the code.  The Exchange
# calls these as C calls; H2Downstream (server/h2stream.py, not compiled) overrides
# them in Python, which cpdef allows.
from porch.server.proxy cimport Exchange
from porch.http.model cimport ResponseHead

from porch.http.h1 cimport relayed_status_line

cdef int EV_HEAD, RQ_DONE, RS_IDLE, RS_SENDING
cdef int BODY_CHUNKED, BODY_CLOSE, BODY_LENGTH, BODY_NONE
cdef bytes _CONTINUE, _CHUNKED_LINE, _CLOSE_LINE, _KEEPALIVE_LINE, _CRLF, LAST_CHUNK

cdef class Downstream:
    cpdef send_continue(self, Exchange ex)
    cpdef send_interim(self, Exchange ex, int status, bytes reason, list lines)
    cpdef send_head(self, Exchange ex, int status, bytes reason, list lines)
    cpdef send_data(self, Exchange ex, bytes data)
    cpdef flush(self, Exchange ex)
    cpdef send_end(self, Exchange ex)
    cpdef send_local(self, Exchange ex, ResponseHead head, bytes body, bint more)
    cpdef long long send_file_piece(self, Exchange ex, body)
    cpdef prepare_switch(self, Exchange ex, bytes reason, list lines)
    cpdef int send_switch(self, Exchange ex, transport)
    cpdef reset(self, Exchange ex)

cdef class H1Downstream(Downstream):
    pass

cdef class H1TlsDownstream(H1Downstream):
    pass
