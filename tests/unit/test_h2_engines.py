"""The two HTTP/2 engines (server/h2engine.py: libnghttp2 and h2) without a network:
an `h2` client codec wired to each, bytes both ways, checking the interface
h2conn.py and h2stream.py rely on behaves the same on both."""

from __future__ import annotations

import h2.connection
import h2.events as ev
import pytest
from h2.config import H2Configuration
from h2.errors import ErrorCodes
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes

from porch.http.h2 import CONNECTION_WINDOW, STREAM_WINDOW
from porch.server.h2engine import new_engine, resolve

REQUEST = [(":method", "GET"), (":scheme", "https"), (":authority", "app.test"), (":path", "/x")]


class Wire:
    """An h2 client and a server engine, with what each sent delivered to the other."""

    def __init__(self, engine: str, client_settings: dict | None = None) -> None:
        self.server = new_engine(engine)
        self.client = h2.connection.H2Connection(H2Configuration(client_side=True, header_encoding=None))
        self.client.initiate_connection()
        if client_settings:
            self.client.update_settings(client_settings)
        self.client_events: list = []
        self.to_client(self.server.start(100, 16384))
        self.server_events = self.to_server()
        self.to_client()  # SETTINGS acknowledged both ways: the exchange starts from here
        self.client_events = []

    def to_server(self) -> list:
        return list(self.server.receive_data(self.client.data_to_send()))

    def to_client(self, data: bytes | None = None) -> list:
        got = self.client.receive_data(self.server.data_to_send() if data is None else data)
        self.client_events += got
        return got

    def of_client(self, kind: type) -> list:
        return [e for e in self.client_events if isinstance(e, kind)]


def names(events: list) -> list[str]:
    return [type(e).__name__ for e in events]


@pytest.fixture(params=["nghttp2", "h2"])
def engine(request) -> str:
    return resolve(request.param)


def test_settings_announce_porchs_limits_and_windows(engine):
    wire = Wire(engine)
    remote = wire.client.remote_settings
    assert remote[SettingCodes.MAX_CONCURRENT_STREAMS] == 100
    assert remote[SettingCodes.MAX_HEADER_LIST_SIZE] == 16384
    assert remote[SettingCodes.INITIAL_WINDOW_SIZE] == STREAM_WINDOW
    assert remote[SettingCodes.ENABLE_CONNECT_PROTOCOL] == 1  # RFC 8441
    assert wire.client.outbound_flow_control_window == CONNECTION_WINDOW
    assert "RemoteSettingsChanged" in names(wire.server_events)


def test_request_then_response_with_body(engine):
    wire = Wire(engine)
    wire.client.send_headers(1, REQUEST + [("cookie", "a=1")], end_stream=True)
    events = wire.to_server()
    request = [e for e in events if type(e).__name__ == "RequestReceived"][0]
    assert request.stream_id == 1 and request.stream_ended is not None
    assert (b":path", b"/x") in request.headers and (b"cookie", b"a=1") in request.headers
    wire.server.send_headers(1, [(b":status", b"200"), (b"content-length", b"5")])
    wire.server.send_data(1, b"hello")
    wire.server.end_stream(1)
    wire.to_client()
    assert [e.headers for e in wire.of_client(ev.ResponseReceived)] == [
        [(b":status", b"200"), (b"content-length", b"5")]]
    assert b"".join(e.data for e in wire.of_client(ev.DataReceived)) == b"hello"
    assert wire.of_client(ev.StreamEnded)[0].stream_id == 1


def test_window_reported_counts_what_waits_to_be_sent(engine):
    """H2Stream queues only what the window allows: the engine's window must shrink
    as bytes are queued, before they are serialized (nghttp2 pulls them later)."""
    wire = Wire(engine, {SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    wire.client.send_headers(1, REQUEST, end_stream=True)
    wire.to_server()
    wire.server.send_headers(1, [(b":status", b"200")])
    assert wire.server.local_flow_control_window(1) == 1000
    wire.server.send_data(1, b"x" * 600)
    assert wire.server.local_flow_control_window(1) == 400
    wire.to_client()
    assert wire.server.local_flow_control_window(1) == 400
    assert sum(len(e.data) for e in wire.of_client(ev.DataReceived)) == 600


def test_reset_after_a_complete_response_goes_after_it(engine):
    """RST_STREAM NO_ERROR to stop a request body once the response is complete
    (RFC 9113 8.1) must not cut the response short."""
    wire = Wire(engine)
    wire.client.send_headers(1, [(":method", "POST")] + REQUEST[1:], end_stream=False)
    wire.to_server()
    wire.server.send_headers(1, [(b":status", b"413")])
    wire.server.send_data(1, b"too big")
    wire.server.end_stream(1)
    wire.server.reset_stream(1, ErrorCodes.NO_ERROR)
    got = wire.to_client()
    order = [n for n in names(got) if n in ("ResponseReceived", "StreamEnded", "StreamReset")]
    assert order == ["ResponseReceived", "StreamEnded", "StreamReset"]
    assert b"".join(e.data for e in wire.of_client(ev.DataReceived)) == b"too big"
    assert [e.error_code for e in wire.of_client(ev.StreamReset)] == [ErrorCodes.NO_ERROR]


def test_request_data_is_acknowledged_only_when_passed_on(engine):
    wire = Wire(engine)
    wire.client.send_headers(1, REQUEST, end_stream=False)
    for _ in range(10):  # past half the stream's window: both engines send WINDOW_UPDATE then
        wire.client.send_data(1, b"y" * 15000)
    data = [e for e in wire.to_server() if type(e).__name__ == "DataReceived"]
    assert sum(e.flow_controlled_length for e in data) == 150000
    wire.to_client()
    assert not wire.of_client(ev.WindowUpdated)  # nothing passed on yet
    for e in data:
        wire.server.acknowledge_received_data(e.flow_controlled_length, 1)
    wire.to_client()
    assert wire.of_client(ev.WindowUpdated)


def test_protocol_error_raises_and_goaway_is_sent(engine):
    wire = Wire(engine)
    bad_ping = b"\x00\x00\x08\x06\x00\x00\x00\x00\x01" + b"x" * 8  # PING on stream 1
    with pytest.raises(ProtocolError):
        wire.server.receive_data(bad_ping)
    wire.server.close_connection(ErrorCodes.PROTOCOL_ERROR)
    wire.to_client()
    goaway = wire.of_client(ev.ConnectionTerminated)
    assert goaway and goaway[0].error_code == ErrorCodes.PROTOCOL_ERROR


def test_decoded_headers_past_64_kib_end_the_connection(engine):
    """The HPACK bomb guard: h2's decoder and the nghttp2 engine both stop at 64 KiB."""
    wire = Wire(engine)
    wire.client.max_outbound_frame_size = 16384
    wire.client.send_headers(1, REQUEST + [("x-big", "b" * 4000)] * 20, end_stream=True)
    with pytest.raises(ProtocolError) as caught:
        wire.to_server()
    assert caught.value.error_code == ErrorCodes.ENHANCE_YOUR_CALM


def test_input_in_any_bytes_like_object(engine):
    """What a transport hands data_received may be a bytearray or memoryview."""
    wire = Wire(engine)
    wire.client.send_headers(1, REQUEST, end_stream=True)
    events = wire.server.receive_data(memoryview(bytearray(wire.client.data_to_send())))
    assert [e.stream_id for e in events if type(e).__name__ == "RequestReceived"] == [1]


# -- malformed requests: the same answer from both engines (issue 11, issue 16) ------------


def unchecked(wire: Wire) -> Wire:
    """Let the h2 client send what it would refuse (the attacker's side)."""
    wire.client.config.validate_outbound_headers = False
    wire.client.config.normalize_outbound_headers = False
    return wire


def outcome(engine: str, headers: list, body: bytes | None = None) -> tuple:
    """What the server engine makes of one request: the request's headers as passed
    on, or the connection error (its code and message)."""
    wire = unchecked(Wire(resolve(engine)))
    wire.client.send_headers(1, headers, end_stream=body is None)
    if body is not None:
        wire.client.send_data(1, body, end_stream=True)
    try:
        events = wire.to_server()
    except ProtocolError as exc:
        return ("connection error", int(exc.error_code), str(exc))
    # (h2 reports END_STREAM as its own event, nghttp2's engine on the request too)
    return tuple((type(e).__name__, getattr(e, "headers", None)) for e in events
                 if type(e).__name__ in ("RequestReceived", "StreamReset"))


@pytest.mark.parametrize("method, path", [
    ("GET /x", "/y"), ("GET", "/a b"), ("GET", "/a\tb"), ('G"T', "/q"), ("GET", "no-slash"), ("GET", "*"),
])
def test_a_method_or_path_that_makes_no_request_line_reaches_porchs_check(method, path):
    """Porch answers these 400 (http/h2.py request_line_problem); nghttp2 would reset
    the stream itself, so its own messaging checks are off."""
    headers = [(":method", method), (":scheme", "https"), (":authority", "app.test"), (":path", path)]
    got = outcome("nghttp2", headers)
    assert got[0][0] == "RequestReceived", got
    assert (b":method", method.encode()) in got[0][1] and (b":path", path.encode()) in got[0][1]
    assert got == outcome("h2", headers)


@pytest.mark.parametrize("extra", [
    [("x-inj", "a\r\nX-Evil: 1")], [("x-inj", "a\nb")], [("x-inj", "a\x00b")],  # RFC 9113 8.2.1
    [("X-Upper", "1")], [("connection", "close")], [("te", "gzip")],  # 8.2.1, 8.2.2
    [(":unknown", "1")], [(":path", "/again")],  # 8.3
])
def test_header_fields_h2_refuses_end_the_connection_on_both_engines(extra):
    got = outcome("nghttp2", REQUEST + extra)
    assert got[:2] == ("connection error", ErrorCodes.PROTOCOL_ERROR), got
    assert got == outcome("h2", REQUEST + extra)


def test_a_request_without_its_path_ends_the_connection_on_both_engines():
    headers = [h for h in REQUEST if h[0] != ":path"]
    got = outcome("nghttp2", headers)
    assert got[0] == "connection error", got
    assert got == outcome("h2", headers)


@pytest.mark.parametrize("length, body", [("3", b"four"), ("5", b"four"), ("x", b"four"), ("4", b"four")])
def test_a_body_against_its_content_length_as_h2_checks_it(length, body):
    """RFC 9113 8.1.1: a body longer or shorter than content-length is malformed."""
    headers = [(":method", "POST")] + REQUEST[1:] + [("content-length", length)]
    got = outcome("nghttp2", headers, body)
    assert (got[0] == "connection error") == (length != "4"), got
    assert got == outcome("h2", headers, body)
