"""WebSocket through the flowgate proxy with Python's `websockets` client.

An independent, widely used client checks what the Rust tests check with
flowgate's own load generator: the handshake passes the proxy, frames are
echoed unchanged (text, binary, fragmented, large), pings are answered, and
a drained backend closes the session with 1001.
"""

import asyncio
import json
import os
import signal
import tempfile
import time
import urllib.request

import pytest
import websockets
from websockets.asyncio.client import connect

from flowgate_procs import start


@pytest.fixture
def deployment():
    """Two Flow simulators behind a proxy; everything is killed afterwards."""
    procs = []
    state = tempfile.mkdtemp(prefix="flowgate-pytest-")
    try:
        sims = []
        for name in ("flow-1", "flow-2"):
            proc, (addr,) = start(["sim", "flow", "--listen", "127.0.0.1:0", "--name", name], ["listening on http://"])
            procs.append(proc)
            sims.append(addr)
        args = ["proxy", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--state-dir", state]
        for addr in sims:
            args += ["--backend", addr]
        proc, (listen, admin) = start(args, ["listening on http://", "admin API on http://"])
        procs.append(proc)
        with open(os.path.join(state, "admin-token")) as f:
            token = f.read().strip()
        deployment = {"listen": listen, "admin": admin, "token": token, "sims": sims}
        wait_healthy(deployment, 2)
        yield deployment
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


def admin(deployment, method, path):
    request = urllib.request.Request(
        f"http://{deployment['admin']}{path}",
        method=method,
        headers={"Authorization": f"Bearer {deployment['token']}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def wait_healthy(deployment, count):
    deadline = time.time() + 15
    while time.time() < deadline:
        states = [b["state"] for b in admin(deployment, "GET", "/api/v1/backends")]
        if states.count("healthy") == count:
            return
        time.sleep(0.05)
    raise AssertionError("backends did not become healthy")


def test_echo_of_text_binary_fragmented_and_large_messages(deployment):
    async def run():
        async with connect(f"ws://{deployment['listen']}/api/ws", ping_interval=None) as ws:
            await ws.send("hello flow")
            assert await ws.recv() == "hello flow"
            await ws.send(b"\x00\x01binary")
            assert await ws.recv() == b"\x00\x01binary"
            big = "x" * 300_000
            await ws.send(big)
            assert await ws.recv() == big
            # A fragmented message comes back whole to the client library.
            await ws.send(["frag", "mented"])
            assert await ws.recv() == "fragmented"
            latency = await (await ws.ping(b"hb"))
            assert latency >= 0

    asyncio.run(run())
    backends = admin(deployment, "GET", "/api/v1/backends")
    assert sum(b["ws_total"] for b in backends) == 1
    assert sum(b["pings"] for b in backends) >= 1
    assert sum(b["heartbeats_total"] for b in backends) == 1


def test_sessions_are_counted_while_open_and_released_after(deployment):
    async def run():
        sockets = [await connect(f"ws://{deployment['listen']}/", ping_interval=None) for _ in range(10)]
        backends = admin(deployment, "GET", "/api/v1/backends")
        assert sum(b["ws_active"] for b in backends) == 10
        assert all(b["ws_active"] == 5 for b in backends), backends
        for ws in sockets:
            await ws.close()
            assert ws.close_code == 1000

    asyncio.run(run())
    deadline = time.time() + 5
    while sum(b["ws_active"] for b in admin(deployment, "GET", "/api/v1/backends")) and time.time() < deadline:
        time.sleep(0.05)
    assert sum(b["ws_active"] for b in admin(deployment, "GET", "/api/v1/backends")) == 0


def test_drain_closes_the_session_with_1001(deployment):
    async def run():
        async with connect(f"ws://{deployment['listen']}/", ping_interval=None) as ws:
            await ws.send("before drain")
            assert await ws.recv() == "before drain"
            backends = admin(deployment, "GET", "/api/v1/backends")
            busy = next(b for b in backends if b["ws_active"] == 1)
            admin(deployment, "DELETE", f"/api/v1/backends/{busy['id']}?drain=0")
            with pytest.raises(websockets.exceptions.ConnectionClosedOK):
                await asyncio.wait_for(ws.recv(), timeout=10)
            assert ws.close_code == 1001

    asyncio.run(run())


def test_idle_sessions_are_closed_after_the_idle_timeout():
    procs = []
    state = tempfile.mkdtemp(prefix="flowgate-pytest-")
    try:
        sim, (addr,) = start(["sim", "flow", "--listen", "127.0.0.1:0"], ["listening on http://"])
        procs.append(sim)
        proxy, (listen, admin_addr) = start(
            ["proxy", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--state-dir", state,
             "--backend", addr, "--idle-timeout", "2s", "--heartbeat-interval", "1s"],
            ["listening on http://", "admin API on http://"],
        )
        procs.append(proxy)
        with open(os.path.join(state, "admin-token")) as f:
            deployment = {"admin": admin_addr, "token": f.read().strip()}
        wait_healthy(deployment, 1)

        async def run():
            async with connect(f"ws://{listen}/", ping_interval=None) as quiet, \
                    connect(f"ws://{listen}/", ping_interval=None) as chatty:
                started = time.monotonic()
                # One session heartbeats every second and must stay open; the
                # other says nothing and must be closed with 1001 after ~2 s.
                for _ in range(4):
                    await chatty.ping()
                    await asyncio.sleep(1)
                with pytest.raises(websockets.exceptions.ConnectionClosedOK):
                    await asyncio.wait_for(quiet.recv(), timeout=5)
                assert quiet.close_code == 1001
                assert 1.5 < time.monotonic() - started < 7
                await chatty.send("still here")
                assert await chatty.recv() == "still here"

        asyncio.run(run())
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


def test_wss_through_tls_termination_with_the_local_ca():
    import ssl

    procs = []
    state = tempfile.mkdtemp(prefix="flowgate-pytest-")
    try:
        sim, (addr,) = start(["sim", "flow", "--listen", "127.0.0.1:0"], ["listening on http://"])
        procs.append(sim)
        proxy, (_, tls_listen, admin_addr) = start(
            ["proxy", "--listen", "127.0.0.1:0", "--tls", "self-signed", "--tls-listen", "127.0.0.1:0",
             "--domain", "flow.example.com", "--admin", "127.0.0.1:0", "--state-dir", state, "--backend", addr],
            ["listening on http://", "listening on https://", "admin API on http://"],
        )
        procs.append(proxy)
        with open(os.path.join(state, "admin-token")) as f:
            deployment = {"admin": admin_addr, "token": f.read().strip()}
        wait_healthy(deployment, 1)
        context = ssl.create_default_context(cafile=os.path.join(state, "ca.pem"))
        host, port = tls_listen.rsplit(":", 1)

        async def run():
            # The certificate names flow.example.com; connect to loopback with that SNI.
            async with connect(f"wss://flow.example.com:{port}/api/ws", ssl=context, ping_interval=None,
                               host=host, port=int(port)) as ws:
                await ws.send("over tls")
                assert await ws.recv() == "over tls"
                await (await ws.ping(b"hb"))

        asyncio.run(run())
        backends = admin(deployment, "GET", "/api/v1/backends")
        assert backends[0]["ws_total"] == 1
        assert backends[0]["heartbeats_total"] == 1
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
