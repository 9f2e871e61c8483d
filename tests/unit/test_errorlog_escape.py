"""Error-log escaping: whatever a caller passes, one event is one line (issue 11, item 11)."""

from __future__ import annotations

from porch.observability.errorlog import ErrorLog, escape


def test_message_and_fields_with_cr_lf_nul_stay_on_one_line(tmp_path):
    path = tmp_path / "error.log"
    log = ErrorLog(str(path))
    log.error("Illegal character '\r' in header value: a\r\nX-Evil: 1\x00", client="1.2.3.4",
              request="GET /a\r\n\x00 HTTP/2.0")
    log.close()
    raw = path.read_bytes()
    assert raw.count(b"\n") == 1 and b"\r" not in raw and b"\x00" not in raw
    line = raw.decode()
    assert line.endswith(
        "Illegal character '\\x0D' in header value: a\\x0D\\x0AX-Evil: 1\\x00 client=1.2.3.4 "
        'request="GET /a\\x0D\\x0A\\x00 HTTP/2.0"\n'), line


def test_escape_spells_what_is_not_printable_as_the_access_log_does():
    assert escape("plain text, café") == "plain text, café"
    assert escape("a\tb\x1b[31m\x7f\u2028") == "a\\x09b\\x1B[31m\\x7F\\u2028"
    # between quotes, " and \ too (the access log's \x22 and \x5C)
    assert escape('say "hi" \\', quoted=True) == "say \\x22hi\\x22 \\x5C"


def test_python_logging_lands_in_the_error_log_one_line_with_its_traceback(tmp_path):
    import logging

    from porch.observability.errorlog import capture_logging

    path = tmp_path / "error.log"
    log = ErrorLog(str(path))
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        capture_logging(log)
        try:
            raise RuntimeError("Cannot call write_eof()")
        except RuntimeError:
            logging.getLogger("asyncio").error("Error calling eof_received()", exc_info=True)
        logging.getLogger("asyncio").warning("returning true from eof_received() has no effect")
        logging.getLogger("asyncio").info("not worth a line")
    finally:
        root.handlers[:], root.level = saved
        log.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 2, lines
    assert "[error]" in lines[0] and "Error calling eof_received()\\x0ATraceback" in lines[0]
    assert lines[0].endswith("RuntimeError: Cannot call write_eof() logger=asyncio")
    assert "[warn]" in lines[1] and "returning true" in lines[1]
