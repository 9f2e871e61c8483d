"""When to renew and when to retry: plain functions of times, no I/O.

- Renew when `fraction` (a third) of the lifetime is left: day 60 of Let's
  Encrypt's 90, as certbot and Caddy do.
- If the CA offers ACME Renewal Information (RFC 9773), renew at a random moment
  of its suggested window (4.2), or at once when the window has started or is
  already past; whichever of the two comes first wins.
- After a failure, retry with exponential backoff and jitter, so many Porch
  instances that failed together do not retry together (Let's Encrypt's
  integration guide asks for both).
"""

from __future__ import annotations

import datetime as dt
import random

RENEW_FRACTION = 1 / 3
RETRY_BASE = 60.0  # first retry after about a minute
RETRY_CAP = 6 * 3600.0  # then never more than 6 hours apart (certbot renews twice a day)
LOOK_AGAIN = 12 * 3600.0  # re-read storage at least this often (another process may renew)


def lifetime_due(not_before: dt.datetime, not_after: dt.datetime,
                 fraction: float = RENEW_FRACTION) -> dt.datetime:
    """The moment when `fraction` of the certificate's lifetime is left."""
    return not_after - (not_after - not_before) * fraction


def ari_pick(start: dt.datetime, end: dt.datetime, rand: float | None = None) -> dt.datetime:
    """A uniformly random moment of the suggested window [start, end] (RFC 9773 4.2)."""
    r = random.random() if rand is None else rand
    return start + (end - start) * r if end > start else start


def backoff(attempts: int, base: float = RETRY_BASE, cap: float = RETRY_CAP,
            rand: float | None = None) -> float:
    """Seconds to wait after the `attempts`-th failure in a row (1, 2, ...):
    base, 2*base, 4*base ... up to cap, each scaled by a random 0.5-1.0 ("equal jitter")."""
    r = random.random() if rand is None else rand
    delay = min(cap, base * 2 ** max(0, min(attempts - 1, 30)))
    return delay * (0.5 + r / 2)
