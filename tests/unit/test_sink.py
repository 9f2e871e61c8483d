"""observability/sink.py: batches of lines cut for atomic pipe writes, whole on files."""

from __future__ import annotations

import os

from porch.observability.sink import LineSink, _pieces


def test_pieces_are_whole_lines_within_the_limit():
    data = b"".join(b"%d-%s\n" % (i, b"x" * (i % 50)) for i in range(500))
    pieces = list(_pieces(data, 256))
    assert b"".join(pieces) == data
    assert all(len(p) <= 256 and p.endswith(b"\n") for p in pieces)


def test_a_line_longer_than_the_limit_is_a_piece_of_its_own():
    data = b"short\n" + b"y" * 1000 + b"\nafter\n"
    assert list(_pieces(data, 100)) == [b"short\n", b"y" * 1000 + b"\n", b"after\n"]


def test_small_batch_is_one_piece():
    assert list(_pieces(b"a\nb\n", 4096)) == [b"a\nb\n"]


def test_file_sink_appends_and_pipe_sink_writes_in_atomic_pieces(tmp_path):
    path = tmp_path / "log"
    path.write_bytes(b"before\n")
    sink = LineSink(str(path))
    sink.write(b"one\ntwo\n")
    sink.close()
    assert path.read_bytes() == b"before\none\ntwo\n"

    r, w = os.pipe()
    data = b"".join(b"line %05d %s\n" % (i, b"z" * 90) for i in range(200))  # ~20 KiB
    saved = os.dup(1)
    os.dup2(w, 1)
    try:
        LineSink("-", 1).write(data)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(w)
    with os.fdopen(r, "rb") as f:
        assert f.read() == data
