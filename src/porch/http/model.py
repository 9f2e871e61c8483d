"""The message model both protocols produce and consume: no sockets, no loop.

`Headers` keeps fields in order, with duplicates and the name case as received.  It
is stored flat as HTTP/1.1 wire pieces, ``[name, b": ", value, b"\\r\\n", ...]``:
that is the list the HTTP/1.1 parser callbacks already build (server/client.py) and
the one the upstream response head is split into (http/response_head.py), so
wrapping it copies nothing, and serialising it for HTTP/1.1 stays one ``b"".join``.
HTTP/2 reads the same list as (name, value) pairs (http/h2.py lowercases names).

Names compare case-insensitively (RFC 9110 5.1).  A lookup lowercases only the names
of the right length: most fields of a head are not the one sought, and their lengths
say so without making a lowercase copy of each (a response head's ten fields cost ten
bytes objects otherwise, for every lookup of every policy).  The request path with no
policy never builds a `Headers` at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

SEP = b": "
CRLF = b"\r\n"
_STEP = 4  # name, SEP, value, CRLF
# (The loops below write the step as the literal 4: compiled, range() with a literal
# step and a typed index (model.pxd) is a C loop, not a range object of Python ints.)


class Headers:
    """Ordered header fields over a flat wire list (see the module docstring).

    The list passed in is used as it is, not copied: changes through this object are
    what is serialised afterwards."""

    __slots__ = ("flat",)

    def __init__(self, flat: list[bytes] | None = None) -> None:
        self.flat: list[bytes] = [] if flat is None else flat

    @classmethod
    def of(cls, pairs: Iterable[tuple[bytes, bytes]]) -> Headers:
        flat: list[bytes] = []
        for name, value in pairs:
            flat += (name, SEP, value, CRLF)
        return cls(flat)

    @classmethod
    def parse(cls, block: bytes) -> Headers:
        """Header lines as Porch writes them (b"Name: value\\r\\n..."), as fields."""
        flat: list[bytes] = []
        for line in block.split(CRLF):
            if line:
                name, _, value = line.partition(b":")
                flat += (name, SEP, value.strip(), CRLF)
        return cls(flat)

    # -- reading ----------------------------------------------------------------

    def get(self, name: bytes, default: bytes | None = None) -> bytes | None:
        """The first value of `name`, or `default`."""
        flat = self.flat
        size = len(name)
        key = name.lower()
        for i in range(0, len(flat), 4):
            field = flat[i]
            if len(field) == size and field.lower() == key:
                return flat[i + 2]
        return default

    def get_all(self, name: bytes) -> list[bytes]:
        flat = self.flat
        size = len(name)
        key = name.lower()
        out = []
        for i in range(0, len(flat), 4):
            field = flat[i]
            if len(field) == size and field.lower() == key:
                out.append(flat[i + 2])
        return out

    def __contains__(self, name: object) -> bool:
        return isinstance(name, bytes) and self.get(name) is not None

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        flat = self.flat
        for i in range(0, len(flat), 4):
            yield flat[i], flat[i + 2]

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        return self.items()

    def __len__(self) -> int:
        return len(self.flat) // _STEP

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and list(self.items()) == list(other.items())

    def __repr__(self) -> str:
        return f"Headers({list(self.items())!r})"

    # -- changing -----------------------------------------------------------------

    def add(self, name: bytes, value: bytes) -> None:
        """Append a field, keeping any of the same name (Set-Cookie, Cache-Control)."""
        self.flat += (name, SEP, value, CRLF)

    def set(self, name: bytes, value: bytes) -> None:
        """One field `name: value`, where the first of that name was (else at the end);
        other fields of that name go."""
        flat = self.flat
        size = len(name)
        key = name.lower()
        at = -1
        for i in range(0, len(flat), 4):
            field = flat[i]
            if len(field) == size and field.lower() == key:
                if at >= 0:  # a second one: drop the others
                    self.remove_all(frozenset((key,)))
                    flat.insert(at, CRLF)  # (put back where the first was)
                    flat.insert(at, value)
                    flat.insert(at, SEP)
                    flat.insert(at, name)
                    return
                at = i
        if at < 0:
            flat += (name, SEP, value, CRLF)
        else:
            flat[at] = name
            flat[at + 2] = value

    def setdefault(self, name: bytes, value: bytes) -> bytes:
        """Add `name: value` unless a field of that name is there; its value either way."""
        found = self.get(name)
        if found is None:
            self.flat += (name, SEP, value, CRLF)
            return value
        return found

    def add_missing(self, fields: Iterable[tuple[bytes, bytes]]) -> None:
        """`setdefault` for each (name, value) of `fields`, in one call."""
        for name, value in fields:
            if self.get(name) is None:
                self.flat += (name, SEP, value, CRLF)

    def remove(self, name: bytes) -> int:
        """Drop every field of that name; how many there were."""
        return self.remove_all(frozenset((name.lower(),)))

    def remove_all(self, names: frozenset[bytes]) -> int:
        """Drop every field whose lowercase name is in `names`; how many there were."""
        flat = self.flat
        sizes = {len(n) for n in names}
        dropped = 0
        for i in range(len(flat) - 4, -1, -4):  # from the end: deletions keep the indexes before
            field = flat[i]
            if len(field) in sizes and field.lower() in names:
                del flat[i : i + 4]
                dropped += 1
        return dropped

    # -- writing --------------------------------------------------------------------

    def wire(self) -> bytes:
        """The fields as HTTP/1.1 header lines (each ending in CRLF, no blank line)."""
        return b"".join(self.flat)


class RequestHead:
    """A request as routed: method, target (origin-form path and query), the host it
    was routed by, the protocol version and the fields.  HTTP/2's pseudo-headers are
    these attributes, not fields."""

    __slots__ = ("method", "target", "host", "version", "headers")

    def __init__(self, method: bytes, target: bytes, host: bytes, version: bytes,
                 headers: Headers) -> None:
        self.method = method
        self.target = target
        self.host = host
        self.version = version
        self.headers = headers

    @property
    def path(self) -> bytes:
        return self.target.partition(b"?")[0]

    @property
    def query(self) -> bytes:
        """The query with its "?", or b""."""
        at = self.target.find(b"?")
        return b"" if at < 0 else self.target[at:]


class ResponseHead:
    """A response's status, reason (HTTP/1.1 only; b"" means the standard one) and fields."""

    __slots__ = ("status", "reason", "headers")

    def __init__(self, status: int, headers: Headers | None = None, reason: bytes = b"") -> None:
        self.status = status
        self.reason = reason
        self.headers = Headers() if headers is None else headers
