#!/usr/bin/env python3
"""A soak of one flowgate proxy under legitimate load and attack at once.

For --minutes (default 10) one proxy (release build) in front of two Flow
simulators carries 5,000 WebSocket sessions heartbeating every 5 s and 200
requests/s (flowgate loadgen), while this script sends hostile input in a
loop: upgrade smuggling with a body, duplicate Host, spoofed forwarded
headers, a trickled body, bare-LF heads, WebSocket protocol violations and a
client that stops reading, HTTP/2 rapid reset and an endless header block,
and admin calls with drain values out of range. Every loop is bounded in
count and time; all traffic stays on 127.0.0.0/8.

It prints the proxy's resident memory and open descriptors at the start and
the end of the attack (sessions open) and after the clients left, the
hostile rounds done, whether anything panicked, and what the
legitimate clients saw (failed requests, dropped sessions). Exit code 0 only
when no legitimate request failed, no session was dropped and nothing
panicked.

    cargo build --release && benches/soak.py [--minutes 10] [--sessions 5000] [--rps 200] [--json FILE]

Not part of CI (it takes ten minutes); the hostile tests themselves are.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "flowgate")
KEY = "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"


def start(args, markers, log):
    proc = subprocess.Popen([BIN, *args], stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True)
    found = []
    deadline = time.time() + 20
    for marker in markers:
        while True:
            if time.time() > deadline:
                raise SystemExit(f"soak: {args[0]} did not print {marker!r}")
            line = proc.stdout.readline()
            if not line:
                raise SystemExit(f"soak: {' '.join(args)} exited early")
            if marker in line:
                found.append(line.split(marker, 1)[1].split()[0])
                break
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return proc, found


def usage(pid):
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) // 1024
    return {"rss_mib": rss, "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def raw(addr, data, source="127.0.0.9", read=True, timeout=5.0):
    """Sends bytes as given from a loopback source address; returns what came back."""
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(timeout)
    try:
        s.connect(addr)
        s.sendall(data)
        if not read:
            return s
        out = b""
        while b"\r\n\r\n" not in out:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        return out
    except OSError:
        return b""
    finally:
        if read:
            s.close()


def masked(first, payload, mask=True):
    key = b"\x11\x22\x33\x44"
    head = bytes([first, (0x80 if mask else 0) | len(payload)])
    if not mask:
        return head + payload
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def h2_frame(kind, flags, stream, payload):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def h2_headers(path):
    # HPACK literals without indexing, no Huffman: :method GET (static 2),
    # :scheme http (static 6), :path and :authority as literal values.
    def literal(index, value):
        v = value.encode()
        return bytes([index]) + bytes([len(v)]) + v

    return b"\x82\x86" + literal(0x04, path) + literal(0x01, "flow.example.com")


def hostile_round(addr, admin, token):
    """One pass over every attack; each is bounded by its socket timeout."""
    body = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
    raw(addr, (f"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n{KEY}"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
    raw(addr, b"GET /api/sim/whoami HTTP/1.1\r\nHost: a\r\nHost: evil.example\r\n\r\n")
    raw(addr, b"GET /api/sim/whoami HTTP/1.1\r\nHost: a\r\nX-Forwarded-Host: evil\r\nForwarded: for=1.2.3.4\r\n"
              b"Connection: close, host\r\n\r\n")
    raw(addr, b"GET /api/sim/whoami HTTP/1.1\nHost: a\n\n")
    raw(addr, b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n")
    # A trickled body: 3 bytes over 1.5 s, then the client gives up.
    s = raw(addr, b"POST /api/sim/echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n", read=False)
    for _ in range(3):
        time.sleep(0.5)
        try:
            s.sendall(b"x")
        except OSError:
            break
    s.close()
    # WebSocket protocol violations, then a client that stops reading.
    for frame in (masked(0x81, b"hi", mask=False), masked(0x83, b"x"),
                  b"\x82\xff" + b"\xff" * 8 + b"\x11\x22\x33\x44"):
        s = raw(addr, f"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n{KEY}\r\n".encode(),
                read=False)
        try:
            s.recv(4096)
            s.sendall(frame)
            s.recv(4096)
        except OSError:
            pass
        s.close()
    s = raw(addr, f"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n{KEY}\r\n".encode(),
            read=False)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    big = masked(0x82, b"")[:1] + b"\xfe" + (60000).to_bytes(2, "big") + b"\x11\x22\x33\x44" + b"\x00" * 60000
    deadline = time.time() + 2
    try:
        s.settimeout(0.5)
        while time.time() < deadline:
            s.sendall(big)
    except OSError:
        pass
    s.close()
    # HTTP/2: 500 streams opened and reset at once, then an endless header block.
    s = raw(addr, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(4, 0, 0, b""), read=False)
    try:
        burst = b"".join(h2_frame(1, 0x5, 1 + 2 * i, h2_headers("/api/sim/whoami")) + h2_frame(3, 0, 1 + 2 * i, b"\x00\x00\x00\x08")
                         for i in range(500))
        s.sendall(burst)
    except OSError:
        pass
    s.close()
    s = raw(addr, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(4, 0, 0, b"") + h2_frame(1, 0, 1, h2_headers("/")),
            read=False)
    try:
        filler = b"\x00\x0ax-flood-aa" + b"\x7f\x81\x7c" + b"a" * 16000
        for _ in range(200):
            s.sendall(h2_frame(9, 0, 1, filler))
    except OSError:
        pass
    s.close()
    for value in ("1e300", "-1", "NaN", "3601"):
        req = urllib.request.Request(f"http://{admin}/api/v1/backends/nobody?drain={value}", method="DELETE",
                                     headers={"Authorization": f"Bearer {token}"})
        try:
            urllib.request.urlopen(req, timeout=5)
        except urllib.error.HTTPError as e:
            assert e.code == 400, (value, e.code)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--sessions", type=int, default=5000)
    parser.add_argument("--rps", type=int, default=200)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if not os.path.exists(BIN):
        raise SystemExit("soak: no release build; run cargo build --release first")
    work = tempfile.mkdtemp(prefix="flowgate-soak-")
    procs = []
    log = open(os.path.join(work, "proxy.log"), "w+")
    try:
        sims = []
        for name in ("flow-1", "flow-2"):
            proc, (sim,) = start(["sim", "flow", "--listen", "127.0.0.1:0", "--name", name], ["listening on http://"],
                                 subprocess.DEVNULL)
            procs.append(proc)
            sims.append(sim)
        proxy_args = ["proxy", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--state-dir", work,
                      "--write-timeout", "5s", "--body-timeout", "5s"]
        for sim in sims:
            proxy_args += ["--backend", sim]
        proxy, (listen, admin) = start(proxy_args, ["listening on http://", "admin API on http://"], log)
        procs.append(proxy)
        token = open(os.path.join(work, "admin-token")).read().strip()
        host, port = listen.rsplit(":", 1)
        addr = (host, int(port))
        time.sleep(1)
        seconds = int(args.minutes * 60)
        load = subprocess.Popen(
            [BIN, "loadgen", "--url", f"http://{listen}", "--ws-clients", str(args.sessions), "--heartbeat", "5s",
             "--rps", str(args.rps), "--duration", f"{seconds}s", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
        procs.append(load)
        time.sleep(min(30, seconds / 4))  # sessions opened
        before = usage(proxy.pid)
        rounds = 0
        ends = time.time() + seconds - min(30, seconds / 4) - 15
        while time.time() < ends:
            hostile_round(addr, admin, token)
            rounds += 1
        end = usage(proxy.pid)  # sessions still open
        out, _ = load.communicate(timeout=seconds + 120)
        summary = json.loads(out)
        time.sleep(5)  # sessions closed, buffers given back
        after = usage(proxy.pid)
        log.seek(0)
        panics = log.read().count("panicked")
        figures = {
            "minutes": args.minutes, "sessions": args.sessions, "rps": args.rps, "hostile_rounds": rounds,
            "rss_mib_start": before["rss_mib"], "rss_mib_end": end["rss_mib"], "rss_mib_after": after["rss_mib"],
            "fds_start": before["fds"], "fds_end": end["fds"], "fds_after": after["fds"], "panics": panics,
            "requests_ok": summary["requests_ok"], "requests_failed": summary["requests_failed"],
            "ws_opened": summary["ws_opened"], "ws_failed": summary["ws_failed"], "ws_dropped": summary["ws_dropped"],
            "heartbeats_sent": summary["heartbeats_sent"], "heartbeats_acknowledged": summary["heartbeats_acknowledged"],
            "heartbeat_rtt_p99_ms": summary["heartbeat_rtt_p99_ms"],
        }
        print("| measure | value |\n|---|---|")
        for k, v in figures.items():
            print(f"| {k} | {v} |")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(figures, f, indent=2)
        ok = panics == 0 and summary["requests_failed"] == 0 and summary["ws_dropped"] == 0
        if not ok:
            print("soak: legitimate clients were hurt or the proxy panicked (see above)", file=sys.stderr)
        return 0 if ok else 1
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()


if __name__ == "__main__":
    sys.exit(main())
