"""The exchange's life as tables (server/lifecycle.py) and the Downstream seam
(server/downstream.py): one Exchange class for both protocols, each writing through
its connection's downstream, and the states an exchange goes through on real
requests over fake transports (the harness of test_pipeline_exchange.py)."""

from __future__ import annotations

import re

import pytest

from porch.server import lifecycle
from porch.server.downstream import H1, Downstream, H1Downstream
from porch.server.h2stream import H2, H2Downstream
from porch.server.lifecycle import (
    EV_FINISH, EV_HEAD, EV_SWITCH, RQ_BODY, RQ_DONE, RS_DONE, RS_IDLE, RS_SENDING, RS_TUNNEL,
    LifecycleError,
)
from porch.server.proxy import Exchange

from test_pipeline_exchange import OK, NeedsToken, h2harness, harness  # noqa: F401 (fixtures)

EVENTS = (EV_HEAD, EV_FINISH, EV_SWITCH)
STATES = (RS_IDLE, RS_SENDING, RS_DONE, RS_TUNNEL)


def _next(state, event):
    return lifecycle.RESPONSE[state * len(EVENTS) + event]


def test_response_table_moves():
    assert _next(RS_IDLE, EV_HEAD) == RS_SENDING
    assert _next(RS_IDLE, EV_FINISH) == RS_DONE  # aborted or gone before anything was sent
    assert _next(RS_SENDING, EV_HEAD) == RS_SENDING  # HTTP/1.1 flushes once per upstream read
    assert _next(RS_SENDING, EV_FINISH) == RS_DONE
    assert _next(RS_IDLE, EV_SWITCH) == RS_TUNNEL


@pytest.mark.parametrize("state", [RS_DONE, RS_TUNNEL])
def test_nothing_moves_an_exchange_that_ended(state):
    assert all(_next(state, e) == 255 for e in EVENTS)


def test_a_switch_after_the_head_went_is_not_a_move():
    # the 101 is sent by the switch itself: a head before it would be a second answer
    assert _next(RS_SENDING, EV_SWITCH) == 255


def test_an_invalid_move_raises_naming_it(harness):
    h = harness()
    h.request()
    ex = h.client.active
    h.respond()
    assert ex.rs == RS_DONE
    with pytest.raises(LifecycleError, match="no move 'head' from DONE"):
        ex.move(EV_HEAD)
    with pytest.raises(LifecycleError, match="no move 'end' from DONE"):
        ex.end_request()


def test_downstreams_are_strategies_without_state():
    assert isinstance(H1, H1Downstream) and isinstance(H2, H2Downstream)
    assert isinstance(H2, Downstream) and type(H2) is not type(H1)
    # the Exchange does not know the protocol: no subclass per protocol
    assert Exchange.__subclasses__() == []


def test_http1_exchange_states(harness):
    h = harness()
    h.client.data_received(b"POST /x HTTP/1.1\r\nHost: app.test\r\nContent-Length: 4\r\n\r\n")
    ex = h.client.active
    assert (ex.rq, ex.rs) == (RQ_BODY, RS_IDLE) and not ex.request_done and not ex.response_started
    h.client.data_received(b"abcd")
    assert ex.rq == RQ_DONE and ex.request_done
    assert ex.client.down is H1
    h.respond()
    assert ex.rs == RS_DONE and ex.done and ex.response_started
    assert h.ct.data.startswith(b"HTTP/1.1 200 OK\r\n") and h.ct.data.endswith(b"hello")


def test_http1_error_before_the_head_is_a_clean_answer_then_done(harness):
    h = harness()
    h.request()
    ex = h.client.active
    h.respond(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")  # no head to pass on
    assert ex.rs == RS_DONE and h.ct.data.startswith(b"HTTP/1.1 502 ")  # a clean answer, not a cut


def test_http1_error_after_the_head_cuts_the_connection(harness):
    h = harness()
    h.request()
    ex = h.client.active
    h.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel")
    assert ex.rs == RS_SENDING  # the head and 3 bytes went
    h.up.connection_lost(None)
    assert ex.rs == RS_DONE and h.ct.closed  # never a short body passed as whole
    assert ex.status == 200 and b"502" not in bytes(h.ct.data)


def test_http2_exchange_writes_through_its_downstream(h2harness):
    h = h2harness(NeedsToken())
    sid = h.get()  # answered by the policy: Porch's own 401 as a ResponseHead
    headers, body = h.response(sid)
    assert headers[b":status"] == b"401" and body == b"who are you?\n"
    assert headers[b"content-length"] == str(len(body)).encode()
    sid = h.get(extra=[(b"authorization", b"Bearer ok")])
    h.respond()
    h.exchange()
    headers, body = h.response(sid)
    assert headers[b":status"] == b"200" and body == b"hello"
    assert h.responses[sid].get("ended")


def test_http1_local_answer_bytes(harness):
    h = harness(NeedsToken())
    h.request(b"HEAD /x HTTP/1.1\r\nHost: app.test\r\n\r\n")
    data = bytes(h.ct.data)
    head, _, body = data.partition(b"\r\n\r\n")
    # Date first (RFC 9110 6.6.1: an origin with a clock sends it), as nginx puts it after Server
    assert re.match(rb"HTTP/1.1 401 Unauthorized\r\nDate: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT\r\n"
                    rb"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 13\r\n", head)  # a GET's length
    assert body == b""  # HEAD: no body


assert OK  # (imported for the harness's default response)


def test_the_moves_written_inline_agree_with_the_table():
    # Exchange.finish, H1Downstream.flush and ClientConnection.on_headers_complete set
    # these states directly on the hot path (a call cost ~40 instructions a request)
    assert _next(RS_IDLE, EV_FINISH) == _next(RS_SENDING, EV_FINISH) == RS_DONE
    assert _next(RS_IDLE, EV_HEAD) == RS_SENDING
    assert lifecycle.REQUEST[RQ_BODY] == RQ_DONE
