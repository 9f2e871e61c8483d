"""The log record (observability/record.py, issue 12 item 6): an Exchange fills it at its
end and the access log's formats read only it.  Driven through the fake transports of
test_pipeline_exchange.py, compiled as the suite runs."""

from __future__ import annotations

import json

from porch.observability.accesslog import AccessLog, json_line
from porch.observability.record import LogRecord
from test_pipeline_exchange import OK, harness  # noqa: F401 (the fixture)


def logged(h, fmt: str, head: bytes, tmp_path) -> bytes:
    log = h.runtime.hosts.find(b"app.test")[1].root_only.access_log = AccessLog(str(tmp_path / "a.log"), fmt)
    h.request(head)
    h.respond(OK)
    h.run()
    assert log.count == 1
    return b"".join(log.lines)


def test_an_exchange_fills_the_record_the_json_line_is_made_of(harness, tmp_path):
    h = harness()
    line = logged(h, "json", b"POST /x?a=1 HTTP/1.1\r\nHost: app.test\r\nUser-Agent: UA/1\r\n"
                  b"Referer: http://r.example/\r\nContent-Length: 3\r\n\r\nabc", tmp_path)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    record = json.loads(line)
    assert (record["site"], record["host"], record["route"]) == ("app.test", "app.test", "/")
    assert (record["method"], record["target"], record["protocol"]) == ("POST", "/x?a=1", "HTTP/1.1")
    assert (record["client_ip"], record["status"], record["upstream_status"]) == ("127.0.0.1", 200, 200)
    assert (record["bytes_in"], record["bytes_out"]) == (3, 5)
    assert (record["user_agent"], record["referer"], record["user"]) == ("UA/1", "http://r.example/", None)
    assert record["upstream"].startswith("http://127.0.0.1:")
    assert len(record["request_id"]) >= 24 and record["error"] is None


def test_vhost_combined_puts_site_and_port_first(harness, tmp_path):
    h = harness()
    line = logged(h, "vhost_combined", b"GET /v HTTP/1.1\r\nHost: app.test\r\n\r\n", tmp_path)
    assert line.startswith(b"app.test:"), line
    assert b' 127.0.0.1 - - [' in line and b'"GET /v HTTP/1.1" 200 5 "-" "-" ' in line


def test_json_line_keeps_one_object_for_any_bytes():
    """Bytes no HTTP parser lets through (CR, LF, NUL) still cannot break a line."""
    rec = LogRecord()
    rec.target = b'/a\r\n{"forged":1}\x00"\\'
    rec.user_agent = b"\xff\xfe\n\"x\": 1"
    rec.referer = "caf\u00e9".encode()
    rec.user = 'eve\n"admin"'
    line = json_line(rec, 1.0, 1_700_000_000.5)
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and line.isascii()
    record = json.loads(line)
    assert record["target"] == '/a\r\n{"forged":1}\x00"\\'
    assert record["user_agent"] == '\\xff\\xfe\n"x": 1'
    assert record["referer"] == "caf\u00e9" and record["user"] == 'eve\n"admin"'
    assert "forged" not in record
