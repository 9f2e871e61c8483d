"""Balancing decisions (upstream/balance.py, pool.Balancer) and health counting
(upstream/health.py), without sockets: plain calls and their answers."""

import random
from collections import Counter
from types import SimpleNamespace

from porch.config.model import UpstreamTarget
from porch.storage import FileStorage
from porch.upstream import balance
from porch.upstream.health import ProbeState, after_probe, decode_state, encode_state, record_failure
from porch.upstream.pool import Balancer, Target
from porch.upstream.sticky import Sticky, cookie_name, secret


def targets(n: int) -> tuple[Target, ...]:
    return tuple(Target(UpstreamTarget("http", f"10.0.0.{i + 1}", 8080)) for i in range(n))


def request(ip: str = "192.0.2.1", uri: bytes = b"/", headers: list[bytes] | None = None):
    return SimpleNamespace(client_ip=ip, target=uri, headers=headers or [], cookie_target=None)


def test_smooth_weighted_round_robin_is_nginx_order():
    # nginx's documented example: weights 5, 1, 1 -> a a b a c a a (smooth, no run of five)
    current = [0, 0, 0]
    picks = [balance.smooth_weighted(current, (5, 1, 1), [True] * 3) for _ in range(7)]
    assert "".join("abc"[i] for i in picks) == "aabacaa"


def test_smooth_weighted_skips_down_targets_and_none_up():
    current = [0, 0, 0]
    picks = [balance.smooth_weighted(current, (1, 1, 1), [True, False, True]) for _ in range(4)]
    assert sorted(Counter(picks).items()) == [(0, 2), (2, 2)]
    assert balance.smooth_weighted(current, (1, 1, 1), [False] * 3) == -1


def test_round_robin_balancer_weights_and_retry_order():
    pool = targets(3)
    b = Balancer(pool, (3, 1, 1))
    firsts = Counter(b.order(0.0, request())[0].host for _ in range(500))
    assert firsts == {"10.0.0.1": 300, "10.0.0.2": 100, "10.0.0.3": 100}
    assert len(b.order(0.0, request())) == 3  # the others follow, for retries


def test_down_targets_go_last_then_none():
    pool = targets(2)
    b = Balancer(pool)
    pool[0].down_until = 5.0
    assert [t.host for t in b.order(1.0, request())] == ["10.0.0.2"]
    pool[1].probe_up = False
    assert b.order(1.0, request()) == []
    assert "10.0.0.2:8080: health checks failing" in b.why_down(1.0)
    assert [t.host for t in b.order(6.0, request())] == ["10.0.0.1"]  # its fail_timeout is over


def test_least_conn_prefers_fewest_in_flight_per_weight():
    pool = targets(3)
    b = Balancer(pool, (1, 2, 1), mode="least_conn")
    pool[0].active, pool[1].active, pool[2].active = 2, 3, 1
    # per unit of weight: 2, 1.5, 1
    assert [t.host for t in b.order(0.0, request())] == ["10.0.0.3", "10.0.0.2", "10.0.0.1"]


def test_least_conn_ties_go_by_weighted_round_robin():
    b = Balancer(targets(3), (1, 2, 1), mode="least_conn")
    firsts = Counter(b.order(0.0, request())[0].host for _ in range(400))
    assert firsts == {"10.0.0.1": 100, "10.0.0.2": 200, "10.0.0.3": 100}


def test_random_two_takes_the_less_loaded_of_two():
    pool = targets(2)
    b = Balancer(pool, mode="random_two")
    pool[0].active = 5
    assert {b.order(0.0, request())[0].host for _ in range(50)} == {"10.0.0.2"}
    pool[0].active = 0
    firsts = Counter(b.order(0.0, request())[0].host for _ in range(2000))
    assert 800 < firsts["10.0.0.1"] < 1200


def test_weighted_pick_follows_weights():
    rng = random.Random(7)
    picks = Counter(balance.weighted_pick((1, 3), [True, True], rng) for _ in range(8000))
    assert 1800 < picks[0] < 2200


def test_rendezvous_moves_only_the_departed_share():
    seeds = tuple(balance.seed(f"http://10.0.0.{i}:80") for i in range(4))
    keys = [f"198.51.100.{i}/{j}".encode() for i in range(50) for j in range(40)]
    before = {k: balance.rendezvous(k, seeds, (1, 1, 1, 1), [True] * 4)[0] for k in keys}
    after = {k: balance.rendezvous(k, seeds, (1, 1, 1, 1), [True, True, False, True])[0] for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert moved and all(before[k] == 2 for k in moved)
    assert len(moved) == Counter(before.values())[2]  # all of target 2's keys, nothing else
    assert 0.2 < len(moved) / len(keys) < 0.3


def test_rendezvous_respects_weights():
    seeds = tuple(balance.seed(f"http://h{i}:80") for i in range(2))
    firsts = Counter(balance.rendezvous(b"%d" % i, seeds, (1, 3), [True, True])[0] for i in range(8000))
    assert 1800 < firsts[0] < 2200


def test_hash_modes_are_stable_per_key_and_across_list_order():
    pool = targets(3)
    by_ip = Balancer(pool, mode="ip_hash")
    reordered = Balancer(tuple(reversed(pool)), mode="ip_hash")
    for i in range(30):
        ex = request(ip=f"203.0.113.{i}")
        assert by_ip.order(0.0, ex)[0] is reordered.order(0.0, ex)[0] is by_ip.order(0.0, ex)[0]
    by_uri = Balancer(pool, mode="uri_hash")
    assert len({by_uri.order(0.0, request(uri=b"/a?%d" % i))[0].host for i in range(60)}) == 3


def test_passive_failures_nginx_window():
    t = targets(1)[0]
    assert not record_failure(t, 100.0, 3, 10.0)
    assert not record_failure(t, 105.0, 3, 10.0)
    assert not record_failure(t, 115.5, 3, 10.0)  # the first was over 10 s ago: a new window
    assert not record_failure(t, 116.0, 3, 10.0)
    assert record_failure(t, 117.0, 3, 10.0)
    assert t.down_until == 127.0
    assert not record_failure(t, 200.0, 0, 10.0)  # max_fails = 0: never out


def test_single_target_is_never_taken_out_without_probes():
    b = Balancer(targets(1))
    assert b.single and not b.mark_failed(b.targets[0], 1.0)
    probed = Balancer(targets(1), probed=True)
    assert not probed.single  # probes may take it out, failures still not


def test_tries_are_retries_plus_one_at_most_the_targets():
    assert Balancer(targets(3), retries=1).tries == 2
    assert Balancer(targets(3), retries=5).tries == 3
    assert Balancer(targets(3), retries=0).tries == 1


def test_probe_rise_and_fall():
    state = ProbeState()
    assert [after_probe(state, False, 2, 3) for _ in range(3)] == [False, False, True]
    assert not state.up
    assert not after_probe(state, True, 2, 3)
    assert not after_probe(state, False, 2, 3)  # the run of good ones is broken
    assert [after_probe(state, True, 2, 3) for _ in range(2)] == [False, True]
    assert state.up


def test_state_file_round_trip_and_foreign_content():
    assert decode_state(encode_state({"http://a:1", "http://b:2"})) == {"http://a:1", "http://b:2"}
    assert decode_state(None) == decode_state(b"not json") == decode_state(b'{"down": 3}') == set()


def test_sticky_cookie_signed_and_checked(tmp_path):
    key = secret(FileStorage(tmp_path))
    assert secret(FileStorage(tmp_path)) == key  # made once, kept
    sticky = Sticky(cookie_name("/"), key, ["http://a:1", "http://b:2"])
    line = sticky.set_cookie("http://b:2", https=True)
    assert line.startswith(b"porch_upstream=") and line.endswith(b"; Path=/; HttpOnly; SameSite=Lax; Secure")
    assert not sticky.set_cookie("http://b:2", https=False).endswith(b"Secure")
    value = line.split(b"=", 1)[1].split(b";")[0]
    assert sticky.target_of([b"Cookie", b": ", b"a=1; porch_upstream=" + value, b"\r\n"]) == 1
    tampered = value[:-1] + (b"0" if value[-1:] != b"0" else b"1")
    assert sticky.target_of([b"cookie", b": ", b"porch_upstream=" + tampered, b"\r\n"]) == -1
    other = Sticky(cookie_name("/"), b"x" * 32, ["http://a:1", "http://b:2"])  # another secret
    assert other.target_of([b"Cookie", b": ", b"porch_upstream=" + value, b"\r\n"]) == -1
    assert cookie_name("/api/v1/") == b"porch_upstream_api_v1"


def test_cookie_balancer_follows_a_valid_cookie_while_its_target_is_up():
    pool = targets(3)
    sticky = Sticky(b"porch_upstream", b"k" * 32, [t.address for t in pool])
    b = Balancer(pool, mode="cookie", sticky=sticky)
    value = sticky.set_cookie(pool[2].address, False).split(b"=", 1)[1].split(b";")[0]
    ex = request(headers=[b"Cookie", b": ", b"porch_upstream=" + value, b"\r\n"])
    assert all(b.order(0.0, ex)[0] is pool[2] for _ in range(10)) and ex.cookie_target is pool[2]
    pool[2].down_until = 10.0
    ex = request(headers=[b"Cookie", b": ", b"porch_upstream=" + value, b"\r\n"])
    assert b.order(0.0, ex)[0] is not pool[2] and ex.cookie_target is None


def test_health_watcher_reads_the_state_file_when_it_changes(tmp_path):
    from porch.upstream.health import STATE_KEY
    from porch.upstream.prober import HealthWatcher

    storage = FileStorage(tmp_path)
    pool = targets(2)
    storage.put(STATE_KEY, encode_state({pool[1].address}))
    watcher = HealthWatcher(storage, pool)  # reads it at once: a new worker knows
    assert [t.probe_up for t in pool] == [True, False]
    storage.put(STATE_KEY, encode_state({pool[0].address}))
    watcher.poll()
    assert [t.probe_up for t in pool] == [False, True]
    storage.delete(STATE_KEY)
    watcher.poll()
    assert [t.probe_up for t in pool] == [True, True]
