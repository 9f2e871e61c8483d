"""The ClientHello reader (tls/clienthello.py) on hellos captured from real clients.

tests/unit/data/clienthello/*.bin: the first bytes each client sent to a listening
socket on 127.0.0.1 (curl 7.88, openssl 3.0 s_client, Python's ssl module, Debian's
Chromium 156 headless: 1,928 bytes with GREASE, a post-quantum key share and ECH
GREASE), up to the end of the first record; only random values and public parameters
are in them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from porch.tls import clienthello
from porch.tls.clienthello import MALFORMED, NEED_MORE, NOT_TLS, ClientHello, parse

DATA = Path(__file__).parent / "data" / "clienthello"

CAPTURED = {
    "curl_h2": ClientHello("www.example.org", ("h2", "http/1.1")),
    "curl_http11": ClientHello("chat.example.com", ("http/1.1",)),  # sent as Chat.Example.COM
    "openssl_xmpp_sni": ClientHello("chat.example.com", ("xmpp-client",)),
    "openssl_xmpp_nosni": ClientHello(None, ("xmpp-client",)),
    "openssl_tls12_sni": ClientHello("share.chat.example.com", ()),
    "python_sni_alpn": ClientHello("groups.chat.example.com", ("xmpp-client", "http/1.1")),
    "python_ip": ClientHello(None, ()),
    "chromium_156_h2": ClientHello("chromium.example.org", ("h2", "http/1.1")),
}


def hello(name: str) -> bytes:
    return (DATA / f"{name}.bin").read_bytes()


@pytest.mark.parametrize("name", sorted(CAPTURED))
def test_captured_hello(name):
    assert parse(hello(name)) == CAPTURED[name]


@pytest.mark.parametrize("name", sorted(CAPTURED))
def test_every_split_needs_more_then_reads_the_same(name):
    """Bytes arrive in any TCP segments: every prefix is NEED_MORE, the whole is read."""
    data = hello(name)
    for cut in range(len(data)):
        assert parse(data[:cut]) is NEED_MORE, cut
    assert parse(data + b"\x17\x03\x03") == CAPTURED[name]  # bytes after it do not matter


def refragment(data: bytes, size: int) -> bytes:
    """The same handshake message re-cut into records of `size` bytes (RFC 8446 5.1)."""
    message = data[5:5 + int.from_bytes(data[3:5], "big")]
    out = b""
    for i in range(0, len(message), size):
        piece = message[i:i + size]
        out += data[:3] + len(piece).to_bytes(2, "big") + piece
    return out


@pytest.mark.parametrize("size", [1, 3, 4, 100, 200])
def test_hello_fragmented_over_records(size):
    data = refragment(hello("openssl_xmpp_sni"), size)
    for cut in range(0, len(data), 7):
        assert parse(data[:cut]) is NEED_MORE
    assert parse(data) == CAPTURED["openssl_xmpp_sni"]


def test_not_tls():
    assert parse(b"GET / HTTP/1.1\r\n") is NOT_TLS
    assert parse(b"SSH-2.0-OpenSSH_9.2\r\n") is NOT_TLS
    assert parse(b"<?xml version='1.0'?>") is NOT_TLS
    assert parse(b"\x16\x01") is NOT_TLS  # not version 3.x
    assert parse(b"\x16") is NEED_MORE


def test_malformed():
    data = hello("curl_h2")
    assert parse(b"\x16\x03\x01\x00\x00") is MALFORMED  # empty record
    assert parse(b"\x16\x03\x01\x40\x01") is MALFORMED  # record over 2^14
    assert parse(data[:5] + b"\x02" + data[6:]) is MALFORMED  # a ServerHello
    # the session id's length (after the record and handshake headers, version and
    # random) made 255: the lengths inside no longer add up
    assert parse(data[:43] + b"\xff" + data[44:]) is MALFORMED
    # an alert record in the middle of a fragmented hello
    frag = refragment(data, 100)
    assert parse(frag[:105] + b"\x15\x03\x03\x00\x02\x02\x28" + frag[105:]) is MALFORMED


def test_duplicate_extension_is_malformed():
    # build a minimal hello: version, random, no session, one suite, null compression
    body_head = b"\x03\x03" + b"\x00" * 32 + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    name = b"\x00\x00\x09localhost"
    ext_sni = b"\x00\x00" + (len(name) + 2).to_bytes(2, "big") + len(name).to_bytes(2, "big") + name
    def make(exts: bytes) -> bytes:
        body = body_head + len(exts).to_bytes(2, "big") + exts
        msg = b"\x01" + len(body).to_bytes(3, "big") + body
        return b"\x16\x03\x01" + len(msg).to_bytes(2, "big") + msg
    assert parse(make(ext_sni)) == ClientHello("localhost", ())
    assert parse(make(ext_sni + ext_sni)) is MALFORMED


def test_too_large_is_malformed():
    # a handshake header announcing a hello over MAX_HELLO: refused before reading it
    big = clienthello.MAX_HELLO
    msg_head = b"\x01" + big.to_bytes(3, "big")
    assert parse(b"\x16\x03\x01\x40\x00" + msg_head) is MALFORMED
    # thousands of one-byte records: refused once past MAX_BYTES
    data = refragment(hello("curl_h2"), 1) * 8
    assert parse(data) is not NEED_MORE
    tiny = b"\x16\x03\x01\x00\x01\x01" + b"\x16\x03\x01\x00\x01\x00" * 2 + b"\x16\x03\x01\x00\x01\x40"
    padding = b"\x16\x03\x01\x00\x01\x00" * 3000
    assert parse(tiny + padding) is MALFORMED
