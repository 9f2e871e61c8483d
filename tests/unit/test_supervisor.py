"""server/supervisor.py pieces without processes: exit causes, listen addresses, which
worker serves which SO_REUSEPORT socket."""

from __future__ import annotations

import socket

from porch.config.toml import loads
from porch.server.supervisor import Listeners, exit_cause, listen_addresses


def test_exit_cause_names_the_code_or_the_signal():
    assert exit_cause(0) == "exit code 0"
    assert exit_cause(3) == "exit code 3"
    assert exit_cause(-9) == "killed by SIGKILL"
    assert exit_cause(-11) == "killed by SIGSEGV"


def test_listen_addresses_add_https_only_with_a_tls_site():
    plain = loads('[porch]\nhttp_port = 8080\nbind = ["127.0.0.1", "::1"]\n'
                  '[[site]]\nproxy = "http://127.0.0.1:1"\n')
    assert listen_addresses(plain) == [("127.0.0.1", 8080), ("::1", 8080)]
    tls = loads('[porch]\nhttp_port = 8080\nhttps_port = 8443\nbind = ["127.0.0.1"]\n'
                '[[site]]\nhosts = ["localhost"]\ntls = "internal"\nproxy = "http://127.0.0.1:1"\n')
    assert listen_addresses(tls) == [("127.0.0.1", 8080), ("127.0.0.1", 8443)]


def test_every_socket_of_a_group_has_exactly_one_owner_whatever_the_worker_count():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    key = ("127.0.0.1", port)
    listeners = Listeners()
    try:
        listeners.add([key], 3)
        assert len(listeners.groups[key]) == (3 if listeners.reuse_port else 1)
        listeners.add([key], 2)  # fewer workers: the group does not shrink
        assert len(listeners.groups[key]) == (3 if listeners.reuse_port else 1)
        for workers in (1, 2, 3):
            owners: dict[int, list[int]] = {}
            for slot in range(workers):
                held = listeners.for_worker([key], slot, workers)
                assert len(held) == len(listeners.groups[key])  # each holds all, to adopt
                for s in held:
                    if s.own:
                        owners.setdefault(s.fd, []).append(slot)
            if listeners.reuse_port:
                assert sorted(owners) == sorted(sock.fileno() for sock in listeners.groups[key])
                assert all(len(slots) == 1 for slots in owners.values()), owners
    finally:
        listeners.close_all()
    assert listeners.groups == {}
