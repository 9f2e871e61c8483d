"""tls/contexts.py: the listening context's TLS objects, in a handshake between two
in-memory TLS ends (no network)."""

from __future__ import annotations

import datetime as dt
import ssl
import types

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from porch.tls.contexts import DirectSSLObject, TlsSettings, certificate_context


def cert_files(tmp_path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "porch.test")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return str(tmp_path / "c.pem"), str(tmp_path / "k.pem")


def pump(a_out: ssl.MemoryBIO, b_in: ssl.MemoryBIO) -> None:
    data = a_out.read()
    if data:
        b_in.write(data)


def test_the_event_loop_gets_tls_objects_whose_record_calls_are_c_methods(tmp_path):
    # uvloop's SSLProtocol calls read, write and pending for every record: they are the
    # connection's C methods, no Python frame between; the rest is ssl.SSLObject's.
    server_ctx = certificate_context(TlsSettings(), *cert_files(tmp_path))
    client_ctx = ssl.create_default_context()
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    client_ctx.set_alpn_protocols(["http/1.1"])
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="porch.test")
    assert isinstance(server, DirectSSLObject) and isinstance(server, ssl.SSLObject)
    for method in (server.read, server.write, server.pending):
        assert isinstance(method, types.BuiltinMethodType)
    for _ in range(4):  # the handshake, both ends in turn
        for end in (client, server):
            try:
                end.do_handshake()
            except ssl.SSLWantReadError:
                pass
        pump(c_out, s_in)
        pump(s_out, c_in)
    assert server.version() == "TLSv1.3" and server.selected_alpn_protocol() == "http/1.1"
    client.write(b"GET / HTTP/1.1\r\n\r\n")
    pump(c_out, s_in)
    assert server.pending() == 0 and server.read(1024) == b"GET / HTTP/1.1\r\n\r\n"
    buffer = bytearray(64)
    assert server.write(b"HTTP/1.1 204 No Content\r\n\r\n") == 27
    pump(s_out, c_in)
    assert client.read(64, buffer) == 27 and bytes(buffer[:27]) == b"HTTP/1.1 204 No Content\r\n\r\n"
    try:  # close_notify from the server: unwrap is ssl.SSLObject's, on the same connection
        server.unwrap()
    except ssl.SSLWantReadError:
        pass
    pump(s_out, c_in)
    assert client.read(64) == b""  # the client sees the clean end
