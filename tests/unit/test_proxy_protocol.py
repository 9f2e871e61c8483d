"""PROXY protocol (mux/proxy_protocol.py) against the `proxy-protocol` package as reference."""

from __future__ import annotations

from ipaddress import ip_address

import pytest
from proxyprotocol.result import ProxyResultIPv4, ProxyResultIPv6, ProxyResultLocal
from proxyprotocol.v1 import ProxyProtocolV1
from proxyprotocol.v2 import ProxyProtocolV2

from porch.mux.proxy_protocol import (MALFORMED, NEED_MORE, NOT_PROXY, ProxyHeader, encode_v1,
                                      encode_v2, parse)

CASES = [
    (("203.0.113.7", 51234), ("192.0.2.1", 443)),
    (("2001:db8::7", 65535), ("2001:db8::1", 443)),
]


def reference(src, dst):
    cls = ProxyResultIPv4 if ":" not in src[0] else ProxyResultIPv6
    return cls((ip_address(src[0]), src[1]), (ip_address(dst[0]), dst[1]))


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("src,dst", CASES)
def test_reads_what_the_reference_writes(version, src, dst):
    pp = ProxyProtocolV1() if version == 1 else ProxyProtocolV2()
    header = pp.pack(reference(src, dst))
    data = header + b"GET / HTTP/1.1\r\n"
    for cut in range(len(header)):
        assert parse(data[:cut]) is NEED_MORE, cut
    assert parse(data) == ProxyHeader(version, src, dst, len(header))


@pytest.mark.parametrize("src,dst", CASES)
def test_the_reference_reads_what_we_write(src, dst):
    for encode, pp in ((encode_v1, ProxyProtocolV1()), (encode_v2, ProxyProtocolV2())):
        result = pp.unpack(encode(src, dst))
        assert (str(result.source[0]), result.source[1]) == src
        assert (str(result.dest[0]), result.dest[1]) == dst


def test_mapped_and_mixed_families():
    # a v4 client on a dual-stack listener: sent as plain IPv4
    assert encode_v1(("::ffff:198.51.100.2", 4000), ("::ffff:192.0.2.1", 443)) == \
        b"PROXY TCP4 198.51.100.2 192.0.2.1 4000 443\r\n"
    line = encode_v1(("198.51.100.2", 4000), ("2001:db8::1", 443))
    assert line == b"PROXY TCP6 ::ffff:c633:6402 2001:db8::1 4000 443\r\n"


def test_local_and_unknown_keep_the_real_address():
    local = ProxyProtocolV2().pack(ProxyResultLocal())
    assert parse(local) == ProxyHeader(2, None, None, len(local))
    assert parse(b"PROXY UNKNOWN\r\nGET") == ProxyHeader(1, None, None, 15)


def test_not_proxy():
    for data in (b"GET / HTTP/1.1\r\n", b"\x16\x03\x01\x02\x00", b"SSH-2.0-x\r\n", b"PRI * HTTP/2.0",
                 b"\r\n\r\nX"):
        assert parse(data) is NOT_PROXY, data
    assert parse(b"PROX") is NEED_MORE
    assert parse(b"\r\n\r\n\x00") is NEED_MORE


def test_malformed():
    for data in (
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",  # a word too many
        b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n",  # family mismatch
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",  # leading zero
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
        b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 " + b"1" * 200,  # no CRLF within 107 bytes
        b"\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x0c" + bytes(12),  # version 3
        b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x04" + bytes(4),  # address block too short
        b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff",  # over MAX_V2
    ):
        assert parse(data) is MALFORMED, data


def test_v2_tlvs_are_skipped():
    header = encode_v2(("10.0.0.9", 1234), ("10.0.0.1", 443))
    tlv = b"\x04\x00\x03abc"  # PP2_TYPE_NOOP
    data = header[:14] + (12 + len(tlv)).to_bytes(2, "big") + header[16:] + tlv
    assert parse(data + b"rest") == ProxyHeader(2, ("10.0.0.9", 1234), ("10.0.0.1", 443), len(data))
