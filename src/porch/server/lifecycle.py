"""An exchange's life as two small state machines, one per side, as h11 keeps one per
role (h11/_state.py): what the client has sent of its request, and what it has been
sent of the response.  The Exchange (server/proxy.py) keeps each side's state in one
byte and moves it only through `RESPONSE` and `REQUEST` below; a move the table does
not have is a bug in Porch, raised as `LifecycleError` where it happens instead of
leaving an exchange half finished.

Response side (`Exchange.rs`):

    IDLE ──head──> SENDING ──finish──> DONE
      ├──finish──────────────────────> DONE      (nothing sent: aborted, client gone)
      └──switch──> TUNNEL                        (WebSocket: the tunnel logs it)

- IDLE: nothing written yet: routing, the policies, the upstream being reached, its
  head awaited.  An error here is still a clean answer (502, 504, 500).
- SENDING: the head is on its way (HTTP/1.1: flushed; HTTP/2: HEADERS queued).  An
  error now can only cut the response (close, RST_STREAM).
- DONE: finished: logged once, the upstream connection pooled or closed, the client
  connection told.  Every later call on the exchange is a no-op.
- TUNNEL: handed to a tunnel (server/tunnel.py), which logs it when it ends.  The
  switch sends the client its 101 (HTTP/2: its 200): only from IDLE, since after
  another head it would be a second answer.

Request side (`Exchange.rq`): BODY (the head is parsed; body bytes may follow) ──end──>
DONE.  An exchange is made once its head is whole (server/client.py), so there is no
state for a head in progress.
"""

from __future__ import annotations

# Response states (the order matters: `rs >= RS_DONE` is "no more calls")
RS_IDLE = 0
RS_SENDING = 1
RS_DONE = 2
RS_TUNNEL = 3
# Response events
EV_HEAD = 0  # the head went (or is queued) to the client
EV_FINISH = 1  # the exchange ends: log, pool, tell the connection
EV_SWITCH = 2  # a WebSocket switched: a tunnel takes both connections

# Request states and event
RQ_BODY = 0
RQ_DONE = 1
EV_END = 0  # the request is whole

_INVALID = 255
_RS_NAMES = ("IDLE", "SENDING", "DONE", "TUNNEL")
_RS_EVENTS = ("head", "finish", "switch")

# RESPONSE[state * 3 + event] -> the next state (255: no such move).  Bytes, so that
# compiled code reads it with one index (no dict, no tuple key: this is per request).
RESPONSE = bytes([
    # head        finish    switch
    RS_SENDING, RS_DONE, RS_TUNNEL,  # IDLE
    RS_SENDING, RS_DONE, _INVALID,  # SENDING (HTTP/1.1 flushes after each upstream read)
    _INVALID, _INVALID, _INVALID,  # DONE
    _INVALID, _INVALID, _INVALID,  # TUNNEL
])
# REQUEST[state] for its one event, `end` (a second `end` is a bug)
REQUEST = bytes([RQ_DONE, _INVALID])




def _packed(table: bytes) -> int:
    """`table` as 4 bits an entry in one integer (15: no move), which compiled code
    reads with a shift and a mask: no object, no bounds check, per request."""
    return sum((15 if v == _INVALID else v) << (4 * i) for i, v in enumerate(table))


RESPONSE_PACKED = _packed(RESPONSE)
REQUEST_PACKED = _packed(REQUEST)
NO_MOVE = 15


class LifecycleError(RuntimeError):
    """A move the tables do not have: a bug in Porch, not the peer's fault."""


def response_error(state: int, event: int) -> LifecycleError:
    return LifecycleError(f"exchange response: no move {_RS_EVENTS[event]!r} from {_RS_NAMES[state]}")


def request_error(state: int) -> LifecycleError:
    return LifecycleError(f"exchange request: no move 'end' from {('BODY', 'DONE')[state]}")
