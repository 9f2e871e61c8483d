"""Sizes and durations as written in porch.toml (1024-based sizes, like nginx)."""

import pytest

from porch.config.units import format_duration, format_size, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "size"),
    [
        (0, 0),
        (1048576, 1048576),
        ("512", 512),
        ("512b", 512),
        ("64k", 64 * 1024),
        ("64K", 64 * 1024),
        ("20M", 20 * 1024**2),
        ("20m", 20 * 1024**2),
        ("20MB", 20 * 1024**2),
        ("20MiB", 20 * 1024**2),
        ("1G", 1024**3),
        (" 16 k ", 16 * 1024),
    ],
)
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "k", "1.5G", "20X", "-1", "20 MBs", "1T", "0x10"])
def test_parse_size_rejects_with_a_hint(text):
    with pytest.raises(ValueError, match=r"is not a size \(write bytes as 1048576 or with a unit: 64k"):
        parse_size(text)


def test_parse_size_rejects_negative_int():
    with pytest.raises(ValueError, match="-5 is negative"):
        parse_size(-5)


@pytest.mark.parametrize("value", [True, 1.5, None, [1]])
def test_parse_size_wrong_type(value):
    with pytest.raises(TypeError, match="is not a size"):
        parse_size(value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (30, 30.0),
        (1.5, 1.5),
        ("30", 30.0),
        ("1.5", 1.5),
        ("300s", 300.0),
        ("1.5s", 1.5),
        ("250ms", 0.25),
        ("250MS", 0.25),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("2d", 172800.0),
        (".5s", 0.5),
        (" 10 s ", 10.0),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "5x", "1m30s", "-1s", "1e3", "5 minutes"])
def test_parse_duration_rejects_with_a_hint(text):
    with pytest.raises(ValueError, match=r'is not a duration \(write seconds as 30 or with a unit: 250ms'):
        parse_duration(text)


@pytest.mark.parametrize("value", [-1, -0.5, float("inf"), float("nan")])
def test_parse_duration_rejects_negative_and_non_finite(value):
    with pytest.raises(ValueError, match="is not a duration of 0 or more seconds"):
        parse_duration(value)


def test_parse_duration_wrong_type():
    with pytest.raises(TypeError, match="is not a duration"):
        parse_duration(True)


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0"), (1000, "1000"), (16384, "16k"), (1536 * 1024**2, "1536M"), (20 * 1024**2, "20M"), (1024**3, "1G")],
)
def test_format_size(size, text):
    assert format_size(size) == text
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0s"),
        (0.25, "250ms"),
        (1.5, "1.5s"),
        (30.0, "30s"),
        (90.0, "90s"),
        (300.0, "5m"),
        (5400.0, "90m"),
        (3600.0, "1h"),
        (86400.0, "24h"),
        (0.0005, "0.0005s"),
    ],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds
