"""basic_auth (policies/basic_auth.py, policies/htpasswd.py): every htpasswd format
checked against hashes made by their own tools (bcrypt, passlib, hashlib, and Apache's
htpasswd itself), the config key's errors, the throttle and cache tables, and
`porch hash-password`."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import warnings

import bcrypt
import pytest

from porch.config.describe import describe
from porch.config.errors import ConfigError
from porch.config.toml import loads
from porch.limits.table import SharedTable, now_ms
from porch.policies import htpasswd
from porch.policies.basic_auth import Malformed, Throttle, VerifiedCache, client_key, credentials

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from passlib import hash as ph

PASSWORD = "sécret pass"
WRONG = "sécret pasS"


def made_by_libraries(password: str) -> dict[str, str]:
    """format -> a hash of `password`, each made by the library that owns the format."""
    pw = password.encode()
    salt = os.urandom(8)
    b = bcrypt.hashpw(pw, bcrypt.gensalt(4)).decode()
    return {
        "bcrypt $2b$": b,
        "bcrypt $2y$": "$2y$" + b[4:],
        "bcrypt $2a$": "$2a$" + b[4:],
        "apr1": ph.apr_md5_crypt.hash(pw),
        "sha": "{SHA}" + base64.b64encode(hashlib.sha1(pw).digest()).decode(),
        "ssha": "{SSHA}" + base64.b64encode(hashlib.sha1(pw + salt).digest() + salt).decode(),
        "md5_crypt": ph.md5_crypt.hash(pw),
        "sha256_crypt": ph.sha256_crypt.using(rounds=5000).hash(pw),
        "sha512_crypt": ph.sha512_crypt.using(rounds=5000).hash(pw),
        "plain": password,
        "{PLAIN}": "{PLAIN}" + password,
    }


def entries_of(tmp_path, lines: list[str]) -> dict[str, htpasswd.Entry]:
    path = tmp_path / "htpasswd"
    path.write_text("# users\n\n" + "\n".join(lines) + "\n")
    entries, _, _ = htpasswd.read(str(path))
    return entries


@pytest.mark.parametrize("kind", list(made_by_libraries("x")))
def test_each_format_from_its_library_verifies_the_password_and_only_it(kind, tmp_path):
    hash_ = made_by_libraries(PASSWORD)[kind]
    entry = entries_of(tmp_path, [f"alice:{hash_}"])["alice"]
    assert htpasswd.verify(entry, PASSWORD.encode())
    assert not htpasswd.verify(entry, WRONG.encode())
    assert not htpasswd.verify(entry, b"")
    assert (entry.scheme in htpasswd.SLOW) == (kind not in ("sha", "ssha", "plain", "{PLAIN}"))


@pytest.mark.parametrize("flag, scheme", [("-B", "bcrypt"), ("-m", "apr1"), ("-s", "sha"),
                                          ("-d", "des_crypt"), ("-p", "plain")])
def test_apache_htpasswd_files_verify(flag, scheme, tmp_path):
    """The real htpasswd (Debian's apache2-utils, installed by scripts/test.sh)."""
    path = tmp_path / "htpasswd"
    subprocess.run(["htpasswd", "-c", "-b", flag, str(path), "alice", "pass word"], check=True,
                   capture_output=True)
    subprocess.run(["htpasswd", "-b", flag, str(path), "bob", "other"], check=True, capture_output=True)
    entries, warned, _ = htpasswd.read(str(path))
    assert entries["alice"].scheme == scheme
    assert htpasswd.verify(entries["alice"], b"pass word")
    assert htpasswd.verify(entries["bob"], b"other")
    assert not htpasswd.verify(entries["alice"], b"other")
    if scheme == "plain":
        assert any("alice has a plaintext password" in w for w in warned)
    if scheme == "des_crypt":
        assert any("only the first 8" in w for w in warned)


def test_htpasswd_tool_is_there():
    assert shutil.which("htpasswd"), "scripts/test.sh installs apache2-utils"


def test_bcrypt_reads_72_bytes_as_apache_does(tmp_path):
    long = b"p" * 72
    entry = entries_of(tmp_path, [f"u:{bcrypt.hashpw(long, bcrypt.gensalt(4)).decode()}"])["u"]
    assert htpasswd.verify(entry, long + b"ignored")  # bcrypt 5 alone would raise


def test_first_line_of_a_user_wins_and_comments_are_skipped(tmp_path):
    entries = entries_of(tmp_path, ["alice:first", "  # comment", "alice:second", "bob:pw:a comment"])
    assert entries["alice"].hash == "first"
    assert entries["bob"].hash == "pw"


@pytest.mark.parametrize("line, message", [
    ("alice", ":3: 'alice' is not user:hash"),
    (":hash", ":3: ':hash' is not user:hash"),
    ("alice:", ":3: 'alice:' is not user:hash"),
    ("alice:$argon2id$v=19$m=65536", ":3: user alice: '$argon2id$v='... is not a hash format Porch reads"),
    ("alice:$y$j9T$abc", ":3: user alice: '$y$j9T$abc'... is not a hash format"),
    ("alice:{MD5}abc", ":3: user alice: '{MD5}abc'... is not a hash format"),
])
def test_bad_lines_name_the_file_the_line_and_the_fix(line, message, tmp_path):
    path = tmp_path / "htpasswd"
    path.write_text(f"# users\n\n{line}\n")
    with pytest.raises(htpasswd.HtpasswdError) as e:
        htpasswd.read(str(path))
    assert f"{path}{message}" in str(e.value), str(e.value)
    assert "htpasswd -B" in str(e.value) or "hash-password" in str(e.value)  # the fix


def site(value: str) -> str:
    return f'[[site]]\nhosts = ["a.test"]\nproxy = "http://127.0.0.1:9"\nbasic_auth = {value}\n'


@pytest.mark.parametrize("value, message", [
    ('{ htpasswd = "MISSING" }', "does not exist; create it with `htpasswd -c -B"),
    ('{ htpasswd = "DIR" }', "is a directory"),
    ('{ htpasswd = "NOTDIR/x" }', "cannot be read (Not a directory)"),
    ('{ htpasswd = "relative/file" }', '"relative/file" is relative; write an absolute path'),
    ("{ realm = \"x\" }", "htpasswd is missing"),
    ("true", "is not a table; write basic_auth = {"),
    ('{ htpasswd = "FILE", realm = "a\\"b" }', "realm: 'a\"b' is not a string without quotes"),
    ('{ htpasswd = "FILE", user_header = "X Remote" }', "user_header: 'X Remote' is not a header name"),
    ('{ htpasswd = "FILE", user_header = "Authorization" }', "Authorization carries something else"),
    ('{ htpasswd = "FILE", pass_authorization = "no" }', "pass_authorization: 'no' is not true or false"),
    ('{ htpasswd = "FILE", users = "x" }', "'users' is not one of htpasswd, realm"),
    ('{ htpasswd = "BAD" }', ":1: 'nocolon' is not user:hash"),
])
def test_config_errors_name_the_key_the_value_and_the_fix(value, message, tmp_path):
    good = tmp_path / "good"
    good.write_text("alice:" + made_by_libraries("pw")["bcrypt $2y$"] + "\n")
    bad = tmp_path / "bad"
    bad.write_text("nocolon\n")
    value = (value.replace("NOTDIR", str(good)).replace("MISSING", str(tmp_path / "missing"))
             .replace("DIR", str(tmp_path)).replace("FILE", str(good)).replace("BAD", str(bad)))
    with pytest.raises(ConfigError) as e:
        loads(site(value))
    assert "site[0].basic_auth" in str(e.value) and message in str(e.value), str(e.value)


def test_merged_from_porch_to_site_to_route_and_switched_off(tmp_path):
    path = tmp_path / "htpasswd"
    path.write_text("alice:{SHA}x\ncarol:plaintext\n")
    config = loads(f'[porch]\nbasic_auth = {{ htpasswd = "{path}", realm = "Radicale" }}\n'
                   '[[site]]\nhosts = ["a.test"]\nproxy = "http://127.0.0.1:9"\n'
                   '  [[site.route]]\n  path = "/public/"\n  basic_auth = false\n'
                   '  [[site.route]]\n  path = "/dav/"\n'
                   f'  basic_auth = {{ htpasswd = "{path}", user_header = "X-Remote-User",'
                   ' pass_authorization = false }\n')
    routes = {r.path: dict(r.policies).get("basic_auth") for r in config.sites[0].routes}
    assert routes["/public/"] is None
    assert routes["/"].realm == "Radicale" and routes["/"].user_header is None
    assert routes["/dav/"].user_header == "X-Remote-User" and not routes["/dav/"].pass_authorization
    text = describe(config)
    assert "/public/ -> http://127.0.0.1:9  (basic_auth off)" in text
    assert f'(basic_auth {path} (2 users), realm "Restricted", user in X-Remote-User,' \
           " Authorization not passed)" in text
    # the plaintext warning, once although three places use the file
    assert config.warnings == (f"site[0].basic_auth: {path}:2: user carol has a plaintext password"
                               f" (anyone who reads the file can log in); hash it: htpasswd -B {path} carol",)


def test_porch_check_prints_the_plaintext_warning(tmp_path):
    path = tmp_path / "htpasswd"
    path.write_text("carol:plaintext\n")
    conf = tmp_path / "porch.toml"
    conf.write_text(f'[porch]\nstate_dir = "{tmp_path}"\n' + site(f'{{ htpasswd = "{path}" }}'))
    r = subprocess.run([sys.executable, "-m", "porch", "check", "-c", str(conf)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert f"warning: site[0].basic_auth: {path}:1: user carol has a plaintext password" in r.stdout


# -- the runtime parts ---------------------------------------------------------------


def test_credentials_read_basic_in_any_case_and_refuse_malformed_ones():
    token = base64.b64encode("alice:pa:ss é".encode())
    for scheme in (b"Basic", b"basic", b"BASIC", b"bAsIc"):
        assert credentials(scheme + b" " + token) == ("alice", "pa:ss é".encode())
    assert credentials(b"Bearer abc") is None
    for bad in (b"Basic !!!", b"Basic " + base64.b64encode(b"nocolon"), b"Basic " + base64.b64encode(b"\xff:x")):
        with pytest.raises(Malformed):
            credentials(bad)


def test_throttle_blocks_after_ten_failures_within_the_window_for_the_block_time():
    t = Throttle(SharedTable.create(1024), limit=10, window=60.0, block=60.0)
    starts = [t.failed("1.2.3.4", 100_000 + i * 1000) for i in range(10)]
    assert starts == [False] * 9 + [True]
    assert t.blocked("1.2.3.4", 110_000) == pytest.approx(59.0)
    assert t.blocked("5.6.7.8", 110_000) == 0.0
    assert t.blocked("1.2.3.4", 168_500) > 0 and t.blocked("1.2.3.4", 169_000) == 0.0  # from the 10th, at 109
    # after the block, counting starts again
    assert not t.failed("1.2.3.4", 171_000)


def test_throttle_forgets_failures_older_than_the_window_and_stays_in_the_fixed_table():
    table = SharedTable.create(1024)
    t = Throttle(table, limit=10, window=60.0, block=60.0)
    for i in range(9):
        t.failed("a", i * 1000)
    assert not t.failed("a", 100_000)  # the first nine are over a minute old
    for i in range(5000):
        t.failed(f"10.0.{i // 256}.{i % 256}", 200_000)
    assert table.used() <= 1024  # a flood of addresses recycles slots


def test_throttle_counts_across_processes_sharing_the_table():
    """Two workers: five failures in each process make ten, and both see the block."""
    table = SharedTable.create(1024)
    now = now_ms()
    pid = os.fork()
    if pid == 0:  # the other worker, on the inherited mapping
        child = Throttle(SharedTable.attach(table.fd))
        os._exit(0 if [child.failed("9.9.9.9", now) for _ in range(5)] == [False] * 5 else 1)
    assert os.waitpid(pid, 0)[1] == 0
    t = Throttle(table)
    assert [t.failed("9.9.9.9", now) for _ in range(5)] == [False] * 4 + [True]
    assert t.blocked("9.9.9.9", now) == pytest.approx(60.0)


def test_ipv6_clients_are_counted_by_their_64():
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert client_key("192.0.2.1") == "192.0.2.1"


def test_verified_cache_expires_and_stays_bounded():
    cache = VerifiedCache(size=3, ttl=60.0)
    entry = htpasswd.Entry("alice", "$2y$04$x", "bcrypt")
    token = cache.token(b"Basic YWxpY2U6cHc=")
    assert token != cache.token(b"Basic YWxpY2U6cHcy")
    assert b"YWxpY2U6cHc" not in token and len(token) == 32
    assert token != VerifiedCache().token(b"Basic YWxpY2U6cHc=")  # keyed per process
    cache.add(token, entry, 0.0)
    assert cache.fresh(token, 59.0) is entry and cache.fresh(token, 61.0) is None
    for i in range(10):
        cache.add(bytes([i]), entry, 0.0)
    assert len(cache._until) == 3


def test_watched_file_is_re_read_when_it_changes_and_fails_closed(tmp_path):
    path = tmp_path / "htpasswd"
    path.write_text("alice:{PLAIN}one\n")
    logged: list[str] = []
    watched = htpasswd.Watched(str(path), logged.append, 0.0)
    assert watched.get("alice", 0.0).hash == "{PLAIN}one"
    path.write_text("alice:{PLAIN}two\nbob:{PLAIN}x\n")
    assert watched.get("bob", 0.5) is None  # looked at once a second at most
    assert watched.get("bob", 1.0) is not None and watched.get("alice", 1.0).hash == "{PLAIN}two"
    replacement = tmp_path / "new"
    replacement.write_text("carol:{PLAIN}y\n")
    os.replace(replacement, path)  # a new inode, as editors and htpasswd leave it
    assert watched.get("carol", 2.0) is not None and watched.get("alice", 2.0) is None
    path.write_text("broken line\n")
    assert watched.get("carol", 3.0) is None  # nobody in until it is fixed
    assert watched.get("carol", 4.0) is None
    assert len(logged) == 1 and "every login refused" in logged[0] and ":1:" in logged[0]
    path.unlink()
    assert watched.get("carol", 5.0) is None and "does not exist" in logged[-1]


# -- porch hash-password -------------------------------------------------------------


def hash_password(stdin: bytes, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "porch", "hash-password", *args], input=stdin,
                          capture_output=True, timeout=30)


def test_hash_password_prints_a_bcrypt_line_that_verifies(tmp_path):
    r = hash_password("sécret\n".encode(), "--user", "alice")
    assert r.returncode == 0, r.stderr
    line = r.stdout.decode().strip()
    user, _, hash_ = line.partition(":")
    assert user == "alice" and hash_.startswith("$2y$10$")
    assert bcrypt.checkpw("sécret".encode(), hash_.encode())
    path = tmp_path / "htpasswd"
    path.write_text(line + "\n")
    entry = htpasswd.read(str(path))[0]["alice"]
    assert htpasswd.verify(entry, "sécret".encode()) and not htpasswd.verify(entry, b"secret")
    r = hash_password(b"pw\n", "--cost", "11")
    assert r.returncode == 0 and r.stdout.decode().startswith("$2y$11$")


@pytest.mark.parametrize("stdin, args, message", [
    (b"\n", (), "the password is empty"),
    (b"x" * 73 + b"\n", (), "longer than 72 bytes"),
    (b"pw\n", ("--user", "a:b"), "holds no ':'"),
])
def test_hash_password_refuses(stdin, args, message):
    r = hash_password(stdin, *args)
    assert r.returncode != 0 and message in r.stderr.decode() and not r.stdout


def test_each_load_drops_the_user_headers_its_config_names(tmp_path):
    """The names go into the load's Runtime, and its table of request header names
    (server/client.py) drops them, "_" spellings too; another load keeps its own."""
    from porch.config.compile import compile_config
    from porch.server import client

    path = tmp_path / "htpasswd"
    path.write_text("alice:{SHA}x\n")
    text = (f'[porch]\nstate_dir = "{tmp_path}"\n[[site]]\nhosts = ["a.test"]\ntls = "off"\n'
            f'proxy = "http://127.0.0.1:9"\n  [[site.route]]\n  path = "/dav/"\n'
            f'  basic_auth = {{ htpasswd = "{path}", user_header = "X-Auth-User" }}\n')
    configured = compile_config(loads(text))
    plain = compile_config(loads(text.replace(', user_header = "X-Auth-User"', "")))
    assert configured.identity_headers == frozenset({b"x-auth-user"})
    assert plain.identity_headers == frozenset()
    drop = client._kinds(plain).kind(b"X-Forwarded-User")  # a built-in identity field's kind
    for name in (b"X-Auth-User", b"x-auth-user", b"X_AUTH_USER", b"x_Auth-user"):
        assert client._kinds(configured).kind(name) == drop, name
        assert client._kinds(plain).kind(name) != drop, name
    for name in (b"X-Remote-User", b"REMOTE-USER", b"X_Remote_User"):  # built in: every load
        assert client._kinds(plain).kind(name) == drop, name
