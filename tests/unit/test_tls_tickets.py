"""Session-ticket keys shared by the workers (tls/tickets.py), without a network: two
"workers" are two sets of contexts built as a worker builds them (TlsFront with an SNI
table, a site context from certificate files), joined by in-memory TLS ends; a session
from one is offered to the other.  TLS 1.2 and 1.3.  And the layout check: it refuses a
pointer that is not the context's SSL_CTX, and then nothing is written."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from porch.server.worker import WorkerSpec
from porch.tls import tickets
from porch.tls.contexts import CertSlot, SniTable, TlsFront, TlsSettings, certificate_context
from porch.tls.tickets import KEY_SIZE, TicketKeys, ctx_pointer, derive_key, layout_problem, read_key

V = ssl.TLSVersion
VERSIONS = [pytest.param(V.TLSv1_2, id="tls1.2"), pytest.param(V.TLSv1_3, id="tls1.3")]


@pytest.fixture(scope="module")
def cert_files(tmp_path_factory) -> tuple[str, str]:
    d = tmp_path_factory.mktemp("tickets")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a.test")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("a.test")]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = Path(d, "cert.pem"), Path(d, "key.pem")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


class Worker:
    """The server contexts one worker builds (tls/service.py's shape), with `keys`."""

    def __init__(self, cert_files: tuple[str, str], keys: TicketKeys | None) -> None:
        settings = TlsSettings()
        slot = CertSlot("a")
        slot.context = certificate_context(settings, *cert_files)
        if keys is not None:
            keys.install(slot.context)
        self.slot = slot
        self.front = TlsFront(settings, SniTable.build([(("a.test",), slot)]), lambda *a: None, keys)


_clients: dict[ssl.TLSVersion, ssl.SSLContext] = {}


def client_context(version: ssl.TLSVersion) -> ssl.SSLContext:
    """One per version: Python offers a session only through the context that got it."""
    if version not in _clients:
        ctx = _clients[version] = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.minimum_version = ctx.maximum_version = version
    return _clients[version]


def connect(worker: Worker, version: ssl.TLSVersion, session: ssl.SSLSession | None = None):
    """One handshake and one record each way (a TLS 1.3 ticket comes after the
    handshake); (reused, the client's session)."""
    client_ctx = client_context(version)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="a.test", session=session)
    server = worker.front.context.wrap_bio(s_in, s_out, server_side=True)
    done = set()
    for _ in range(10):
        for name, end in (("client", client), ("server", server)):
            if name not in done:
                try:
                    end.do_handshake()
                    done.add(name)
                except ssl.SSLWantReadError:
                    pass
            (s_in if end is client else c_in).write((c_out if end is client else s_out).read())
        if len(done) == 2:
            break
    assert len(done) == 2, "handshake did not finish"
    server.write(b"x")
    c_in.write(s_out.read())
    assert client.read(1) == b"x"  # reads the TLS 1.3 tickets on the way
    assert client.version() == version.name.replace("_", ".")
    return client.session_reused, client.session


def test_the_layout_check_passes_on_this_python_and_openssl():
    # CPython with the OpenSSL its _ssl links: what the suite and the package run on
    assert layout_problem() is None
    assert tickets.problem() is None


@pytest.mark.parametrize("version", VERSIONS)
def test_a_ticket_from_one_worker_resumes_on_another_with_the_shared_key(cert_files, version):
    secret = tickets.new_secret()
    one, two = Worker(cert_files, TicketKeys(secret)), Worker(cert_files, TicketKeys(secret))
    reused, session = connect(one, version)
    assert not reused
    for worker in (two, one, two):
        assert connect(worker, version, session)[0]
    # the key each context holds is the derived one, on both "workers"
    expected = derive_key(secret, tickets.period_at(tickets.time.time()))
    assert {read_key(w.front.context) for w in (one, two)} == {expected}
    assert read_key(one.slot.context) == expected


@pytest.mark.parametrize("version", VERSIONS)
def test_without_a_shared_key_each_worker_resumes_only_its_own_tickets(cert_files, version):
    # the control: OpenSSL's own random key per context (what Porch did before), and
    # two supervisors' secrets (two porches) do not open each other's tickets
    for keys in ((None, None), (TicketKeys(tickets.new_secret()), TicketKeys(tickets.new_secret()))):
        one, two = Worker(cert_files, keys[0]), Worker(cert_files, keys[1])
        _, session = connect(one, version)
        assert connect(one, version, session)[0]
        assert not connect(two, version, session)[0]


@pytest.mark.parametrize("version", VERSIONS)
def test_rotation_installs_the_next_periods_key_and_old_tickets_get_a_full_handshake(cert_files, version):
    now = [3600 * 1000.0]  # the start of a period
    secret = tickets.new_secret()
    keys = TicketKeys(secret, every=3600, clock=lambda: now[0])
    worker = Worker(cert_files, keys)
    _, old = connect(worker, version)
    now[0] += 1800
    assert not keys.rotate()  # same period: nothing to do
    assert connect(worker, version, old)[0]
    now[0] += 1800
    assert keys.rotate()
    assert keys.key == derive_key(secret, keys.period) != derive_key(secret, keys.period - 1)
    for ctx in (worker.front.context, worker.slot.context):  # what TlsService.refresh does
        assert keys.install(ctx)
    assert read_key(worker.front.context) == keys.key
    reused, new = connect(worker, version, old)
    assert not reused  # the cost of one key at a time: one full handshake, then resumed
    assert connect(worker, version, new)[0]


def test_derived_keys_depend_on_the_secret_and_the_period():
    a, b = tickets.new_secret(), tickets.new_secret()
    assert len(a) == 80 and a != b
    assert derive_key(a, 7) == derive_key(a, 7)
    assert len({derive_key(a, 7), derive_key(a, 8), derive_key(b, 7)}) == 3
    assert all(len(derive_key(a, p)) == KEY_SIZE for p in (0, 1, 2**40))


def test_the_layout_check_refuses_what_is_not_the_contexts_ssl_ctx():
    other = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    before = read_key(other)
    # a real SSL_CTX, but another context's: its num_tickets does not follow the probe's
    assert "num_tickets" in layout_problem(pointer=lambda ctx: ctx_pointer(other))
    assert read_key(other) == before  # the check wrote nothing there
    assert "no SSL_CTX" in layout_problem(pointer=lambda ctx: 0)
    assert "no SSL_CTX" in layout_problem(pointer=lambda ctx: ctx_pointer(ctx) + 1)
    assert "OpenSSL" in layout_problem(expected_version=ssl.OPENSSL_VERSION_NUMBER + 1)


@pytest.mark.parametrize("version", VERSIONS)
def test_when_the_check_fails_each_worker_keeps_its_own_key(cert_files, version):
    secret = tickets.new_secret()
    failing = lambda: layout_problem(pointer=lambda ctx: 0)  # noqa: E731
    keys = [TicketKeys(secret, check=failing) for _ in range(2)]
    assert not keys[0].shared and "no SSL_CTX" in keys[0].problem
    one, two = Worker(cert_files, keys[0]), Worker(cert_files, keys[1])
    assert read_key(one.front.context) != derive_key(secret, keys[0].period)  # nothing installed
    assert not keys[0].install(one.front.context)
    _, session = connect(one, version)
    assert connect(one, version, session)[0]  # resumption still works on its own worker
    assert not connect(two, version, session)[0]
    assert not keys[0].rotate()


def test_the_secret_is_in_no_repr():
    secret = tickets.new_secret()
    spec = WorkerSpec(config=None, sockets=(), slot=0, generation=1, ticket_secret=secret)
    keys = TicketKeys(secret)
    for text in (repr(spec), repr(keys)):
        assert secret.hex() not in text and repr(secret) not in text and repr(keys.key) not in text
