"""First-byte probes (mux/probes.py), on what real clients send first."""

from __future__ import annotations

from porch.mux.probes import MATCH, MAYBE, NO, detect, http, openvpn, ssh, xmpp

# what the clients send first (openssh 9.2, Gajim/Conversations-style stream header,
# curl, OpenVPN 2.6 over TCP with no tls-auth: P_CONTROL_HARD_RESET_CLIENT_V2)
SSH = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"
XMPP_DECL = b"<?xml version='1.0'?><stream:stream to='chat.example.com' xmlns='jabber:client'"
XMPP_BARE = b"<stream:stream xmlns='jabber:client' to='chat.example.com' version='1.0'>"
HTTP = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
OPENVPN = b"\x00\x0e\x38" + bytes(8) + b"\x00\x00\x00\x00"


def test_each_probe_on_its_protocol_and_every_prefix():
    for probe, data in ((ssh, SSH), (xmpp, XMPP_DECL), (xmpp, XMPP_BARE), (http, HTTP),
                        (openvpn, OPENVPN)):
        assert probe(data) == MATCH
        assert probe(data[:1]) == MAYBE


def test_probes_refuse_the_others():
    for data in (SSH, XMPP_DECL, HTTP, OPENVPN):
        matching = [p.__name__ for p in (ssh, xmpp, http, openvpn) if p(data) == MATCH]
        assert len(matching) == 1, (data, matching)
    assert http(b"GETX / HTTP/1.1") == NO
    assert xmpp(b"  \r\n<stream:stream") == MATCH  # whitespace before the header
    assert openvpn(b"\x00\x0e\x40" + bytes(12)) == NO  # another opcode


def test_detect_follows_file_order():
    assert detect(SSH, ("xmpp", "ssh")) == 1
    assert detect(XMPP_BARE, ("xmpp", "any")) == 0
    assert detect(b"hello", ("xmpp", "any")) == 1
    assert detect(b"hello", ("xmpp", "ssh")) == NO
    # "<" could still be xmpp: an `any` after it must wait
    assert detect(b"<", ("xmpp", "any")) == MAYBE
    assert detect(b"<", ("any", "xmpp")) == 0
