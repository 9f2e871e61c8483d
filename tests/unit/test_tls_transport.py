"""server/tls_transport.pyx: Porch's TLS between a TCP transport and a connection,
on a uvloop server on 127.0.0.1 with Python's ssl as the client (and raw sockets for
what a client should not send)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import threading

import pytest
import uvloop

from porch.server import tls_layer
from porch.tls.contexts import TlsSettings, certificate_context

from test_tls_contexts import cert_files



class App(asyncio.Protocol):
    """What Porch's connections see: every call, in order."""

    def __init__(self, on_data=None) -> None:
        self.events: list[str] = []
        self.data = bytearray()
        self.transport = None
        self.on_data = on_data
        self.lost = asyncio.Event()

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.data += data
        if self.on_data is not None:
            self.on_data(self, data)

    def eof_received(self):
        self.events.append("eof")

    def pause_writing(self) -> None:
        self.events.append("pause_writing")

    def resume_writing(self) -> None:
        self.events.append("resume_writing")

    def connection_lost(self, exc) -> None:
        self.events.append("lost")
        self.lost.set()


class Server:
    def __init__(self, tmp_path, handshake_timeout: float = 5.0, sni_refuses: bool = False) -> None:
        # scripts/test.sh installs libssl-dev: the transport is built wherever the suite runs
        assert tls_layer.NOT_NATIVE is None, tls_layer.NOT_NATIVE
        self.ctx = certificate_context(TlsSettings(), *cert_files(tmp_path))
        if sni_refuses:
            self.ctx.sni_callback = lambda obj, name, ctx: ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        self.handshake_timeout = handshake_timeout
        self.apps: list[App] = []
        self.on_data = None

    async def start(self) -> int:
        loop = asyncio.get_running_loop()

        def app() -> App:
            a = App(self.on_data)
            self.apps.append(a)
            return a
        factory = tls_layer.factory(loop, app, self.ctx, lambda: self.handshake_timeout, 1.0)
        self.server = await loop.create_server(factory, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]


def client_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def run(coro):
    loop = uvloop.new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, 20))
    finally:
        loop.close()


async def until(check, timeout: float = 5.0) -> None:
    end = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < end, "timed out"
        await asyncio.sleep(0.01)


def in_thread(fn):
    """Run a blocking client in a thread; the future is awaited on the loop."""
    return asyncio.get_running_loop().run_in_executor(None, fn)


def test_records_both_ways_alpn_and_the_tcp_transports_details(tmp_path):
    async def main():
        srv = Server(tmp_path)
        srv.on_data = lambda app, data: app.transport.write(data)
        port = await srv.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context())
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        app = srv.apps[0]
        assert app.events == ["made"]
        assert app.transport.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
        assert app.transport.get_extra_info("peername") == writer.get_extra_info("sockname")
        assert app.transport.get_extra_info("cipher")[1] == "TLSv1.3"
        # a body larger than a record (16 KiB) both ways, in one write
        body = bytes(range(256)) * 400
        writer.write(body)
        assert await reader.readexactly(len(body)) == body
        writer.close()
    run(main())


def test_a_record_that_arrives_a_byte_at_a_time_is_delivered_whole(tmp_path):
    async def main():
        srv = Server(tmp_path)
        port = await srv.start()

        def client():
            raw = socket.create_connection(("127.0.0.1", port))
            inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = client_context().wrap_bio(inc, out)
            while True:  # the handshake over the raw socket
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    raw.sendall(out.read())
                    inc.write(raw.recv(65536))
            raw.sendall(out.read())
            tls.write(b"GET / HTTP/1.1\r\n\r\n")
            record = out.read()
            for i in range(len(record)):
                raw.sendall(record[i:i + 1])
            return raw
        raw = await in_thread(client)
        await until(lambda: srv.apps and bytes(srv.apps[0].data) == b"GET / HTTP/1.1\r\n\r\n")
        raw.close()
        await until(lambda: srv.apps[0].lost.is_set())
    run(main())


def test_paused_reading_holds_requests_back_until_resumed(tmp_path):
    async def main():
        srv = Server(tmp_path)

        def pause_after_first(app, data):
            app.transport.pause_reading()
        srv.on_data = pause_after_first
        port = await srv.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context())
        writer.write(b"one")
        await until(lambda: srv.apps and bytes(srv.apps[0].data) == b"one")
        app = srv.apps[0]
        assert not app.transport.is_reading()
        srv.on_data = None
        app.on_data = None
        writer.write(b"two")
        await writer.drain()
        await asyncio.sleep(0.2)
        assert bytes(app.data) == b"one"  # held while paused
        app.transport.resume_reading()
        await until(lambda: bytes(app.data) == b"onetwo")
        writer.close()
    run(main())


def test_close_sends_close_notify_after_the_last_response(tmp_path):
    async def main():
        srv = Server(tmp_path)

        def answer_and_close(app, data):
            app.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
            app.transport.close()
            assert app.transport.is_closing()
        srv.on_data = answer_and_close
        port = await srv.start()

        def client():
            with socket.create_connection(("127.0.0.1", port)) as raw:
                with client_context().wrap_socket(raw) as s:
                    s.sendall(b"GET / HTTP/1.1\r\n\r\n")
                    got = b""
                    while chunk := s.recv(65536):  # b"": close_notify, a clean end
                        got += chunk
                    s.unwrap()  # ours back: the server reads it, then closes
                    return got
        assert (await in_thread(client)).endswith(b"\r\n\r\nhello")
        await until(lambda: srv.apps[0].lost.is_set())
        assert srv.apps[0].events == ["made", "lost"]
    run(main())


def test_close_notify_from_the_client_is_eof_then_the_end(tmp_path):
    async def main():
        srv = Server(tmp_path)
        port = await srv.start()

        def client():
            with socket.create_connection(("127.0.0.1", port)) as raw:
                s = client_context().wrap_socket(raw)
                s.sendall(b"bye")
                s.unwrap()  # close_notify, and the server's in answer
        await in_thread(client)
        await until(lambda: srv.apps and srv.apps[0].lost.is_set())
        assert srv.apps[0].events == ["made", "eof", "lost"]
        assert bytes(srv.apps[0].data) == b"bye"
    run(main())


def test_a_forged_record_ends_that_connection_and_no_other(tmp_path):
    async def main():
        srv = Server(tmp_path)
        srv.on_data = lambda app, data: app.transport.write(data)
        port = await srv.start()

        def attacker():
            raw = socket.create_connection(("127.0.0.1", port))
            s = client_context().wrap_socket(raw)
            s.sendall(b"ok")
            assert s.recv(10) == b"ok"
            junk = b"\x5a" * 64  # application data that does not authenticate
            raw_fd = socket.socket(fileno=s.detach())
            raw_fd.sendall(b"\x17\x03\x03" + struct.pack(">H", len(junk)) + junk)
            raw_fd.settimeout(5)
            try:
                rest = raw_fd.recv(65536)  # a bad_record_mac alert, or nothing: then closed
                while rest:
                    rest = raw_fd.recv(65536)
            except ConnectionResetError:
                pass
            raw_fd.close()
        await in_thread(attacker)
        await until(lambda: srv.apps[0].lost.is_set())
        assert srv.apps[0].events == ["made", "lost"]
        # the next connection is served (no error left behind in OpenSSL's queue)
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context())
        writer.write(b"next")
        assert await reader.readexactly(4) == b"next"
        writer.close()
    run(main())


def test_a_refused_handshake_sends_its_alert_and_reaches_no_connection(tmp_path):
    async def main():
        srv = Server(tmp_path, sni_refuses=True)
        port = await srv.start()

        def client():
            with socket.create_connection(("127.0.0.1", port)) as raw:
                with pytest.raises(ssl.SSLError) as err:
                    client_context().wrap_socket(raw, server_hostname="other.test")
                return err.value.reason
        assert await in_thread(client) == "TLSV1_UNRECOGNIZED_NAME"
        await asyncio.sleep(0.1)
        assert srv.apps[0].events == []  # never connection_made
    run(main())


def test_a_silent_client_is_dropped_at_the_handshake_timeout(tmp_path):
    async def main():
        srv = Server(tmp_path, handshake_timeout=0.3)
        port = await srv.start()

        def client():
            with socket.create_connection(("127.0.0.1", port)) as raw:
                raw.settimeout(5)
                try:
                    return raw.recv(100)
                except ConnectionResetError:
                    return b""
        t0 = asyncio.get_running_loop().time()
        assert await in_thread(client) == b""
        assert 0.25 < asyncio.get_running_loop().time() - t0 < 3
        assert srv.apps[0].events == []
    run(main())


def test_write_flow_control_is_the_sockets(tmp_path):
    async def main():
        srv = Server(tmp_path)
        port = await srv.start()
        gate = threading.Event()
        got = []

        def client():
            with socket.create_connection(("127.0.0.1", port)) as raw:
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
                with client_context().wrap_socket(raw) as s:
                    s.sendall(b"go")
                    gate.wait(10)  # not reading: the server's writes back up
                    total = 0
                    while total < 8 * 1024 * 1024:
                        total += len(s.recv(1 << 20))
                    got.append(total)

        def send(app, data):
            app.transport.set_write_buffer_limits(high=256 * 1024)
            app.transport.write(b"y" * (8 * 1024 * 1024))
        srv.on_data = send
        done = in_thread(client)
        await until(lambda: srv.apps and "pause_writing" in srv.apps[0].events)
        assert srv.apps[0].transport.get_write_buffer_size() > 256 * 1024
        gate.set()
        await done
        await until(lambda: "resume_writing" in srv.apps[0].events)
        assert got == [8 * 1024 * 1024]
    run(main())


def test_a_key_update_from_the_client_is_answered_and_records_go_on(tmp_path):
    # TLS 1.3 KeyUpdate (RFC 8446 4.6.3) with update_requested: `openssl s_client`'s
    # "K" command.  The server's own KeyUpdate must go out, and the records after it
    # (under the new keys, both ways) must still be read and written.
    async def main():
        srv = Server(tmp_path)
        srv.on_data = lambda app, data: app.transport.write(b"echo:" + data)
        port = await srv.start()
        proc = await asyncio.create_subprocess_exec(
            "openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3", "-msg",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            for line in (b"first\n", b"K\n", b"second\n"):
                await asyncio.sleep(0.5)
                proc.stdin.write(line)
                await proc.stdin.drain()
            await until(lambda: bytes(srv.apps[0].data).endswith(b"second\n"))
            await asyncio.sleep(0.3)
            proc.stdin.close()
            out = (await asyncio.wait_for(proc.stdout.read(), 10)).decode(errors="replace")
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
        assert ">>> TLS 1.3, Handshake [length 0005], KeyUpdate" in out, out  # the client's
        assert "<<< TLS 1.3, Handshake [length 0005], KeyUpdate" in out, out  # ours in answer
        assert out.index("<<< TLS 1.3, Handshake [length 0005], KeyUpdate") < out.index("echo:second"), out
        assert bytes(srv.apps[0].data) == b"first\nsecond\n"
    run(main())
