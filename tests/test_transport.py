"""The transport's own frame reader, against hand-made frames on a real socket."""

from __future__ import annotations

import socket
import threading
import time
from typing import List, Tuple

import pytest

from sixmm.errors import ProtocolError
from sixmm.transport import ConnectionClosed, FrameTimeout, Transport, check_url

from .helpers import refused_port
from .rawws import RawServer, frame, read_client_frame


def drain(t: Transport, n: int) -> List[Tuple[int, bytes]]:
    return [t.recv() for _ in range(n)]


def test_many_frames_of_every_length_class_in_one_write() -> None:
    payloads = [b"x" * 10, b"y" * 300, b"z" * 70000, b'{"a":1}']

    def script(conn: socket.socket) -> None:
        conn.sendall(b"".join(frame(p) for p in payloads) + frame(b"\x01\x02", opcode=2))

    with RawServer(script) as srv:
        t = Transport.connect(srv.url, timeout=5)
        t.settimeout(5)
        got = drain(t, 5)
        t.close()
    assert [p for _, p in got[:4]] == payloads
    assert got[4] == (2, b"\x01\x02")
    assert t.bytes_in >= sum(map(len, payloads))


def test_frames_split_across_writes_and_timeouts_resume() -> None:
    data = frame(b"A" * 1000) + frame(b"B" * 5)
    release = threading.Event()

    def script(conn: socket.socket) -> None:
        conn.sendall(data[:3])  # a partial header
        release.wait(5)
        conn.sendall(data[3:700])
        time.sleep(0.05)
        conn.sendall(data[700:])

    with RawServer(script) as srv:
        t = Transport.connect(srv.url, timeout=5)
        t.settimeout(0.05)
        with pytest.raises(FrameTimeout):
            t.recv()  # mid-header timeout: nothing lost
        release.set()
        t.settimeout(5)
        assert t.recv() == (1, b"A" * 1000)
        assert t.recv() == (1, b"B" * 5)
        t.close()


def test_fragments_are_reassembled_with_control_frames_between() -> None:
    got: List[Tuple[int, bytes]] = []

    def script(conn: socket.socket) -> None:
        conn.sendall(
            frame(b'{"part":', fin=False)
            + frame(b"ping!", opcode=9)
            + frame(b"1", opcode=0, fin=False)
            + frame(b"}", opcode=0)
        )
        got.append(read_client_frame(conn))  # the pong answering our ping

    with RawServer(script) as srv:
        t = Transport.connect(srv.url, timeout=5)
        t.settimeout(5)
        assert t.recv() == (1, b'{"part":1}')
        time.sleep(0.1)
        t.close()
    assert got == [(0xA, b"ping!")]


def test_masked_server_frames_are_unmasked() -> None:
    with RawServer(lambda c: c.sendall(frame(b"hello", mask=b"\x01\x02\x03\x04"))) as srv:
        t = Transport.connect(srv.url, timeout=5)
        t.settimeout(5)
        assert t.recv() == (1, b"hello")
        t.close()


def test_pongs_are_counted_and_close_frame_ends_the_stream() -> None:
    def script(conn: socket.socket) -> None:
        conn.sendall(frame(b"", opcode=0xA) + frame(b"\x03\xe8bye", opcode=8))
        read_client_frame(conn)  # our close reply

    with RawServer(script) as srv:
        t = Transport.connect(srv.url, timeout=5)
        t.settimeout(5)
        with pytest.raises(ConnectionClosed, match="1000 bye"):
            t.recv()
        assert t.pongs == 1
        t.close()
    assert srv.errors == []


def test_eof_is_connection_closed() -> None:
    with RawServer(lambda c: c.sendall(frame(b"xyz")[:3])) as srv:  # cut mid-frame
        t = Transport.connect(srv.url, timeout=5)
        t.settimeout(5)
        with pytest.raises(ConnectionClosed):
            t.recv()
        t.close()


@pytest.mark.parametrize(
    "data, message",
    [
        (frame(b"x" * 2000), "exceeds"),
        (frame(b"a", opcode=3), "unknown websocket opcode"),
        (frame(b"a", opcode=0), "continuation frame without"),
        (frame(b"a" * 600, fin=False) + frame(b"b" * 600, opcode=0), "fragmented message exceeds"),
    ],
)
def test_protocol_violations_raise_protocol_error(data: bytes, message: str) -> None:
    with RawServer(lambda c: (c.sendall(data), time.sleep(0.2))) as srv:
        t = Transport.connect(srv.url, timeout=5, max_frame_bytes=1000)
        t.settimeout(5)
        with pytest.raises(ProtocolError, match=message):
            t.recv()
        t.close()


def test_abort_wakes_a_blocked_reader() -> None:
    hold = threading.Event()
    with RawServer(lambda c: hold.wait(5)) as srv:
        t = Transport.connect(srv.url, timeout=5)
        t.settimeout(5)
        result: List[BaseException] = []

        def reader() -> None:
            try:
                t.recv()
            except BaseException as exc:
                result.append(exc)

        th = threading.Thread(target=reader)
        th.start()
        time.sleep(0.1)
        started = time.monotonic()
        t.abort()
        th.join(5)
        hold.set()
        t.close()
    # woken by abort(), not by the 5 s socket timeout; slack for a loaded machine
    assert time.monotonic() - started < 3.0
    assert isinstance(result[0], ConnectionClosed)


def test_send_text_reaches_the_server() -> None:
    got: List[Tuple[int, bytes]] = []

    def script(conn: socket.socket) -> None:
        got.append(read_client_frame(conn))

    with RawServer(script) as srv:
        t = Transport.connect(srv.url, timeout=5)
        t.send_text('{"op":"ping"}')
        time.sleep(0.1)
        t.close()
    assert got == [(1, b'{"op":"ping"}')]


def test_connect_failure_is_connection_lost() -> None:
    from sixmm.errors import ConnectionLost

    with refused_port() as port, pytest.raises(ConnectionLost):
        Transport.connect(f"ws://127.0.0.1:{port}/ws", timeout=2)


@pytest.mark.parametrize(
    "url, ok",
    [
        ("wss://6mm.com/ws", True),
        ("ws://127.0.0.1:8765/ws", True),
        ("ws://localhost/ws", True),
        ("ws://[::1]:8765/ws", True),
        ("ws://6mm.com/ws", False),
        ("ws://10.0.0.1/ws", False),
        ("https://6mm.com/ws", False),
        ("wss:///ws", False),
    ],
)
def test_check_url(url: str, ok: bool) -> None:
    if ok:
        assert check_url(url) == url
    else:
        with pytest.raises(ValueError):
            check_url(url)


# -- the transport's own handshake and its use of the pure framing layer ----------------------


def test_frames_sent_with_the_101_are_not_lost() -> None:
    import base64
    import hashlib

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            key = request.split(b"Sec-WebSocket-Key: ")[1].split(b"\r\n")[0]
            accept = base64.b64encode(
                hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
            )
            conn.sendall(  # the head and the first frame in one write
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                + accept
                + b"\r\n\r\n"
                + frame(b"first")
            )
            time.sleep(0.2)

    th = threading.Thread(target=serve)
    th.start()
    try:
        t = Transport.connect(f"ws://127.0.0.1:{port}/ws", timeout=5)
        t.settimeout(5)
        assert t.recv() == (1, b"first")
        t.close()
    finally:
        th.join(5)
        listener.close()


@pytest.mark.parametrize(
    "answer, words",
    [
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: d3Jvbmc=\r\n\r\n",
            "Sec-WebSocket-Accept",
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "HTTP 200"),
        (
            b"HTTP/1.1 308 Permanent Redirect\r\nLocation: ws://127.0.0.1:9/ws\r\n\r\n",
            "redirects are refused",
        ),
    ],
)
def test_bad_upgrade_answers_are_refused(answer: bytes, words: str) -> None:
    from sixmm.errors import ConnectionLost

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(answer)
            time.sleep(0.2)

    th = threading.Thread(target=serve)
    th.start()
    try:
        with pytest.raises(ConnectionLost, match=words):
            Transport.connect(f"ws://127.0.0.1:{port}/ws", timeout=5)
    finally:
        th.join(5)
        listener.close()


def test_a_protocol_error_is_answered_with_its_close_code() -> None:
    got: List[Tuple[int, bytes]] = []

    def script(conn: socket.socket) -> None:
        conn.sendall(frame(b"x" * 200, opcode=9))  # a control frame over 125 bytes
        got.append(read_client_frame(conn))

    with RawServer(script) as srv:
        t = Transport.connect(srv.url, timeout=5)
        t.settimeout(5)
        with pytest.raises(ProtocolError, match="over 125"):
            t.recv()
        t.close()
    assert got and got[0][0] == 8 and got[0][1][:2] == b"\x03\xea"  # 1002


def test_client_frames_are_masked_on_the_wire() -> None:
    raw: List[bytes] = []

    def script(conn: socket.socket) -> None:
        data = b""
        while len(data) < 2 + 4 + 5:
            data += conn.recv(100)
        raw.append(data)

    with RawServer(script) as srv:
        t = Transport.connect(srv.url, timeout=5)
        t.send_text("hello")
        time.sleep(0.1)
        t.close()
    assert raw[0][0] == 0x81 and raw[0][1] == 0x80 | 5
    key = raw[0][2:6]
    assert bytes(b ^ key[i % 4] for i, b in enumerate(raw[0][6:11])) == b"hello"


def test_an_http_proxy_from_the_environment_is_used_through_connect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``http_proxy`` (``https_proxy`` for wss) is honoured with a CONNECT tunnel, as
    websocket-client did; the target host is resolved by the proxy, not by us."""
    import socketserver

    requests: List[bytes] = []

    def script(conn: socket.socket) -> None:
        conn.sendall(frame(b"through the tunnel"))
        time.sleep(0.2)

    with RawServer(script) as srv:

        class Tunnel(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                client = self.request
                head = b""
                while b"\r\n\r\n" not in head:
                    head += client.recv(4096)
                requests.append(head)
                upstream = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")

                def pump(a: socket.socket, b: socket.socket) -> None:
                    try:
                        while True:
                            data = a.recv(65536)
                            if not data:
                                break
                            b.sendall(data)
                    except OSError:
                        pass
                    finally:
                        try:
                            b.shutdown(socket.SHUT_WR)
                        except OSError:
                            pass

                back = threading.Thread(target=pump, args=(upstream, client))
                back.start()
                pump(client, upstream)
                back.join(5)
                upstream.close()

        with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Tunnel) as proxy:
            proxy.daemon_threads = True
            th = threading.Thread(target=proxy.serve_forever, kwargs={"poll_interval": 0.05})
            th.start()
            try:
                monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.server_address[1]}")
                monkeypatch.delenv("no_proxy", raising=False)
                monkeypatch.delenv("NO_PROXY", raising=False)
                t = Transport.connect("ws://exchange.invalid:8765/ws", timeout=5)
                t.settimeout(5)
                assert t.recv() == (1, b"through the tunnel")
                t.close()
            finally:
                proxy.shutdown()
                th.join(5)
    assert requests and requests[0].startswith(b"CONNECT exchange.invalid:8765 HTTP/1.1\r\n")
