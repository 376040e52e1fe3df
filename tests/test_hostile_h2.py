"""The HTTP/2 part of the hostile-input suite (the rest is tests/hostile.rs).

Frames are written by hand with hyperframe and hpack, so a test can send
what a well-behaved client library refuses to: a Host that disagrees with
:authority, thousands of streams reset at once, a header block that never
ends, more streams than the server allows. Every loop is bounded in count
and time, traffic goes to loopback only, and each test ends by checking that
the proxy still serves a normal request.
"""

import hashlib
import http.server
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
import pytest
from hyperframe.frame import (
    ContinuationFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    RstStreamFrame,
    SettingsFrame,
)

from flowgate_procs import start
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
REFUSED_STREAM = 0x7


class Backend(http.server.ThreadingHTTPServer):
    """A keep-alive HTTP/1.1 backend that counts its open connections."""

    daemon_threads = True

    def __init__(self):
        self.lock = threading.Lock()
        self.open = 0
        self.peak = 0
        self.requests = 0
        super().__init__(("127.0.0.1", 0), Handler)

    def process_request_thread(self, request, client_address):
        with self.lock:
            self.open += 1
            self.peak = max(self.peak, self.open)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.lock:
                self.open -= 1


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        with self.server.lock:
            self.server.requests += 1
        if self.path.startswith("/slow"):
            time.sleep(0.1)
        body = b"ok"
        if self.path.startswith("/big/"):
            size = int(self.path.rsplit("/", 1)[1])
            body = bytes(i % 251 for i in range(size))
        try:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the proxy gave up on this request (a reset stream)

    def do_POST(self):
        """Answers with the body's length and SHA-256, read by Content-Length or chunked."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        answer = f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", "12345")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def proxy():
    backend = Backend()
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    state = tempfile.mkdtemp(prefix="flowgate-h2-")
    addr = f"127.0.0.1:{backend.server_address[1]}"
    args = [
        "proxy", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--state-dir", state,
        "--backend", addr, "--no-health-check", "--max-upstream-connections", "8",
        "--domain", "flow.example.com",
    ]
    proc, (listen, _admin) = start(args, ["listening on http://", "admin API on http://"], stderr=subprocess.PIPE)
    host, port = listen.rsplit(":", 1)
    try:
        yield {"addr": (host, int(port)), "backend": backend, "proc": proc}
    finally:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=10)
        backend.shutdown()
        assert "panicked" not in err, err


class RawH2:
    """An HTTP/2 connection with prior knowledge, frames written by hand."""

    def __init__(self, addr):
        self.sock = socket.create_connection(addr, timeout=10)
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.buf = b""
        self.sock.sendall(PREFACE + SettingsFrame(0).serialize())

    def send(self, frame):
        self.sock.sendall(frame.serialize())

    def headers(self, stream_id, headers, end_stream=True, end_headers=True):
        frame = HeadersFrame(stream_id)
        frame.data = self.encoder.encode(headers)
        if end_stream:
            frame.flags.add("END_STREAM")
        if end_headers:
            frame.flags.add("END_HEADERS")
        self.send(frame)

    def frames(self, timeout):
        """Frames until the connection is quiet for `timeout` or closes."""
        self.sock.settimeout(timeout)
        out = []
        while True:
            while len(self.buf) >= 9:
                frame, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
                if len(self.buf) < 9 + length:
                    break
                frame.parse_body(memoryview(self.buf[9 : 9 + length]))
                self.buf = self.buf[9 + length :]
                if isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
                    try:
                        self.send(SettingsFrame(0, flags=["ACK"]))
                    except OSError:
                        pass
                out.append(frame)
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, ConnectionError):
                return out, False
            if not data:
                return out, True
            self.buf += data

    def statuses(self, frames):
        found = {}
        for f in frames:
            if isinstance(f, HeadersFrame):
                decoded = dict(self.decoder.decode(f.data))
                found[f.stream_id] = int(decoded.get(":status", decoded.get(b":status", 0)))
        return found


def request(authority, path="/ok"):
    return [(":method", "GET"), (":scheme", "http"), (":authority", authority), (":path", path)]


def still_serves(p):
    conn = RawH2(p["addr"])
    conn.headers(1, request("flow.example.com"))
    frames, _ = conn.frames(2)
    assert conn.statuses(frames).get(1) == 200, frames
    with urllib.request.urlopen(
        urllib.request.Request(f"http://{p['addr'][0]}:{p['addr'][1]}/ok", headers={"Host": "flow.example.com"}),
        timeout=10,
    ) as r:
        assert r.status == 200


def test_authority_and_host_must_agree(proxy):
    conn = RawH2(proxy["addr"])
    conn.headers(1, request("flow.example.com") + [("host", "evil.example")])
    conn.headers(3, request("flow.example.com") + [("host", "flow.example.com")])
    conn.headers(5, request("flow.example.com"))
    frames, _ = conn.frames(2)
    statuses = conn.statuses(frames)
    assert statuses.get(1) == 400, statuses
    assert statuses.get(3) == 200, statuses
    assert statuses.get(5) == 200, statuses
    still_serves(proxy)


def test_rapid_reset_is_cut_off(proxy):
    conn = RawH2(proxy["addr"])
    sent = 0
    closed = False
    deadline = time.time() + 10
    for i in range(5000):
        stream = 1 + 2 * i
        try:
            conn.headers(stream, request("flow.example.com", "/slow"), end_stream=True)
            conn.send(RstStreamFrame(stream, error_code=0x8))
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        sent += 1
        if time.time() > deadline:
            break
    frames, eof = conn.frames(3)
    goaway = [f for f in frames if isinstance(f, GoAwayFrame)]
    assert closed or eof or goaway, "5,000 reset streams and the connection went on"
    # The backend did not do the work of every reset stream.
    assert proxy["backend"].requests < sent, (proxy["backend"].requests, sent)
    still_serves(proxy)


def test_a_header_block_that_never_ends_is_cut_off(proxy):
    conn = RawH2(proxy["addr"])
    first = HeadersFrame(1)
    first.data = conn.encoder.encode(request("flow.example.com"))
    conn.send(first)  # no END_HEADERS: CONTINUATION frames must follow
    # Each CONTINUATION adds another 16 KiB header to the same block; the
    # proxy's limit is 16 KiB for all of them together.
    filler = hpack.Encoder().encode([(f"x-flood-{i}", "a" * 16000) for i in range(1)])
    cut_off = False
    for i in range(2000):  # at most 32 MiB
        frame = ContinuationFrame(1)
        frame.data = filler
        try:
            conn.send(frame)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            cut_off = True
            break
    if not cut_off:
        frames, eof = conn.frames(3)
        cut_off = eof or any(isinstance(f, GoAwayFrame) for f in frames)
    assert cut_off, "an endless header block was accepted"
    still_serves(proxy)


def test_streams_are_capped_and_backend_connections_bounded(proxy):
    conn = RawH2(proxy["addr"])
    # 150 streams at once: the proxy allows 100 and refuses the rest; the
    # ones it takes share at most 8 backend connections.
    for i in range(150):
        conn.headers(1 + 2 * i, request("flow.example.com", f"/slow/{i}"))
    frames = []
    deadline = time.time() + 20
    while time.time() < deadline:
        more, eof = conn.frames(1)
        frames += more
        answered = len(conn.statuses(frames)) + len([f for f in frames if isinstance(f, RstStreamFrame)])
        if eof or answered >= 150:
            break
    statuses = conn.statuses(frames)
    refused = [f.stream_id for f in frames if isinstance(f, RstStreamFrame) and f.error_code == REFUSED_STREAM]
    assert len(refused) >= 50, f"{len(refused)} streams refused beyond 100: {statuses}"
    assert len(statuses) <= 100, len(statuses)
    assert all(s in (200, 503) for s in statuses.values()), statuses
    assert sum(1 for s in statuses.values() if s == 200) >= 8, statuses
    assert proxy["backend"].peak <= 8, f"{proxy['backend'].peak} backend connections"
    still_serves(proxy)


class H2Client:
    """A well-behaved HTTP/2 client (the h2 library) over a plain socket."""

    def __init__(self, addr, window=65535):
        self.sock = socket.create_connection(addr, timeout=10)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window,
        })
        self.conn.initiate_connection()
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def run(self, until, timeout=20):
        """Reads events until `until(events so far)` holds; every DATA is acknowledged as read."""
        events = []
        deadline = time.time() + timeout
        while not until(events):
            assert time.time() < deadline, f"no answer in {timeout} s: {events}"
            data = self.sock.recv(65536)
            assert data, f"the proxy closed the connection: {events}"
            for event in self.conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                events.append(event)
            self.flush()
        return events


def ended(stream_id):
    return lambda events: any(
        isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) and e.stream_id == stream_id for e in events
    )


def body_of(events, stream_id):
    return b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived) and e.stream_id == stream_id)


def test_a_large_answer_to_a_client_with_a_small_window(proxy):
    # 1 MB through a 1,000-byte stream window: the proxy must wait for each
    # WINDOW_UPDATE, never send past it, and lose nothing.
    client = H2Client(proxy["addr"], window=1000)
    client.conn.send_headers(1, request("flow.example.com", "/big/1000000"), end_stream=True)
    client.flush()
    events = client.run(ended(1), timeout=60)
    body = body_of(events, 1)
    assert len(body) == 1_000_000
    assert body == bytes(i % 251 for i in range(1_000_000))
    still_serves(proxy)


def test_uploads_arrive_whole_with_and_without_a_length(proxy):
    payload = os.urandom(3 * 1024 * 1024)
    client = H2Client(proxy["addr"])
    for stream_id, with_length in ((1, True), (3, False)):
        head = [(":method", "POST"), (":scheme", "http"), (":authority", "flow.example.com"), (":path", "/upload")]
        if with_length:
            head.append(("content-length", str(len(payload))))
        client.conn.send_headers(stream_id, head)
        sent = 0
        while sent < len(payload):
            # As much as the windows allow, then wait for them to open.
            room = min(client.conn.local_flow_control_window(stream_id), client.conn.max_outbound_frame_size)
            if room == 0:
                client.run(lambda events: client.conn.local_flow_control_window(stream_id) > 0)
                continue
            chunk = payload[sent : sent + room]
            client.conn.send_data(stream_id, chunk)
            sent += len(chunk)
            client.flush()
        client.conn.end_stream(stream_id)
        client.flush()
        events = client.run(ended(stream_id), timeout=60)
        answer = body_of(events, stream_id).decode()
        assert answer == f"{len(payload)} {hashlib.sha256(payload).hexdigest()}", (with_length, answer)
    still_serves(proxy)


def test_a_head_answer_has_no_body_and_a_ping_is_answered(proxy):
    client = H2Client(proxy["addr"])
    client.conn.send_headers(1, [(":method", "HEAD"), (":scheme", "http"), (":authority", "flow.example.com"),
                                 (":path", "/ok")], end_stream=True)
    client.conn.ping(b"12345678")
    client.flush()
    events = client.run(lambda events: ended(1)(events) and any(
        isinstance(e, h2.events.PingAckReceived) for e in events))
    heads = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
    assert dict(heads[0].headers)[":status"] == "200"
    assert dict(heads[0].headers).get("content-length") == "12345"
    assert "date" in dict(heads[0].headers)
    assert body_of(events, 1) == b""
    assert [e.ping_data for e in events if isinstance(e, h2.events.PingAckReceived)] == [b"12345678"]


def test_malformed_requests_reset_only_their_stream(proxy):
    conn = RawH2(proxy["addr"])
    conn.headers(1, request("flow.example.com") + [("X-Upper", "1")])
    conn.headers(3, request("flow.example.com") + [("connection", "keep-alive")])
    conn.headers(5, request("flow.example.com") + [("content-length", "3")])  # END_STREAM, no body
    conn.headers(7, request("flow.example.com"))
    frames, _ = conn.frames(2)
    resets = {f.stream_id: f.error_code for f in frames if isinstance(f, RstStreamFrame)}
    assert resets == {1: 1, 3: 1, 5: 1}, resets
    assert conn.statuses(frames) == {7: 200}
    still_serves(proxy)


def test_a_stream_reset_midway_through_its_upload_leaves_the_connection_serving(proxy):
    client = H2Client(proxy["addr"])
    head = [(":method", "POST"), (":scheme", "http"), (":authority", "flow.example.com"), (":path", "/upload"),
            ("content-length", "100000")]
    client.conn.send_headers(1, head)
    client.conn.send_data(1, b"x" * 10000)
    client.flush()
    time.sleep(0.2)
    client.conn.reset_stream(1, error_code=0x8)
    client.conn.send_headers(3, request("flow.example.com"), end_stream=True)
    client.flush()
    events = client.run(ended(3))
    assert body_of(events, 3) == b"ok"
    still_serves(proxy)
