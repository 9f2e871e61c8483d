"""Why a request failed: the status the client gets, whose fault it was, retry safety.

Pingora's habit: an error says who caused it (the client, the upstream, or us) and
whether sending the request again could help.  The error log line and the JSON access
log's `error` field are built from it.
"""

from __future__ import annotations

from dataclasses import dataclass

CLIENT = "client"
UPSTREAM = "upstream"
INTERNAL = "internal"


@dataclass(frozen=True, slots=True)
class ProxyError:
    status: int  # what the client is answered (0: nothing can be answered any more)
    source: str  # CLIENT | UPSTREAM | INTERNAL
    cause: str  # one line, for the logs
    retryable: bool = False

    def __str__(self) -> str:
        return f"{self.source}: {self.cause}"


def client_error(status: int, cause: str) -> ProxyError:
    return ProxyError(status, CLIENT, cause)


def upstream_error(status: int, cause: str, retryable: bool = False) -> ProxyError:
    return ProxyError(status, UPSTREAM, cause, retryable)
