"""Which target a request goes to: one plain function per balancing mode, no I/O.

Each takes the targets' weights, which of them are up (`up[i]`), and what the mode
needs (counters, a hash key), and returns indexes into the target list: the chosen
one first, then the others to try after it fails (retries).  upstream/pool.py's
Balancer keeps the state between calls and acts on the answer.

- round robin: nginx's smooth weighted round robin (ngx_http_upstream_round_robin.c):
  weights 5, 1, 1 give a a b a c a a, never a run of five;
- least connections: fewest requests in flight per unit of weight; ties by weighted
  round robin (nginx's least_conn);
- power of two random choices: two different targets drawn by weight, the less
  loaded one
  (HAProxy `random(2)`, Envoy's LEAST_REQUEST);
- hashes (client address, request URI): rendezvous hashing (HRW, Thaler & Ravishankar
  1996), weighted (score w / -ln(h)): when a target leaves or is down, only the keys
  it had move, each to the target that scores next for it; the order of all scores is
  also the retry order.  64-bit keyed BLAKE2b, the same in every worker and every run
  (Python's hash() is salted per process).
"""

from __future__ import annotations

import math
import random
from hashlib import blake2b

_SCALE = 1.0 / 18446744073709551616.0  # 2**-64


def smooth_weighted(current: list[int], weights: tuple[int, ...], up: list[bool]) -> int:
    """nginx's smooth weighted round robin: every up target's current weight grows by
    its weight; the largest is chosen and loses the total.  -1 when none is up."""
    best = -1
    total = 0
    for i, weight in enumerate(weights):
        if not up[i]:
            continue
        current[i] += weight
        total += weight
        if best < 0 or current[i] > current[best]:
            best = i
    if best >= 0:
        current[best] -= total
    return best


def ring_after(first: int, up: list[bool]) -> list[int]:
    """`first`, then the other up targets in list order after it (the retry order)."""
    n = len(up)
    return [first] + [(first + k) % n for k in range(1, n) if up[(first + k) % n]]


def least_loaded(active: list[int], weights: tuple[int, ...], up: list[bool], start: int) -> list[int]:
    """Up targets by requests in flight per unit of weight, fewest first; ties broken
    in turn from `start` (nginx least_conn: round robin among the equally loaded)."""
    n = len(up)
    ring = [(start + k) % n for k in range(n) if up[(start + k) % n]]
    return sorted(ring, key=lambda i: active[i] / weights[i])  # stable: ties keep the ring order


def least_conn(current: list[int], active: list[int], weights: tuple[int, ...], up: list[bool]) -> list[int]:
    """nginx's least_conn: the up targets with the fewest requests in flight per unit of
    weight; among those, smooth weighted round robin (so that weights count when the
    load is light and every count is 0).  Then the rest by load, for retries."""
    loads = [active[i] / weights[i] for i in range(len(up)) if up[i]]
    low = min(loads)
    tied = [ok and active[i] / weights[i] == low for i, ok in enumerate(up)]
    first = smooth_weighted(current, weights, tied)
    return [first, *(i for i in least_loaded(active, weights, up, first) if i != first)]


def weighted_pick(weights: tuple[int, ...], up: list[bool], rng: random.Random) -> int:
    """One up target at random, in proportion to its weight; -1 when none is up."""
    total = sum(w for w, ok in zip(weights, up) if ok)
    if not total:
        return -1
    point = rng.random() * total
    last = -1
    for i, weight in enumerate(weights):
        if up[i]:
            last = i
            point -= weight
            if point < 0:
                return i
    return last


def random_two(active: list[int], weights: tuple[int, ...], up: list[bool], rng: random.Random) -> list[int]:
    """Power of two choices: two different targets drawn by weight, the one with less
    in flight per unit of weight first, then the other up targets as least_loaded
    orders them."""
    a = weighted_pick(weights, up, rng)
    if a < 0:
        return []
    others = list(up)
    others[a] = False
    b = weighted_pick(weights, others, rng)
    if b < 0:
        return [a]
    first = b if active[b] * weights[a] < active[a] * weights[b] else a
    rest = [i for i in least_loaded(active, weights, up, first) if i != first]
    return [first, *rest]


def seed(address: str) -> bytes:
    """A target's hashing key: from its address, so that it is the same in every
    worker, across reloads, and whatever the order of the `proxy` list."""
    return blake2b(address.encode(), digest_size=16).digest()


def rendezvous(key: bytes, seeds: tuple[bytes, ...], weights: tuple[int, ...], up: list[bool]) -> list[int]:
    """Up targets by weighted rendezvous score for `key`, highest first."""
    scores = []
    for i, target_seed in enumerate(seeds):
        if up[i]:
            h = int.from_bytes(blake2b(key, digest_size=8, key=target_seed).digest(), "little")
            # h/2**64 in (0, 1): -ln of it is an exponential draw; w/draw orders by weight
            scores.append((weights[i] / -math.log((h + 0.5) * _SCALE), i))
    scores.sort(reverse=True)
    return [i for _, i in scores]
