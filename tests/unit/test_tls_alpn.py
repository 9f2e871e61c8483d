"""TLS-ALPN-01 (RFC 8737) pieces without a network: the challenge as the acme library
parses it, the validation certificate, and the responder's contexts in a handshake
between two in-memory TLS ends."""

from __future__ import annotations

import hashlib
import ssl

import josepy as jose
import pytest
from acme import messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from porch.observability.errorlog import ErrorLog
from porch.storage import FileStorage
from porch.tls.acme_alpn import ID_PE_ACME_IDENTIFIER, TLSALPN01, validation_pem
from porch.tls.alpn_challenge import AlpnResponder, storage_key

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"


def account_key() -> jose.JWKEC:
    return jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))


def test_the_ca_s_challenge_parses_and_answers_as_rfc_8555_says():
    body = messages.ChallengeBody.from_json(
        {"type": "tls-alpn-01", "url": "https://ca.test/chall/1", "status": "pending", "token": TOKEN})
    assert isinstance(body.chall, TLSALPN01)
    jwk = account_key()
    response, key_authorization = body.response_and_validation(jwk)
    thumbprint = jose.b64encode(jwk.thumbprint(hash_function=jose.jwk.hashes.SHA256)).decode()
    assert key_authorization == f"{TOKEN}.{thumbprint}"
    assert response.to_partial_json() == {}  # RFC 8555 7.5.1: an empty object


def test_validation_certificate():
    pem = validation_pem("a.example.com", "token.thumb")
    cert = x509.load_pem_x509_certificate(pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["a.example.com"]  # exactly the name
    ext = cert.extensions.get_extension_for_oid(ID_PE_ACME_IDENTIFIER)
    assert ext.critical  # RFC 8737 section 3
    assert ext.value.value == b"\x04\x20" + hashlib.sha256(b"token.thumb").digest()
    key = serialization.load_pem_private_key(pem, None)
    assert key.public_key() == cert.public_key()


def handshake(server_ctx: ssl.SSLContext, name: str, alpn: list[str]) -> ssl.SSLObject:
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    client_ctx.set_alpn_protocols(alpn)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=name)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        done = 0
        for end in (client, server):
            try:
                end.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if done == 2:
            return client
    raise AssertionError("no handshake")


@pytest.fixture
def storage(tmp_path):
    return FileStorage(tmp_path)


def test_responder_serves_the_pending_challenge_only(storage, tmp_path):
    log = ErrorLog(str(tmp_path / "error.log"))
    responder = AlpnResponder(storage)
    assert responder.context("a.example.com", log) is None  # nothing pending
    pem = validation_pem("a.example.com", "token.thumb")
    storage.put(storage_key("a.example.com"), pem)
    ctx = responder.context("a.example.com", log)
    assert ctx is not None and responder.context("a.example.com", log) is ctx  # cached
    client = handshake(ctx, "a.example.com", ["acme-tls/1"])
    assert client.selected_alpn_protocol() == "acme-tls/1"
    assert client.getpeercert(True) == x509.load_pem_x509_certificate(pem).public_bytes(
        serialization.Encoding.DER)
    assert responder.context("b.example.com", log) is None
    assert responder.context("../etc", log) is None and responder.context(None, log) is None
    # a new challenge for the name replaces the context; a finished one removes it
    storage.put(storage_key("a.example.com"), validation_pem("a.example.com", "other.thumb"))
    assert responder.context("a.example.com", log) is not ctx
    storage.delete(storage_key("a.example.com"))
    assert responder.context("a.example.com", log) is None


def test_a_broken_validation_file_is_logged_not_served(storage, tmp_path):
    log_path = tmp_path / "error.log"
    log = ErrorLog(str(log_path))
    storage.put(storage_key("a.example.com"), b"not a pem")
    assert AlpnResponder(storage).context("a.example.com", log) is None
    log.close()
    assert "TLS-ALPN-01 challenge: the validation certificate does not load" in log_path.read_text()


def client_hello(alpn: list[str], name: str = "a.example.com") -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_alpn_protocols(alpn)
    out = ssl.MemoryBIO()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def test_the_listener_tells_validations_from_other_hellos_without_parsing():
    from pathlib import Path

    from porch.server.mux import _not_acme_tls

    acme = client_hello(["acme-tls/1"])
    assert not _not_acme_tls(acme)  # a validation: parsed and answered
    assert not _not_acme_tls(acme[:20])  # its record not whole yet: wait
    assert not _not_acme_tls(b"") and not _not_acme_tls(b"\x16\x03")
    for path in sorted((Path(__file__).parent / "data" / "clienthello").glob("*.bin")):
        assert _not_acme_tls(path.read_bytes()), path.name  # curl, openssl, Python: Porch's TLS
    assert _not_acme_tls(client_hello(["h2", "http/1.1"]))
    assert _not_acme_tls(b"GET / HTTP/1.1\r\n")  # not TLS: OpenSSL answers it, as ever
