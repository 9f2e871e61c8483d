"""server/supervisor.py pieces without processes: exit causes, listen addresses, which
worker serves which SO_REUSEPORT socket."""

from __future__ import annotations

import socket

from porch.config.toml import loads
from porch.server.supervisor import Listeners, Supervisor, exit_cause, listen_addresses


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


def _tls_config(tmp_path, tls: str = "internal"):
    return loads(f'[porch]\nhttp_port = 8080\nhttps_port = 8443\nbind = ["127.0.0.1"]\n'
                 f'state_dir = "{tmp_path}/state"\nerror_log = "{tmp_path}/error.log"\n'
                 f'[[site]]\nhosts = ["localhost"]\ntls = "{tls}"\nproxy = "http://127.0.0.1:1"\n')


def test_the_ticket_secret_is_made_once_at_the_first_https_site_and_kept(tmp_path):
    plain, tls = _tls_config(tmp_path, "off"), _tls_config(tmp_path)
    sup = Supervisor(str(tmp_path / "porch.toml"), plain, services=[])
    try:
        assert sup.ticket_secret(plain) is None  # no HTTPS site: nothing checked yet
        secret = sup.ticket_secret(tls)
        assert isinstance(secret, bytes) and len(secret) == 80
        assert sup.ticket_secret(tls) is secret  # reloads and restarts get the same
        assert sup.ticket_secret(plain) is secret
        assert Supervisor(str(tmp_path / "porch.toml"), tls, services=[]).ticket_secret(tls) != secret
    finally:
        sup.log.close()
    assert "session tickets" not in (tmp_path / "error.log").read_text()


def test_when_the_ticket_key_check_fails_one_warning_and_no_secret(tmp_path):
    tls = _tls_config(tmp_path)
    sup = Supervisor(str(tmp_path / "porch.toml"), tls, services=[],
                     ticket_check=lambda: "the SSL_CTX read does not hold the context's num_tickets")
    try:
        for _ in range(3):  # start, a reload, a restart
            assert sup.ticket_secret(tls) is None
    finally:
        sup.log.close()
    lines = [ln for ln in (tmp_path / "error.log").read_text().splitlines() if "session tickets" in ln]
    assert len(lines) == 1 and "[warn]" in lines[0], lines
    assert "each worker keeps its own key" in lines[0] and "num_tickets" in lines[0]
