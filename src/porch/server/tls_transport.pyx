# cython: language_level=3, boundscheck=False, wraparound=False
"""HTTPS to clients: TLS between the event loop's TCP transport and Porch's
connection, with the records read and written by OpenSSL's C calls directly.

Why Porch has its own (issue 16, bench/RESULTS.md "TLS keep-alive"): uvloop's
SSLProtocol pays, on every request of a kept-alive connection, about 9,000
instructions of glue around OpenSSL's own ~15,000: a Python-level call for each
SSL_read, SSL_write and BIO read, an SSLWantReadError raised and caught after the
last record of every read, a 256 KiB read buffer per connection, a deque of
pending writes.  Here a read is: the bytes into the incoming memory BIO, SSL_read
until it wants more, one `data_received`; a write is SSL_write and one write of the
outgoing BIO's bytes to the TCP transport.

The SSL object is Python's (`ssl.SSLObject`, as `SSLContext.wrap_bio` makes it), so
the SNI callback, ALPN, session tickets and certificates work exactly as before and
`get_extra_info("ssl_object")` is that SSLObject.  Its `SSL *` is taken from CPython's
`_ssl._SSLSocket` (the first field after the socket's weak reference; `_ssl.c` stores
the object itself as the SSL's app data, which `usable()` and every connection check
before use), and the handshake and the records are driven from C: SSL_do_handshake
(Python's SNI callback runs from it as from `SSLObject.do_handshake`), SSL_read,
SSL_write, SSL_shutdown.  This relies on the process using one libssl (Python's `_ssl`
and this module link the same shared library: `usable()` compares their versions) and
on CPython's layout of `_SSLSocket`, unchanged from 3.7 to 3.14; where either check
fails, server/tls_layer.py keeps uvloop's SSLProtocol.

Behaviour kept from uvloop's SSLProtocol (the tests pin it):
- the application's `connection_made` comes after the handshake; a handshake that
  fails or times out never reaches it (the alert OpenSSL made is sent first);
- a TCP EOF without close_notify closes the connection (no `eof_received`);
  close_notify from the client calls `eof_received`, then the connection shuts down;
- `close()` sends what is buffered and close_notify, then waits up to the shutdown
  timeout for the client's close_notify or EOF (the lingering close: the client's
  unread bytes never turn into a reset that destroys the last response);
- `can_write_eof()` is False.
Write flow control is the TCP transport's own (its limits, its pause_writing and
resume_writing passed on): the encrypted bytes are written to it at once.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.object cimport PyObject
from libc.stdlib cimport realloc

import ssl as _ssl


cdef extern from "openssl/ssl.h":
    ctypedef struct SSL:
        pass
    ctypedef struct BIO:
        pass
    int SSL_read_ex(SSL *s, void *buf, size_t num, size_t *readbytes)
    int SSL_write_ex(SSL *s, const void *buf, size_t num, size_t *written)
    int SSL_get_error(const SSL *s, int ret)
    int SSL_pending(const SSL *s)
    int SSL_shutdown(SSL *s)
    int SSL_get_shutdown(const SSL *s)
    BIO *SSL_get_rbio(const SSL *s)
    BIO *SSL_get_wbio(const SSL *s)
    void *SSL_get_ex_data(const SSL *s, int idx)
    int SSL_do_handshake(SSL *s)
    enum:
        SSL_ERROR_WANT_READ
        SSL_ERROR_ZERO_RETURN
        SSL_RECEIVED_SHUTDOWN

cdef extern from "openssl/crypto.h":
    unsigned long OpenSSL_version_num()

cdef extern from "openssl/bio.h":
    int BIO_write(BIO *b, const void *data, int dlen)
    int BIO_read(BIO *b, void *data, int dlen)
    size_t BIO_ctrl_pending(BIO *b)

cdef extern from "openssl/err.h":
    void ERR_clear_error()
    unsigned long ERR_peek_error()


cdef inline void _clean_errors():
    # SSL_get_error reads the thread's error queue: it must hold nothing from earlier
    # calls.  Peeking is a few dozen instructions; clearing walks all 16 slots.
    if ERR_peek_error():
        ERR_clear_error()


# The head of CPython's PySSLSocket (Modules/_ssl.c): PyObject_HEAD, the weak
# reference to a socket (NULL for wrap_bio), then the SSL *.
ctypedef struct _SSLSocketHead:
    Py_ssize_t ob_refcnt
    void *ob_type
    void *Socket
    SSL *ssl


cdef object _SSLSocketType = None
# SSLContext.wrap_bio's maker of ssl.SSLObject (Lib/ssl.py, 3.7 to 3.14): incoming,
# outgoing, server_side, server_hostname, session, context
_new_sslobject = _ssl.SSLObject._create

# One record decrypts to at most 16 KiB; the shared read buffer holds what one TCP
# read decrypts to (a worker is one thread: the plaintext is copied out before the
# application runs).
DEF RECORD = 16384
cdef char *_buf = NULL
cdef size_t _buf_size = 0

cdef enum:
    S_HANDSHAKE = 0
    S_WRAPPED = 1
    S_SHUTDOWN = 2  # close_notify sent (or being sent): reading into the void
    S_CLOSED = 3


cdef SSL *_ssl_of(object sslobject):
    """The SSL * under `sslobject` (an ssl.SSLObject), or NULL when it is not one
    whose layout this module knows."""
    conn = getattr(sslobject, "_sslobj", None)
    if conn is None or type(conn) is not _SSLSocketType:
        return NULL
    cdef SSL *s = (<_SSLSocketHead *><PyObject *>conn).ssl
    if s == NULL or SSL_get_ex_data(s, 0) != <void *><PyObject *>conn:
        return NULL
    return s


def usable() -> str | None:
    """None when this module can drive the SSL of Python's SSLObjects here; else why not."""
    global _SSLSocketType
    if OpenSSL_version_num() != _ssl.OPENSSL_VERSION_NUMBER:
        return (f"libssl {OpenSSL_version_num():#x} here, {_ssl.OPENSSL_VERSION_NUMBER:#x} "
                f"in Python's ssl module")
    ctx = _ssl.SSLContext(_ssl.PROTOCOL_TLS_SERVER)
    # made as each connection makes its SSLObject (connection_made): the path checked is the one used
    probe = _new_sslobject(_ssl.MemoryBIO(), _ssl.MemoryBIO(), True, None, None, ctx)
    _SSLSocketType = type(probe._sslobj)
    if type(probe._sslobj).__name__ != "_SSLSocket" or _ssl_of(probe) == NULL:
        _SSLSocketType = None
        return "the layout of ssl's _SSLSocket is not the one this module reads"
    return None


cdef bint _grow(size_t need):
    global _buf, _buf_size
    cdef size_t size = _buf_size or 65536
    while size < need:
        size *= 2
    cdef char *p = <char *>realloc(_buf, size)
    if p == NULL:
        return False
    _buf = p
    _buf_size = size
    return True


cdef class TlsTransport:
    """The TCP transport's protocol, and the transport of `app` (asyncio's
    Protocol and Transport methods, as Porch's connections use them)."""

    cdef object loop, app, tcp, context, sslobject, incoming, outgoing
    cdef object hs_timer, shutdown_timer
    cdef double hs_timeout, shutdown_timeout
    cdef SSL *ssl
    cdef BIO *rbio
    cdef BIO *wbio
    cdef int state
    cdef bint app_made, app_lost, app_paused, closing, resume_queued, tcp_paused

    def __init__(self, loop, app, context, double handshake_timeout, double shutdown_timeout):
        self.loop = loop
        self.app = app
        self.context = context
        self.hs_timeout = handshake_timeout
        self.shutdown_timeout = shutdown_timeout
        self.state = S_HANDSHAKE

    # -- the TCP transport's protocol ------------------------------------------

    def connection_made(self, tcp):
        self.tcp = tcp
        self.incoming = _ssl.MemoryBIO()
        self.outgoing = _ssl.MemoryBIO()
        # ssl.SSLObject, as SSLContext.wrap_bio makes it (the SNI callback gets it), without
        # that method's frame or the context's sslobject_class (uvloop's, tls/contexts.py)
        self.sslobject = _new_sslobject(self.incoming, self.outgoing, True, None, None, self.context)
        cdef SSL *s = _ssl_of(self.sslobject)
        if s == NULL:  # usable() said yes: this does not happen; never guess
            self.state = S_CLOSED
            self.closing = True
            tcp.abort()
            raise RuntimeError("TLS: no SSL where usable() found one")
        self.ssl = s
        self.rbio = SSL_get_rbio(s)
        self.wbio = SSL_get_wbio(s)
        self.hs_timer = self.loop.call_later(self.hs_timeout, self._handshake_timed_out)

    def data_received(self, data):
        cdef int state = self.state
        if type(data) is not bytes:
            data = bytes(data)  # the Mux hands over what it read as a bytearray slice
        if state == S_WRAPPED:
            BIO_write(self.rbio, PyBytes_AS_STRING(data), <int>PyBytes_GET_SIZE(data))
            if not self.app_paused:
                self._read()
        elif state == S_HANDSHAKE:
            BIO_write(self.rbio, PyBytes_AS_STRING(data), <int>PyBytes_GET_SIZE(data))
            self._handshake()
        elif state == S_SHUTDOWN:
            BIO_write(self.rbio, PyBytes_AS_STRING(data), <int>PyBytes_GET_SIZE(data))
            self._read_into_void()

    def eof_received(self):
        # Before the handshake's end, or without close_notify: the transport closes
        # itself (after sending what it holds); the application sees connection_lost.
        return False

    def connection_lost(self, exc):
        self.state = S_CLOSED
        self.closing = True
        self._cancel_timers()
        self.ssl = NULL
        self.rbio = self.wbio = NULL
        try:
            if self.app_made and not self.app_lost:
                self.app_lost = True
                # get_extra_info("peername") still answers here (the connection limits
                # free the client's place by it: server/limits.py)
                self.app.connection_lost(exc)
        finally:
            self.app = None  # it holds this transport: no cycle left behind
            self.tcp = None

    def pause_writing(self):
        self.tcp_paused = True
        if self.app_made and not self.app_lost:
            self.app.pause_writing()

    def resume_writing(self):
        self.tcp_paused = False
        if self.app_made and not self.app_lost:
            self.app.resume_writing()

    # -- the handshake (SSL_do_handshake on Python's SSL) -----------------------

    cdef _handshake(self):
        # SSL_do_handshake on Python's SSL: its SNI callback (set on the context by
        # Python) finds the SSLObject through the SSL's app data, as when
        # SSLObject.do_handshake calls it; no SSLWantReadError is made for each flight.
        _clean_errors()
        cdef int r = SSL_do_handshake(self.ssl)
        if r == 1:
            self._handshake_done()
            return
        if SSL_get_error(self.ssl, r) == SSL_ERROR_WANT_READ:
            self._flush()
            return
        # Refused (an unknown name, no common protocol or cipher, not TLS): the
        # alert OpenSSL made goes out, then the connection closes.
        ERR_clear_error()
        self._cancel_timers()
        self.state = S_CLOSED
        self.closing = True
        self._flush()
        self.tcp.close()

    cdef _handshake_done(self):
        self._cancel_timers()
        self.state = S_WRAPPED
        self._flush()  # TLS 1.3 session tickets
        self.app_made = True
        self.app.connection_made(self)
        if self.tcp_paused and self.app is not None:
            self.app.pause_writing()  # the handshake filled the socket: say so now
        if self.state == S_WRAPPED and not self.app_paused:
            self._read()  # a request sent with the client's Finished

    def _handshake_timed_out(self):
        self.hs_timer = None
        if self.state == S_HANDSHAKE:
            self.state = S_CLOSED
            self.closing = True
            self.tcp.abort()

    cdef _cancel_timers(self):
        if self.hs_timer is not None:
            self.hs_timer.cancel()
            self.hs_timer = None
        if self.shutdown_timer is not None:
            self.shutdown_timer.cancel()
            self.shutdown_timer = None

    # -- records (OpenSSL's calls) -----------------------------------------------

    cdef _flush(self):
        """The records OpenSSL wrote to the outgoing BIO, to the TCP transport."""
        cdef size_t n = BIO_ctrl_pending(self.wbio)
        if n == 0:
            return
        out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>n)
        BIO_read(self.wbio, PyBytes_AS_STRING(out), <int>n)
        self.tcp.write(out)

    cdef _read(self):
        """Decrypt every whole record received; one data_received with the plaintext."""
        cdef size_t total = 0, got = 0
        cdef int err = 0
        cdef SSL *s = self.ssl
        _clean_errors()
        while BIO_ctrl_pending(self.rbio) or SSL_pending(s):
            if _buf_size - total < RECORD and not _grow(total + RECORD):
                raise MemoryError()
            if SSL_read_ex(s, _buf + total, _buf_size - total, &got):
                total += got
                continue
            err = SSL_get_error(s, 0)
            break
        if err != 0 and err != SSL_ERROR_WANT_READ and err != SSL_ERROR_ZERO_RETURN:
            ERR_clear_error()
            self._fail()  # a record that does not decrypt, an alert from the client
            return
        if BIO_ctrl_pending(self.wbio):
            self._flush()  # a KeyUpdate answered
        if total:
            self.app.data_received(PyBytes_FromStringAndSize(_buf, <Py_ssize_t>total))
        if err == SSL_ERROR_ZERO_RETURN and self.state == S_WRAPPED:  # close_notify
            if self.app_made and not self.app_lost:
                self.app.eof_received()
            self.close()

    def _resume(self):
        self.resume_queued = False
        if self.state == S_WRAPPED and not self.app_paused:
            self._read()

    cdef _read_into_void(self):
        cdef size_t got = 0
        cdef SSL *s = self.ssl
        _clean_errors()
        while BIO_ctrl_pending(self.rbio) or SSL_pending(s):
            if _buf_size < RECORD and not _grow(RECORD):
                raise MemoryError()
            if not SSL_read_ex(s, _buf, _buf_size, &got):
                break
        ERR_clear_error()
        if SSL_get_shutdown(s) & SSL_RECEIVED_SHUTDOWN:
            self._shut()

    cdef _shut(self):
        """The client's close_notify came (or never will): send the rest, close."""
        self._cancel_timers()
        self.state = S_CLOSED
        self.tcp.close()

    cdef _fail(self):
        self.state = S_CLOSED
        self.closing = True
        self._cancel_timers()
        self.tcp.abort()

    def _shutdown_timed_out(self):
        self.shutdown_timer = None
        if self.state == S_SHUTDOWN:
            self.state = S_CLOSED
            self.tcp.abort()

    # -- the application's transport ---------------------------------------------

    def write(self, data):
        cdef size_t written = 0
        cdef Py_buffer view
        if self.state != S_WRAPPED:
            return  # closing or closed: dropped, as asyncio's transports drop it
        if type(data) is bytes:
            if PyBytes_GET_SIZE(data) == 0:
                return
            _clean_errors()
            if not SSL_write_ex(self.ssl, PyBytes_AS_STRING(data), <size_t>PyBytes_GET_SIZE(data), &written):
                ERR_clear_error()
                self._fail()
                return
        else:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
            try:
                if view.len == 0:
                    return
                _clean_errors()
                if not SSL_write_ex(self.ssl, view.buf, <size_t>view.len, &written):
                    ERR_clear_error()
                    self._fail()
                    return
            finally:
                PyBuffer_Release(&view)
        self._flush()

    def writelines(self, list_of_data):
        self.write(b"".join(list_of_data))

    def write_eof(self):
        raise NotImplementedError("TLS: no half-close (close_notify ends both ways)")

    def can_write_eof(self):
        return False

    def close(self):
        if self.closing:
            return
        self.closing = True
        if self.state == S_HANDSHAKE:
            self._fail()
            return
        if self.state != S_WRAPPED:
            return
        self.state = S_SHUTDOWN
        _clean_errors()
        cdef int done = SSL_shutdown(self.ssl)
        ERR_clear_error()
        self._flush()
        if self.app_paused:
            self.app_paused = False
            self.tcp.resume_reading()  # the client's close_notify is read, not left to reset
        if done == 1:
            self._shut()
        else:
            self.shutdown_timer = self.loop.call_later(self.shutdown_timeout, self._shutdown_timed_out)
            if BIO_ctrl_pending(self.rbio):
                self._read_into_void()

    def abort(self):
        self.closing = True
        if self.tcp is not None:
            self.state = S_CLOSED
            self._cancel_timers()
            self.tcp.abort()

    def is_closing(self):
        return self.closing

    def pause_reading(self):
        if not self.app_paused and self.state == S_WRAPPED:
            self.app_paused = True
            self.tcp.pause_reading()

    def resume_reading(self):
        if self.app_paused:
            self.app_paused = False
            if self.state != S_WRAPPED:
                return
            self.tcp.resume_reading()
            # records already received and not yet read: soon, not inside the caller
            if not self.resume_queued and (BIO_ctrl_pending(self.rbio) or SSL_pending(self.ssl)):
                self.resume_queued = True
                self.loop.call_soon(self._resume)

    def is_reading(self):
        return not self.app_paused and self.state == S_WRAPPED

    def set_protocol(self, protocol):
        self.app = protocol

    def get_protocol(self):
        return self.app

    def get_write_buffer_size(self):
        return self.tcp.get_write_buffer_size() if self.tcp is not None else 0

    def get_write_buffer_limits(self):
        return self.tcp.get_write_buffer_limits() if self.tcp is not None else (0, 0)

    def set_write_buffer_limits(self, high=None, low=None):
        if self.tcp is not None:
            self.tcp.set_write_buffer_limits(high, low)

    def get_extra_info(self, name, default=None):
        if name == "ssl_object":
            return self.sslobject if self.app_made else default
        if name == "sslcontext":
            return self.context
        if self.app_made and name in _FROM_SSLOBJECT:  # asked for seldom: made when asked
            return getattr(self.sslobject, _FROM_SSLOBJECT[name])()
        if self.tcp is not None:
            return self.tcp.get_extra_info(name, default)
        return default


# get_extra_info's TLS names (asyncio's SSL transports), answered by the SSLObject's methods
_FROM_SSLOBJECT = {"cipher": "cipher", "compression": "compression", "peercert": "getpeercert"}
