"""`max_body`: the largest request body a route takes (nginx's client_max_body_size).

    [[site]]
    hosts = ["libretime.example.org"]
    proxy = "http://localhost:8080"
    max_body = "512M"           # "off" (the default): no limit

A body over the limit is answered 413 with a log line naming the limit, and the
connection is closed after it (the body is not read: server/proxy.py `_note_answer`).

- A declared length (Content-Length) over the limit is refused here, in the request
  phase, before anything is sent upstream, as nginx does when it picks the location.
- A body without one (chunked, or HTTP/2 DATA frames without content-length) can only
  be counted as it arrives: `Exchange.on_request_body` (server/proxy.py) counts it
  against the route's `max_body` (RouteRuntime.max_body) and answers 413, or cuts the
  exchange if the upstream already answered.  That count is in the body path, not a
  phase: the pipeline has no request-body phase.

The compile step puts the policy on each route whose `max_body` is set (config/compile.py,
from the model's `Route.limits.max_body`): `max_body` stays a limits key (config/keys.py),
parsed, merged and dumped as before; a route without it pays nothing.
"""

from __future__ import annotations

from porch.pipeline import Context, Policy, Reply


class MaxBody(Policy):
    name = "max_body"
    __slots__ = ("limit",)

    def __init__(self, limit: int) -> None:
        self.limit = limit  # bytes

    def request(self, ctx: Context) -> Reply | None:
        length = ctx.content_length
        if length is not None and length > self.limit:
            return Reply(413, cause=f"body of {length} bytes over max_body {self.limit}")
        return None


def for_route(limit: int | None) -> MaxBody | None:
    """The policy for a route's `max_body` (None: no limit, no policy)."""
    return None if limit is None else MaxBody(limit)
