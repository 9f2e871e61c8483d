"""The PROXY protocol, versions 1 and 2 (HAProxy's proxy-protocol.txt): read and write.

Sans-IO.  `parse(data)` takes the bytes received so far and returns a `ProxyHeader`
(its `size`: how many bytes of `data` it took) or a verdict: NEED_MORE, NOT_PROXY
(the connection does not start with a PROXY header) or MALFORMED.  `encode_v1` and
`encode_v2` build the header Porch sends to passthrough targets.

Written here rather than taken from the `proxy-protocol` package (which the tests use
as the reference encoder and decoder): its `unpack` does not say how many bytes the
header took, so the caller would have to frame v1 lines and v2 blocks itself anyway,
and it reports "incomplete" by raising, shaped for its StreamReader loop.

Limits, from the specification: a v1 line is at most 107 bytes with its CRLF
(section 2.1); a v2 header is 16 bytes and an address block of at most 65535, of
which Porch accepts MAX_V2 (TLVs beyond the addresses are skipped, not read).
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass


class Verdict(enum.Enum):
    NEED_MORE = "need more bytes"
    NOT_PROXY = "not a PROXY header"
    MALFORMED = "malformed PROXY header"


NEED_MORE = Verdict.NEED_MORE
NOT_PROXY = Verdict.NOT_PROXY
MALFORMED = Verdict.MALFORMED

V1_PREFIX = b"PROXY "
V1_MAX = 107  # section 2.1: "the maximum line length ... is 107 bytes"
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_HEADER = 16
# An address block with a few TLVs (AWS/Azure add ~100 bytes); HAProxy reads at
# most its buffer size, 16 KiB.  4 KiB is plenty for addresses and common TLVs.
MAX_V2 = 4096

_V2_CMD_LOCAL = 0x20
_V2_CMD_PROXY = 0x21
# address family (high nibble of byte 13) -> (IP version, address block size); the
# transport (low nibble: unspecified, stream, datagram) does not change the block
_V2_FAMILIES = {1: (4, 12), 2: (6, 36)}


@dataclass(frozen=True)
class ProxyHeader:
    """A parsed header.  `source`/`dest`: (ip, port) of the original connection, or
    None for LOCAL (v2) and UNKNOWN (v1), where the connection's own addresses stand
    (the proxy's health checks send those).  `size`: bytes of input it took."""

    version: int
    source: tuple[str, int] | None
    dest: tuple[str, int] | None
    size: int


def parse(data: bytes) -> ProxyHeader | Verdict:
    """Read a PROXY header (either version) at the start of `data`."""
    if not data:
        return NEED_MORE
    if data[0] == 0x0D:
        return _parse_v2(data)
    if data[0] == 0x50:  # "P"
        return _parse_v1(data)
    return NOT_PROXY


def _parse_v1(data: bytes) -> ProxyHeader | Verdict:
    head = data[:len(V1_PREFIX)]
    if not V1_PREFIX.startswith(head):
        return NOT_PROXY
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        return MALFORMED if len(data) >= V1_MAX else NEED_MORE
    words = data[len(V1_PREFIX):end].split(b" ")
    if words[0] == b"UNKNOWN":  # section 2.1: the rest of the line is ignored
        return ProxyHeader(1, None, None, end + 2)
    if len(words) != 5 or words[0] not in (b"TCP4", b"TCP6"):
        return MALFORMED
    try:
        version = 4 if words[0] == b"TCP4" else 6
        source = (_ip(words[1], version), _port(words[3]))
        dest = (_ip(words[2], version), _port(words[4]))
    except ValueError:
        return MALFORMED
    return ProxyHeader(1, source, dest, end + 2)


def _ip(text: bytes, version: int) -> str:
    addr = ipaddress.ip_address(text.decode("ascii"))
    if addr.version != version:
        raise ValueError("address family does not match")
    return str(addr)


def _port(text: bytes) -> int:
    # section 2.1: decimal, no leading zero, 0..65535
    if not text.isdigit() or (len(text) > 1 and text[:1] == b"0") or int(text) > 65535:
        raise ValueError("bad port")
    return int(text)


def _parse_v2(data: bytes) -> ProxyHeader | Verdict:
    head = data[:len(V2_SIGNATURE)]
    if not V2_SIGNATURE.startswith(head):
        return NOT_PROXY
    if len(data) < V2_HEADER:
        return NEED_MORE
    command, family = data[12], data[13]
    length = int.from_bytes(data[14:16], "big")
    if command >> 4 != 2 or command & 0x0F > 1 or length > MAX_V2:
        return MALFORMED
    size = V2_HEADER + length
    if len(data) < size:
        return NEED_MORE
    if command == _V2_CMD_LOCAL or family >> 4 not in _V2_FAMILIES or family & 0x0F > 2:
        # LOCAL, or UNSPEC / AF_UNIX: section 2.2 says to use the real addresses
        return ProxyHeader(2, None, None, size)
    version, need = _V2_FAMILIES[family >> 4]
    if length < need:
        return MALFORMED
    block = data[V2_HEADER:V2_HEADER + need]
    n = 4 if version == 4 else 16
    src = str(ipaddress.ip_address(block[:n]))
    dst = str(ipaddress.ip_address(block[n:2 * n]))
    sport = int.from_bytes(block[2 * n:2 * n + 2], "big")
    dport = int.from_bytes(block[2 * n + 2:2 * n + 4], "big")
    return ProxyHeader(2, (src, sport), (dst, dport), size)


def encode_v1(source: tuple[str, int], dest: tuple[str, int]) -> bytes:
    """A v1 line for a TCP connection from `source` to `dest` (same family)."""
    src, dst = _same_family(source[0], dest[0])
    proto = "TCP4" if src.version == 4 else "TCP6"
    return f"PROXY {proto} {src} {dst} {source[1]} {dest[1]}\r\n".encode("ascii")


def encode_v2(source: tuple[str, int], dest: tuple[str, int]) -> bytes:
    """A v2 PROXY command over TCP from `source` to `dest`, no TLVs."""
    src, dst = _same_family(source[0], dest[0])
    family = 0x11 if src.version == 4 else 0x21
    block = src.packed + dst.packed + source[1].to_bytes(2, "big") + dest[1].to_bytes(2, "big")
    return V2_SIGNATURE + bytes((_V2_CMD_PROXY, family)) + len(block).to_bytes(2, "big") + block


def _same_family(a: str, b: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
    """Both addresses in one family: a v4 client on a dual-stack socket appears as
    ::ffff:a.b.c.d; v4-mapped addresses are unmapped, and a v4/v6 mix is sent as v6."""
    src, dst = _unmapped(a), _unmapped(b)
    if src.version != dst.version:
        src, dst = _as_v6(src), _as_v6(dst)
    return src, dst


def _unmapped(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    addr = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _as_v6(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv6Address:
    return addr if addr.version == 6 else ipaddress.IPv6Address(f"::ffff:{addr}")
