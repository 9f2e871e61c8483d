# cython: language_level=3, boundscheck=False, wraparound=False
"""HTTP/2 to clients on libnghttp2: the C library behind curl, Apache's mod_http2,
Node.js and h2load, through a server session (`nghttp2_session_server_new2`).

`NgEngine` speaks the part of `h2.connection.H2Connection`'s interface that
server/h2conn.py and server/h2stream.py use (receive_data -> events, send_headers,
send_data, end_stream, reset_stream, acknowledge_received_data, the windows,
data_to_send), so the connection's own rules (stream limit, flood guard,
flow-control hold-back, GOAWAY on drain, RFC 8441) are written once, over either
engine (server/h2engine.py chooses).  The events are this module's small types,
named and shaped as h2's (h2conn.py maps them to the same handlers).

What nghttp2 does differently, and how it is kept to Porch's rules (README, HTTP/2):
- Response DATA comes from a data provider that nghttp2 pulls while it serializes
  (`data_to_send`): `send_data` only queues the bytes.  The windows this engine
  reports subtract what is queued and not yet serialized, so H2Stream never queues
  beyond the client's window (the zero-window guard: 64 KiB per stream at most).
- Request DATA is acknowledged only when Porch passes it upstream
  (`nghttp2_option_set_no_auto_window_update` + `nghttp2_session_consume`).
- Headers of a request are capped at 64 KiB decoded (name + value + 32 each, as
  h2's HPACK decoder counts): past it the connection ends (HPACK bomb); CONTINUATION
  frames after a HEADERS are capped at 64, as h2 caps them.
- nghttp2's own rapid-reset and ACK-flood limits are set above Porch's (http/h2.py
  FloodGuard), so one documented rule decides, whichever engine runs.
- A connection error nghttp2 detects itself (a malformed frame, a bad preface) makes
  `receive_data` raise `NgProtocolError`, as h2 raises ProtocolError; nghttp2 has
  already queued the GOAWAY, so `close_connection` adds none.
- The requests' header fields are checked by h2's own rules (`h2.utilities.
  validate_headers`, as h2 checks them: RFC 9113 8.2 and 8.3), not by nghttp2's
  (`nghttp2_option_set_no_http_messaging`), so both engines give the same answer to
  a malformed request: a connection error (GOAWAY PROTOCOL_ERROR, h2's message in
  the error log) for what h2 refuses, and Porch's 400 (http/h2.py) for a :method or
  :path that cannot make a request line, which nghttp2 would reset as a stream
  error.  With nghttp2's messaging off, the body's length against content-length
  (RFC 9113 8.1.1) is checked here too, as h2 checks it.
- One rule is nghttp2's and not h2's: a client that opens streams past
  MAX_CONCURRENT_STREAMS after acknowledging the setting gets a connection error
  (before the acknowledgement, REFUSED_STREAM as on h2).  A conforming client never
  does; nghttp2 offers no way to make it a stream error.

Needs libnghttp2 with `nghttp2_option_set_stream_reset_rate_limit` and
`nghttp2_option_set_max_continuations` (upstream 1.61+, Debian's 1.52 with its
security fixes); setup.py skips this module where the header is missing, and the
h2 engine serves.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int32_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy

from h2.exceptions import InvalidBodyLengthError, ProtocolError
from h2.utilities import HeaderValidationFlags, validate_headers

from porch.http.h2 import CONNECTION_WINDOW, STREAM_WINDOW


cdef extern from "nghttp2/nghttp2.h":
    ctypedef ptrdiff_t ssize_t
    ctypedef struct nghttp2_session:
        pass
    ctypedef struct nghttp2_option:
        pass
    ctypedef struct nghttp2_session_callbacks:
        pass

    ctypedef struct nghttp2_frame_hd:
        size_t length
        int32_t stream_id
        uint8_t type
        uint8_t flags

    ctypedef enum nghttp2_headers_category:
        NGHTTP2_HCAT_REQUEST
        NGHTTP2_HCAT_RESPONSE
        NGHTTP2_HCAT_PUSH_RESPONSE
        NGHTTP2_HCAT_HEADERS

    ctypedef struct nghttp2_headers:
        nghttp2_frame_hd hd
        nghttp2_headers_category cat

    ctypedef struct nghttp2_goaway:
        nghttp2_frame_hd hd
        int32_t last_stream_id
        uint32_t error_code
        uint8_t *opaque_data
        size_t opaque_data_len

    ctypedef union nghttp2_frame:
        nghttp2_frame_hd hd
        nghttp2_headers headers
        nghttp2_goaway goaway

    ctypedef struct nghttp2_nv:
        uint8_t *name
        uint8_t *value
        size_t namelen
        size_t valuelen
        uint8_t flags

    ctypedef union nghttp2_data_source:
        int fd
        void *ptr

    ctypedef ssize_t (*nghttp2_data_source_read_callback)(
        nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
        uint32_t *data_flags, nghttp2_data_source *source, void *user_data)

    ctypedef struct nghttp2_data_provider:
        nghttp2_data_source source
        nghttp2_data_source_read_callback read_callback

    ctypedef struct nghttp2_settings_entry:
        int32_t settings_id
        uint32_t value

    enum:
        NGHTTP2_DATA = 0
        NGHTTP2_HEADERS = 1
        NGHTTP2_RST_STREAM = 3
        NGHTTP2_SETTINGS = 4
        NGHTTP2_PING = 6
        NGHTTP2_GOAWAY = 7
        NGHTTP2_WINDOW_UPDATE = 8

        NGHTTP2_FLAG_NONE = 0
        NGHTTP2_FLAG_END_STREAM = 0x01
        NGHTTP2_FLAG_ACK = 0x01

        NGHTTP2_DATA_FLAG_EOF = 0x01

        NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS = 0x03
        NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE = 0x04
        NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE = 0x06
        NGHTTP2_SETTINGS_ENABLE_PUSH = 0x02
        NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL = 0x08

        NGHTTP2_ERR_DEFERRED
        NGHTTP2_ERR_CALLBACK_FAILURE
        NGHTTP2_ERR_BAD_CLIENT_MAGIC
        NGHTTP2_ERR_FLOODED
        NGHTTP2_ERR_TOO_MANY_CONTINUATIONS

    ctypedef int (*nghttp2_on_begin_headers_callback)(
        nghttp2_session *, const nghttp2_frame *, void *)
    ctypedef int (*nghttp2_on_header_callback)(
        nghttp2_session *, const nghttp2_frame *, const uint8_t *, size_t, const uint8_t *,
        size_t, uint8_t, void *)
    ctypedef int (*nghttp2_on_frame_recv_callback)(
        nghttp2_session *, const nghttp2_frame *, void *)
    ctypedef int (*nghttp2_on_frame_send_callback)(
        nghttp2_session *, const nghttp2_frame *, void *)
    ctypedef int (*nghttp2_on_data_chunk_recv_callback)(
        nghttp2_session *, uint8_t, int32_t, const uint8_t *, size_t, void *)
    ctypedef int (*nghttp2_on_stream_close_callback)(
        nghttp2_session *, int32_t, uint32_t, void *)

    int nghttp2_session_callbacks_new(nghttp2_session_callbacks **)
    void nghttp2_session_callbacks_del(nghttp2_session_callbacks *)
    void nghttp2_session_callbacks_set_on_begin_headers_callback(
        nghttp2_session_callbacks *, nghttp2_on_begin_headers_callback)
    void nghttp2_session_callbacks_set_on_header_callback(
        nghttp2_session_callbacks *, nghttp2_on_header_callback)
    void nghttp2_session_callbacks_set_on_frame_recv_callback(
        nghttp2_session_callbacks *, nghttp2_on_frame_recv_callback)
    void nghttp2_session_callbacks_set_on_frame_send_callback(
        nghttp2_session_callbacks *, nghttp2_on_frame_send_callback)
    void nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
        nghttp2_session_callbacks *, nghttp2_on_data_chunk_recv_callback)
    void nghttp2_session_callbacks_set_on_stream_close_callback(
        nghttp2_session_callbacks *, nghttp2_on_stream_close_callback)

    int nghttp2_option_new(nghttp2_option **)
    void nghttp2_option_del(nghttp2_option *)
    void nghttp2_option_set_no_auto_window_update(nghttp2_option *, int)
    void nghttp2_option_set_max_outbound_ack(nghttp2_option *, size_t)
    void nghttp2_option_set_stream_reset_rate_limit(nghttp2_option *, uint64_t, uint64_t)
    void nghttp2_option_set_max_continuations(nghttp2_option *, size_t)
    void nghttp2_option_set_no_http_messaging(nghttp2_option *, int)

    int nghttp2_session_server_new2(nghttp2_session **, const nghttp2_session_callbacks *,
                                    void *, const nghttp2_option *)
    void nghttp2_session_del(nghttp2_session *)
    ssize_t nghttp2_session_mem_recv(nghttp2_session *, const uint8_t *, size_t)
    ssize_t nghttp2_session_mem_send(nghttp2_session *, const uint8_t **)
    int nghttp2_session_want_write(nghttp2_session *)
    int nghttp2_session_resume_data(nghttp2_session *, int32_t)
    int nghttp2_session_consume(nghttp2_session *, int32_t, size_t)
    int32_t nghttp2_session_get_stream_remote_window_size(nghttp2_session *, int32_t)
    int32_t nghttp2_session_get_remote_window_size(nghttp2_session *)
    int32_t nghttp2_session_get_last_proc_stream_id(nghttp2_session *)

    int nghttp2_submit_settings(nghttp2_session *, uint8_t, const nghttp2_settings_entry *, size_t)
    int nghttp2_submit_window_update(nghttp2_session *, uint8_t, int32_t, int32_t)
    int nghttp2_submit_response(nghttp2_session *, int32_t, const nghttp2_nv *, size_t,
                                const nghttp2_data_provider *)
    int32_t nghttp2_submit_headers(nghttp2_session *, uint8_t, int32_t, const void *,
                                   const nghttp2_nv *, size_t, void *)
    int nghttp2_submit_data(nghttp2_session *, uint8_t, int32_t, const nghttp2_data_provider *)
    int nghttp2_submit_rst_stream(nghttp2_session *, uint8_t, int32_t, uint32_t)
    int nghttp2_submit_goaway(nghttp2_session *, uint8_t, int32_t, uint32_t, const uint8_t *, size_t)
    const char *nghttp2_strerror(int)


# RFC 9113 7 error codes (h2.errors.ErrorCodes' values).
cdef enum:
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    ENHANCE_YOUR_CALM = 0xb

cdef enum:
    # h2's HPACK decoder refuses a decoded header list past 64 KiB, counted as RFC
    # 7541 4.1 counts a table entry; Porch documents the same limit (README, HTTP/2).
    MAX_DECODED_HEADERS = 65536
    HEADER_ENTRY_OVERHEAD = 32
    # h2 caps the CONTINUATION frames of one header block at 64 (nghttp2's default: 8).
    MAX_CONTINUATIONS = 64
    # Above Porch's FloodGuard (http/h2.py: 100 a second), so that guard decides and
    # says why in the error log; nghttp2's limits stay as a backstop.
    RESET_BURST = 10000
    RESET_RATE = 1000
    MAX_OUTBOUND_ACK = 10000
    # nghttp2 cuts DATA frames to the client's SETTINGS_MAX_FRAME_SIZE itself, so the
    # stream's pump (h2stream.py) need not: it cuts to the window only.
    NO_FRAME_LIMIT = 1 << 30


# What h2 checks in a request's header block and in its trailers (server side).
REQUEST_FLAGS = HeaderValidationFlags(is_client=False, is_trailer=False, is_response_header=False,
                                      is_push_promise=False)
TRAILER_FLAGS = REQUEST_FLAGS._replace(is_trailer=True)


# The common request that h2's rules surely accept, told apart at C speed (h2's
# generators cost ~7 µs a request): the four pseudo-header fields once each and
# first, :method not CONNECT, a non-empty :path, names of lowercase visible ASCII
# without ':', values without NUL/CR/LF or surrounding whitespace, and none of the
# fields h2 checks further (te, host, connection-specific ones).  Anything else
# goes through h2's validate_headers, which decides and words the error.
_PSEUDO = {b":method": 1, b":scheme": 2, b":path": 4, b":authority": 8}
_DEFER = frozenset((b"te", b"host", b"connection", b"proxy-connection", b"keep-alive",
                    b"transfer-encoding", b"upgrade"))
_NAME_OK = bytes(c for c in range(0x21, 0x7f) if not 0x41 <= c <= 0x5a and c != 0x3a)


cdef bint _surely_valid(list headers):
    cdef int seen = 0, bit
    cdef bint regular = False
    cdef bytes name, value
    cdef Py_ssize_t n
    for name, value in headers:
        if not name:
            return False
        if name[0] == 0x3a:
            if regular:
                return False
            got = _PSEUDO.get(name)
            if got is None:
                return False
            bit = got
            if seen & bit or (bit == 1 and value == b"CONNECT") or (bit == 4 and not value):
                return False
            seen |= bit
        else:
            regular = True
            if name in _DEFER or name.translate(None, _NAME_OK):
                return False
        n = PyBytes_GET_SIZE(value)
        if n:
            if b"\r" in value or b"\n" in value or b"\x00" in value:
                return False
            if value[0] in (0x20, 0x09) or value[n - 1] in (0x20, 0x09):
                return False
    return seen == 15


def _content_length(list headers):
    """The request's declared body length, or None; ProtocolError as h2 raises it
    (h2/stream.py) for a value that is not digits or two that differ."""
    length = None
    for name, value in headers:
        if name == b"content-length":
            if not value.isdigit():
                raise ProtocolError(f"Invalid content-length header: {value!r}")
            n = int(value, 10)
            if length is None:
                length = n
            elif n != length:
                raise ProtocolError(f"Conflicting content-length headers: {length} and {n}")
    return length


class NgProtocolError(ProtocolError):
    """The client broke the protocol; `error_code` is the GOAWAY's (RFC 9113 7)."""

    def __init__(self, message: str, error_code: int) -> None:
        super().__init__(message)
        self.error_code = error_code


# -- events: h2.events' names and the attributes h2conn.py reads ------------------

cdef class RequestReceived:
    cdef readonly int stream_id
    cdef readonly list headers
    cdef readonly object stream_ended  # True or None, as h2's (a StreamEnded or None)


cdef class DataReceived:
    cdef readonly int stream_id
    cdef readonly bytes data
    cdef readonly Py_ssize_t flow_controlled_length


cdef class StreamEnded:
    cdef readonly int stream_id


cdef class StreamReset:
    cdef readonly int stream_id
    cdef readonly unsigned int error_code


cdef class WindowUpdated:
    cdef readonly int stream_id


cdef class RemoteSettingsChanged:
    pass


cdef class PingReceived:
    pass


cdef class ConnectionTerminated:
    cdef readonly unsigned int error_code


EVENTS = {cls.__name__: cls for cls in (
    RequestReceived, DataReceived, StreamEnded, StreamReset, WindowUpdated,
    RemoteSettingsChanged, PingReceived, ConnectionTerminated)}


cdef class _Out:
    """A stream's response bytes queued for nghttp2's data provider."""
    cdef list chunks
    cdef Py_ssize_t offset  # into chunks[0]
    cdef Py_ssize_t size  # queued bytes, not yet serialized
    cdef bint eof  # END_STREAM after the last of them
    cdef bint deferred  # the provider said DEFERRED: resume it when bytes come

    def __cinit__(self):
        self.chunks = []


cdef class NgEngine:
    """One nghttp2 server session (see the module's docstring)."""

    cdef nghttp2_session *session
    cdef list events
    cdef dict outs  # stream id -> _Out
    cdef dict resets_after  # stream id -> RST_STREAM code once its END_STREAM is out
    cdef Py_ssize_t queued  # bytes in every _Out
    cdef list headers  # the header block being decoded
    cdef dict lengths  # stream id -> [content-length, bytes received] (h2's check)
    cdef Py_ssize_t header_size
    cdef object failure  # NgProtocolError to raise from receive_data
    cdef object callback_exc  # an exception raised inside a callback (a bug of ours)
    cdef bint goaway_submitted  # by close_connection: the last GOAWAY is ours
    cdef bint goaway_by_library  # nghttp2 ended the connection (a protocol error)
    cdef uint8_t *out
    cdef Py_ssize_t out_len, out_cap

    def __cinit__(self):
        cdef nghttp2_session_callbacks *cb
        cdef nghttp2_option *opt
        self.events = []
        self.outs = {}
        self.resets_after = {}
        self.headers = []
        self.lengths = {}
        if nghttp2_session_callbacks_new(&cb) != 0:
            raise MemoryError()
        nghttp2_session_callbacks_set_on_begin_headers_callback(cb, _on_begin_headers)
        nghttp2_session_callbacks_set_on_header_callback(cb, _on_header)
        nghttp2_session_callbacks_set_on_frame_recv_callback(cb, _on_frame_recv)
        nghttp2_session_callbacks_set_on_frame_send_callback(cb, _on_frame_send)
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, _on_data_chunk_recv)
        nghttp2_session_callbacks_set_on_stream_close_callback(cb, _on_stream_close)
        if nghttp2_option_new(&opt) != 0:
            nghttp2_session_callbacks_del(cb)
            raise MemoryError()
        nghttp2_option_set_no_auto_window_update(opt, 1)
        nghttp2_option_set_no_http_messaging(opt, 1)  # h2's header rules instead (above)
        nghttp2_option_set_max_outbound_ack(opt, MAX_OUTBOUND_ACK)
        nghttp2_option_set_stream_reset_rate_limit(opt, RESET_BURST, RESET_RATE)
        nghttp2_option_set_max_continuations(opt, MAX_CONTINUATIONS)
        rv = nghttp2_session_server_new2(&self.session, cb, <void *>self, opt)
        nghttp2_option_del(opt)
        nghttp2_session_callbacks_del(cb)
        if rv != 0:
            raise MemoryError()

    def __dealloc__(self):
        if self.session != NULL:
            nghttp2_session_del(self.session)
        free(self.out)

    # -- set-up ------------------------------------------------------------------

    def start(self, uint32_t max_streams, uint32_t max_header_list_size) -> bytes:
        """Our SETTINGS (h2conn.py's limits among them: nghttp2 must see every
        SETTINGS we send, or the client's acknowledgement of it is a protocol error)
        and the connection's receive window; the bytes to write."""
        cdef nghttp2_settings_entry iv[5]
        iv[0].settings_id = NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE
        iv[0].value = STREAM_WINDOW
        iv[1].settings_id = NGHTTP2_SETTINGS_ENABLE_PUSH
        iv[1].value = 0
        iv[2].settings_id = NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL  # RFC 8441
        iv[2].value = 1
        iv[3].settings_id = NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS
        iv[3].value = max_streams
        iv[4].settings_id = NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE
        iv[4].value = max_header_list_size
        _check(nghttp2_submit_settings(self.session, NGHTTP2_FLAG_NONE, iv, 5))
        _check(nghttp2_submit_window_update(self.session, NGHTTP2_FLAG_NONE, 0,
                                            CONNECTION_WINDOW - 65535))
        return self.data_to_send()

    # -- input ---------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list:
        """Frames in -> events (a list, in order).  Raises NgProtocolError when the
        connection must end."""
        cdef ssize_t rv
        if type(data) is not bytes:  # PyBytes_AS_STRING below reads a bytes object only
            data = bytes(data)
        rv = nghttp2_session_mem_recv(self.session, <const uint8_t *>PyBytes_AS_STRING(data),
                                      <size_t>PyBytes_GET_SIZE(data))
        if rv < 0:
            self._raise_fatal(rv)
        # A connection error nghttp2 found queues its GOAWAY: serialize it now, so it
        # is seen (_on_frame_send) and reported before the events are acted on.
        if nghttp2_session_want_write(self.session):
            self._serialize()
        if self.failure is not None:
            raise self.failure
        events = self.events
        self.events = []
        return events

    cdef _raise_fatal(self, ssize_t rv):
        if self.callback_exc is not None:
            exc, self.callback_exc = self.callback_exc, None
            raise exc
        if self.failure is not None:
            raise self.failure
        message = nghttp2_strerror(<int>rv).decode()
        if rv == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS:
            raise NgProtocolError(
                f"more than {MAX_CONTINUATIONS} CONTINUATION frames in one header block "
                f"(continuation flood)", ENHANCE_YOUR_CALM)
        if rv == NGHTTP2_ERR_FLOODED:
            raise NgProtocolError(f"{message} (flood of frames to acknowledge)", ENHANCE_YOUR_CALM)
        raise NgProtocolError(message, PROTOCOL_ERROR)

    # -- output --------------------------------------------------------------------

    cdef int _serialize(self) except -1:
        """Everything nghttp2 has to send, appended to `out`."""
        cdef const uint8_t *frame
        cdef ssize_t n
        while True:
            n = nghttp2_session_mem_send(self.session, &frame)
            if n <= 0:
                if self.callback_exc is not None:
                    exc, self.callback_exc = self.callback_exc, None
                    raise exc
                return 0
            if self.out_len + n > self.out_cap:
                cap = max(self.out_cap * 2, self.out_len + n, 16384)
                grown = <uint8_t *>realloc(self.out, cap)
                if grown == NULL:
                    raise MemoryError()
                self.out = grown
                self.out_cap = cap
            memcpy(self.out + self.out_len, frame, n)
            self.out_len += n

    def data_to_send(self) -> bytes:
        self._serialize()
        if not self.out_len:
            return b""
        data = PyBytes_FromStringAndSize(<char *>self.out, self.out_len)
        self.out_len = 0
        return data

    # -- responses -------------------------------------------------------------------

    def send_headers(self, int stream_id, list headers, end_stream=False) -> None:
        """A response's HEADERS: interim (1xx), final with a body to come, or whole."""
        cdef nghttp2_nv *nva
        cdef nghttp2_data_provider provider
        cdef Py_ssize_t n = len(headers), i
        cdef bytes name, value
        nva = <nghttp2_nv *>realloc(NULL, n * sizeof(nghttp2_nv))
        if nva == NULL:
            raise MemoryError()
        try:
            for i in range(n):
                name, value = headers[i]
                nva[i].name = <uint8_t *>PyBytes_AS_STRING(name)
                nva[i].namelen = PyBytes_GET_SIZE(name)
                nva[i].value = <uint8_t *>PyBytes_AS_STRING(value)
                nva[i].valuelen = PyBytes_GET_SIZE(value)
                nva[i].flags = 0  # nghttp2 copies names and values
            status = headers[0][1]
            if status[:1] == b"1":  # interim: more HEADERS follow (RFC 9113 8.1)
                _check(nghttp2_submit_headers(self.session, NGHTTP2_FLAG_NONE, stream_id,
                                              NULL, nva, n, NULL))
            elif end_stream:
                _check(nghttp2_submit_response(self.session, stream_id, nva, n, NULL))
            else:
                provider.source.ptr = NULL
                provider.read_callback = _read_data
                self.outs[stream_id] = _Out()
                _check(nghttp2_submit_response(self.session, stream_id, nva, n, &provider))
        finally:
            free(nva)

    def send_data(self, int stream_id, data, end_stream=False) -> None:
        cdef _Out out = self.outs.get(stream_id)
        if out is None:
            out = self._provide(stream_id)
        if type(data) is not bytes:
            data = bytes(data)
        out.chunks.append(data)
        out.size += PyBytes_GET_SIZE(data)
        self.queued += PyBytes_GET_SIZE(data)
        if end_stream:
            out.eof = True
        self._resume(stream_id, out)

    def end_stream(self, int stream_id) -> None:
        cdef _Out out = self.outs.get(stream_id)
        if out is None:
            out = self._provide(stream_id)
        out.eof = True
        self._resume(stream_id, out)

    cdef _Out _provide(self, int stream_id):
        """DATA without a provider from send_headers (never in Porch's use: defensive)."""
        cdef nghttp2_data_provider provider
        cdef _Out out = _Out()
        provider.source.ptr = NULL
        provider.read_callback = _read_data
        self.outs[stream_id] = out
        _check(nghttp2_submit_data(self.session, NGHTTP2_FLAG_END_STREAM, stream_id, &provider))
        return out

    cdef inline void _resume(self, int stream_id, _Out out):
        if out.deferred:
            out.deferred = False
            nghttp2_session_resume_data(self.session, stream_id)

    def reset_stream(self, int stream_id, unsigned int error_code=0) -> None:
        """RST_STREAM.  A response whose end is queued goes out whole first: h2 has
        serialized it when this is called (H2Stream resets a stream whose response
        ended, to stop its request: RFC 9113 8.1), nghttp2 pulls it later."""
        cdef _Out out = self.outs.get(stream_id)
        if out is not None and out.eof:
            self.resets_after[stream_id] = error_code
            return
        self._drop(stream_id)
        nghttp2_submit_rst_stream(self.session, NGHTTP2_FLAG_NONE, stream_id, error_code)

    cdef void _ended(self, int stream_id):
        cdef StreamEnded event = StreamEnded.__new__(StreamEnded)
        event.stream_id = stream_id
        self.events.append(event)

    cdef int _body_length(self, int stream_id, Py_ssize_t n, bint end) except -1:
        """Count a request's body bytes against its content-length; h2's
        InvalidBodyLengthError past it, or short of it at the end."""
        cdef list seen = self.lengths.get(stream_id)
        if seen is None:
            return 0
        seen[1] += n
        if seen[1] > seen[0] or (end and seen[1] != seen[0]):
            del self.lengths[stream_id]
            raise InvalidBodyLengthError(seen[0], seen[1])
        if end:
            del self.lengths[stream_id]
        return 0

    cdef void _drop(self, int stream_id):
        cdef _Out out = self.outs.pop(stream_id, None)
        if out is not None:
            self.queued -= out.size

    def local_flow_control_window(self, int stream_id) -> int:
        """What the stream may still queue: the client's windows less what waits."""
        cdef _Out out = self.outs.get(stream_id)
        cdef Py_ssize_t stream = nghttp2_session_get_stream_remote_window_size(self.session, stream_id)
        cdef Py_ssize_t conn = nghttp2_session_get_remote_window_size(self.session) - self.queued
        if out is not None:
            stream -= out.size
        return max(0, min(stream, conn))

    @property
    def max_outbound_frame_size(self) -> int:
        return NO_FRAME_LIMIT

    # -- request flow control, and endings ---------------------------------------------

    def acknowledge_received_data(self, Py_ssize_t length, int stream_id) -> None:
        """Request bytes passed on: WINDOW_UPDATE as nghttp2 batches them (half a window)."""
        nghttp2_session_consume(self.session, stream_id, length)

    @property
    def highest_inbound_stream_id(self) -> int:
        return nghttp2_session_get_last_proc_stream_id(self.session)

    def close_connection(self, unsigned int error_code=0, last_stream_id=None) -> None:
        """The last GOAWAY (none if nghttp2 ended the connection itself)."""
        if self.goaway_submitted or self.goaway_by_library:
            return
        self.goaway_submitted = True
        last = nghttp2_session_get_last_proc_stream_id(self.session) if last_stream_id is None else last_stream_id
        nghttp2_submit_goaway(self.session, NGHTTP2_FLAG_NONE, last, error_code, NULL, 0)


cdef inline int _check(int rv) except -1:
    if rv < 0:
        raise RuntimeError(f"nghttp2: {nghttp2_strerror(rv).decode()}")
    return 0


# -- callbacks (nghttp2 calls them inside mem_recv and mem_send) --------------------

cdef int _on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame,
                           void *user_data) noexcept:
    cdef NgEngine self = <NgEngine>user_data
    self.headers = []
    self.header_size = 0
    return 0


cdef int _on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                    size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                    void *user_data) noexcept:
    cdef NgEngine self = <NgEngine>user_data
    self.header_size += namelen + valuelen + HEADER_ENTRY_OVERHEAD
    if self.header_size > MAX_DECODED_HEADERS:
        self.failure = NgProtocolError(
            f"a header list over {MAX_DECODED_HEADERS} bytes once decoded (HPACK bomb)",
            ENHANCE_YOUR_CALM)
        return NGHTTP2_ERR_CALLBACK_FAILURE
    try:
        self.headers.append((PyBytes_FromStringAndSize(<const char *>name, namelen),
                             PyBytes_FromStringAndSize(<const char *>value, valuelen)))
    except BaseException as exc:
        self.callback_exc = exc
        return NGHTTP2_ERR_CALLBACK_FAILURE
    return 0


cdef int _on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame,
                        void *user_data) noexcept:
    cdef NgEngine self = <NgEngine>user_data
    cdef uint8_t kind = frame.hd.type
    cdef bint end = (frame.hd.flags & NGHTTP2_FLAG_END_STREAM) != 0
    cdef RequestReceived request
    cdef WindowUpdated window
    cdef ConnectionTerminated goaway
    try:
        if kind == NGHTTP2_HEADERS:
            headers, self.headers = self.headers, []
            if frame.headers.cat == NGHTTP2_HCAT_REQUEST:
                if not _surely_valid(headers):
                    for _ in validate_headers(headers, REQUEST_FLAGS):
                        pass
                length = _content_length(headers)
                if length is not None:
                    self.lengths[frame.hd.stream_id] = [length, 0]
                    if end:
                        self._body_length(frame.hd.stream_id, 0, True)
                request = RequestReceived.__new__(RequestReceived)
                request.stream_id = frame.hd.stream_id
                request.headers = headers
                request.stream_ended = True if end else None
                self.events.append(request)
            else:  # trailers: checked, not passed upstream (as on h2); they end the request
                for _ in validate_headers(headers, TRAILER_FLAGS):
                    pass
                if not end:
                    raise ProtocolError("Trailers must have END_STREAM set")  # h2's rule and words
                if self.lengths:
                    self._body_length(frame.hd.stream_id, 0, True)
                self._ended(frame.hd.stream_id)
        elif kind == NGHTTP2_DATA:
            if end:
                if self.lengths:
                    self._body_length(frame.hd.stream_id, 0, True)
                self._ended(frame.hd.stream_id)
        elif kind == NGHTTP2_WINDOW_UPDATE:
            window = WindowUpdated.__new__(WindowUpdated)
            window.stream_id = frame.hd.stream_id
            self.events.append(window)
        elif kind == NGHTTP2_SETTINGS:
            if not frame.hd.flags & NGHTTP2_FLAG_ACK:
                self.events.append(RemoteSettingsChanged.__new__(RemoteSettingsChanged))
        elif kind == NGHTTP2_PING:
            if not frame.hd.flags & NGHTTP2_FLAG_ACK:
                self.events.append(PingReceived.__new__(PingReceived))
        elif kind == NGHTTP2_GOAWAY:
            goaway = ConnectionTerminated.__new__(ConnectionTerminated)
            goaway.error_code = frame.goaway.error_code
            self.events.append(goaway)
    except ProtocolError as exc:  # the client's fault: the connection ends as on h2
        self.failure = NgProtocolError(str(exc), PROTOCOL_ERROR)
        return NGHTTP2_ERR_CALLBACK_FAILURE
    except BaseException as exc:
        self.callback_exc = exc
        return NGHTTP2_ERR_CALLBACK_FAILURE
    return 0


cdef int _on_frame_send(nghttp2_session *session, const nghttp2_frame *frame,
                        void *user_data) noexcept:
    """A stream's END_STREAM is out: the reset that waited for it goes.  A GOAWAY
    that close_connection did not submit is nghttp2 ending the connection on a
    protocol error it found: report it as h2 raises one."""
    cdef NgEngine self = <NgEngine>user_data
    if frame.hd.flags & NGHTTP2_FLAG_END_STREAM and frame.hd.type <= NGHTTP2_HEADERS:
        if self.resets_after:
            code = self.resets_after.pop(frame.hd.stream_id, None)
            if code is not None:
                nghttp2_submit_rst_stream(self.session, NGHTTP2_FLAG_NONE, frame.hd.stream_id, code)
        return 0
    if frame.hd.type != NGHTTP2_GOAWAY or self.goaway_submitted or self.goaway_by_library:
        return 0
    self.goaway_by_library = True
    try:
        reason = PyBytes_FromStringAndSize(<const char *>frame.goaway.opaque_data,
                                           frame.goaway.opaque_data_len).decode(errors="replace")
        self.failure = NgProtocolError(reason or f"error code {frame.goaway.error_code}",
                                       frame.goaway.error_code)
    except BaseException as exc:
        self.callback_exc = exc
        return NGHTTP2_ERR_CALLBACK_FAILURE
    return 0


cdef int _on_data_chunk_recv(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                             const uint8_t *data, size_t length, void *user_data) noexcept:
    cdef NgEngine self = <NgEngine>user_data
    cdef DataReceived event
    try:
        event = DataReceived.__new__(DataReceived)
        event.stream_id = stream_id
        event.data = PyBytes_FromStringAndSize(<const char *>data, length)
        # Padding is consumed by nghttp2 itself; the rest waits for acknowledge_received_data.
        event.flow_controlled_length = length
        if self.lengths:
            self._body_length(stream_id, length, False)
        self.events.append(event)
    except ProtocolError as exc:
        self.failure = NgProtocolError(str(exc), PROTOCOL_ERROR)
        return NGHTTP2_ERR_CALLBACK_FAILURE
    except BaseException as exc:
        self.callback_exc = exc
        return NGHTTP2_ERR_CALLBACK_FAILURE
    return 0


cdef int _on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                          void *user_data) noexcept:
    """Every close: h2conn.py ignores those of streams it has finished with, so what
    reaches it is a reset by the client or by nghttp2 (a stream error it found)."""
    cdef NgEngine self = <NgEngine>user_data
    cdef StreamReset event
    try:
        self._drop(stream_id)
        if self.resets_after:
            self.resets_after.pop(stream_id, None)
        if self.lengths:
            self.lengths.pop(stream_id, None)
        event = StreamReset.__new__(StreamReset)
        event.stream_id = stream_id
        event.error_code = error_code
        self.events.append(event)
    except BaseException as exc:
        self.callback_exc = exc
        return NGHTTP2_ERR_CALLBACK_FAILURE
    return 0


cdef ssize_t _read_data(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                        uint32_t *data_flags, nghttp2_data_source *source, void *user_data) noexcept:
    """nghttp2 asks for at most `length` bytes of the stream's next DATA frame."""
    cdef NgEngine self = <NgEngine>user_data
    cdef _Out out = self.outs.get(stream_id)
    cdef Py_ssize_t copied = 0, n
    cdef bytes chunk
    cdef list chunks
    if out is None:  # reset meanwhile: its RST_STREAM goes first and closes it
        return NGHTTP2_ERR_DEFERRED
    chunks = out.chunks
    while chunks and copied < <Py_ssize_t>length:
        chunk = <bytes>chunks[0]
        n = PyBytes_GET_SIZE(chunk) - out.offset
        if n > <Py_ssize_t>length - copied:
            n = <Py_ssize_t>length - copied
            memcpy(buf + copied, PyBytes_AS_STRING(chunk) + out.offset, n)
            out.offset += n
        else:
            memcpy(buf + copied, PyBytes_AS_STRING(chunk) + out.offset, n)
            out.offset = 0
            del chunks[0]
        copied += n
    out.size -= copied
    self.queued -= copied
    if not chunks:
        if out.eof:
            data_flags[0] |= NGHTTP2_DATA_FLAG_EOF
            del self.outs[stream_id]
        elif not copied:
            out.deferred = True
            return NGHTTP2_ERR_DEFERRED
    return copied
