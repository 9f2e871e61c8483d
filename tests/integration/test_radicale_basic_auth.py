"""Radicale's guide behind Porch: basic_auth with user_header = "X-Remote-User" and
strip_prefix on /radicale/, a real Radicale (PyPI) with `[auth] type =
http_x_remote_user`, and a real CalDAV client (caldav, PyPI).  alice logs in, makes a
calendar and an event; then, logged in as alice, forged identity fields in every
spelling do not make her bob."""

from __future__ import annotations

import base64

import bcrypt
import caldav
import pytest

from .helpers import PYTHON, Porch, RawConn, free_port, wait_for_port

PASSWORDS = {"alice": "alice in dav", "bob": "bob's secret"}
EVENT = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//porch tests//EN
BEGIN:VEVENT
UID:{uid}
DTSTAMP:20261202T120000Z
DTSTART:20261224T180000Z
DTEND:20261224T200000Z
SUMMARY:{summary}
END:VEVENT
END:VCALENDAR
"""
# Every way a client could spell "I am bob" to an app that reads HTTP_X_REMOTE_USER
# (Radicale's wsgiref server makes the same environ key of "-" and "_").
FORGED = ("X-Remote-User", "X_Remote_User", "x-remote-user", "REMOTE-USER", "remote-user", "Remote_User",
          "X-Forwarded-User", "x_forwarded_user", "X-Auth-Request-User")


@pytest.fixture
def dav(procs, tmp_path):
    """Radicale on a free port (it trusts X-Remote-User), Porch in front with basic_auth:
    the URL of /radicale/ through Porch and Radicale's own port."""
    port = free_port()
    conf = tmp_path / "radicale.conf"
    conf.write_text(f"[server]\nhosts = 127.0.0.1:{port}\n[auth]\ntype = http_x_remote_user\n"
                    f"[rights]\ntype = owner_only\n[storage]\nfilesystem_folder = {tmp_path / 'collections'}\n")
    radicale = procs.start([PYTHON, "-m", "radicale", "--config", str(conf)], cwd=tmp_path, name="radicale")
    wait_for_port(port, radicale, what="radicale")
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("".join(f"{user}:$2y${bcrypt.hashpw(pw.encode(), bcrypt.gensalt(10)).decode()[4:]}\n"
                                for user, pw in PASSWORDS.items()))
    (tmp_path / "porch").mkdir()
    porch = Porch(procs, tmp_path / "porch", f"""
[[site]]
  [[site.route]]
  path = "/radicale/"
  proxy = "http://127.0.0.1:{port}"
  strip_prefix = true
  basic_auth = {{ htpasswd = "{htpasswd}", realm = "Radicale", user_header = "X-Remote-User" }}
""")
    return f"http://127.0.0.1:{porch.port}/radicale/", port, porch, radicale


def client(url: str, user: str) -> caldav.DAVClient:
    return caldav.DAVClient(url=url, username=user, password=PASSWORDS[user], require_tls=False,
                            enable_rfc6764=False)


def make_calendar(url: str, user: str, name: str, summary: str) -> None:
    with client(url, user) as c:
        principal = c.principal()
        assert str(principal.url).endswith(f"/radicale/{user}/")  # X-Script-Name and the user reached it
        calendar = principal.make_calendar(name=name, cal_id=name)
        calendar.save_event(EVENT.format(uid=f"{name}-1", summary=summary))
        assert [e.vobject_instance.vevent.summary.value for e in calendar.events()] == [summary]


def raw(port: int, method: str, path: str, user: str, *fields: str, body: bytes = b""):
    auth = base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()
    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Basic {auth}\r\n"
            + "".join(f"{f}\r\n" for f in fields) + f"Depth: 1\r\nContent-Length: {len(body)}\r\n\r\n")
    with RawConn(port) as c:
        c.send(head.encode() + body)
        return c.read_response()


def test_alice_uses_her_calendar_and_cannot_become_bob(dav):
    url, radicale_port, porch, radicale = dav
    port = porch.port
    make_calendar(url, "bob", "bobcal", "Bob's party")
    make_calendar(url, "alice", "work", "Alice's meeting")
    with pytest.raises(caldav.lib.error.AuthorizationError):  # a wrong password: Porch's 401
        caldav.DAVClient(url=url, username="alice", password="guess", require_tls=False,
                         enable_rfc6764=False).principal()

    forged = [f"{name}: bob" for name in FORGED]
    log_before = radicale.stderr_path.read_text()  # Radicale logs to stderr
    # Radicale answers as alice: her principal, never bob's
    r = raw(port, "PROPFIND", "/radicale/", "alice", *forged,
            body=b'<propfind xmlns="DAV:"><prop><current-user-principal/></prop></propfind>')
    assert r.status == 207 and b"/radicale/alice/" in r.body and b"/radicale/bob/" not in r.body, r.body
    # bob's collection: not listed, not read, not written
    for method, path, body in (("PROPFIND", "/radicale/bob/", b""), ("PROPFIND", "/radicale/bob/bobcal/", b""),
                               ("GET", "/radicale/bob/bobcal/", b""),
                               ("GET", "/radicale/bob/bobcal/bobcal-1.ics", b""),
                               ("PUT", "/radicale/bob/bobcal/evil.ics",
                                EVENT.format(uid="evil", summary="Alice was here").encode()),
                               ("DELETE", "/radicale/bob/bobcal/bobcal-1.ics", b"")):
        r = raw(port, method, path, "alice", *forged, body=body)
        assert r.status in (403, 404), (method, path, r.status, r.body[:300])
        assert b"Bob's party" not in r.body
    # Radicale took every one of those requests as alice's (Porch's X-Remote-User)
    log = radicale.stderr_path.read_text()
    new = log[len(log_before):]
    assert "Successful login: 'alice'" in new and "Successful login: 'bob'" not in new, new[-2000:]
    # bob's calendar is as he left it
    with client(url, "bob") as c:
        events = c.principal().calendar(cal_id="bobcal").events()
        assert [e.vobject_instance.vevent.summary.value for e in events] == ["Bob's party"]


def test_the_forgery_would_work_without_porch(dav):
    """The control: straight to Radicale, each of these spellings makes a client bob."""
    url, radicale_port, porch, radicale = dav
    make_calendar(url, "bob", "bobcal", "Bob's party")
    for name in ("X-Remote-User", "X_Remote_User", "x-remote-user"):
        with RawConn(radicale_port) as c:
            c.send(f"GET /bob/bobcal/ HTTP/1.1\r\nHost: 127.0.0.1\r\n{name}: bob\r\n\r\n".encode())
            r = c.read_response()
        assert r.status == 200 and b"Bob's party" in r.body, (name, r.status)

