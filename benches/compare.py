#!/usr/bin/env python3
"""flowgate's proxy side by side with nginx and HAProxy, in one run.

Starts on loopback a neutral backend (nginx serving a small body, and
flowgate's Flow simulator for WebSocket sessions), then flowgate's proxy,
nginx and HAProxy configured alike (upstream keep-alive, forwarded
headers, WebSocket passing, the same certificate), plus the backend
directly as the physical limit. Each proxy runs on core 0 with one
worker; the load generators and backends run on core 1.

The throughput measures run with every proxy up at once (an idle one
costs nothing), the targets taken in turn, three rounds (the best round
kept, every round's rate in the JSON): a slow spell of the machine falls
on all targets alike rather than on the one it happened to meet. The
WebSocket phase then takes the targets one after another, each from a
freshly started proxy.

Measured for each: HTTP/1.1 keep-alive small GETs (wrk: requests/s, p50,
p99, and the proxy's user and system CPU microseconds per request from
/proc), HTTP/2 over TLS (h2load: requests/s), new TLS connections per second
(h2load, one request per connection), resumed TLS connections per second
(openssl s_time -reuse), 1 MiB uploads (wrk: MiB/s), and
WebSocket sessions heartbeating every 5 s (flowgate loadgen): proxy memory
per session, heartbeat round-trip p99 added to the direct one, sessions
dropped.

Prints a markdown table with the ratios flowgate/nginx, flowgate/HAProxy
and flowgate/direct, and writes the figures as JSON.

    benches/compare.py [--quick] [--json FILE] [--sessions N]

--quick (one round, fewer sessions) finishes in about 2 minutes, the full
run in about 12. Needs a
release build (cargo build --release) and nginx, haproxy, wrk, h2load
(Debian: nginx-light haproxy wrk nghttp2-client) and openssl. Everything it
starts is stopped when it ends, even on Ctrl-C; all traffic stays on 127.0.0.1.
"""

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "flowgate")
PROXY_CORE = "0"
LOAD_CORE = "1"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def children(pid):
    """pid and all its descendants (nginx and haproxy fork workers)."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    parents = {}
    for line in out.splitlines():
        p, pp = line.split()
        parents.setdefault(int(pp), []).append(int(p))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(parents.get(p, []))
    return found


class Processes:
    """Everything started, stopped at the end whatever happens."""

    def __init__(self):
        self.procs = []

    def start(self, name, argv, core, env=None, cwd=None):
        log = open(os.path.join(WORK, f"{name}.log"), "w")
        proc = subprocess.Popen(
            ["taskset", "-c", core] + argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def stop(self, proc):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def stop_all(self):
        for proc in reversed(self.procs):
            self.stop(proc)


def run(argv, core=LOAD_CORE, timeout=600):
    out = subprocess.run(["taskset", "-c", core] + argv, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {out.stderr.strip()[-500:]}")
    return out.stdout


def wrk_duration_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def wrk(url, seconds, connections, script=None):
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script:
        argv += ["-s", script]
    out = run(argv + [url])
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = wrk_duration_ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = wrk_duration_ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps,
        "requests": requests,
        "p50_ms": p50,
        "p99_ms": p99,
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else None,
    }


def h2load(url, requests, clients, streams, h1=False):
    argv = ["h2load", "-n", str(requests), "-c", str(clients), "-m", str(streams), "-t", "1"]
    if h1:
        argv.append("--h1")
    out = run(argv + [url])
    m = re.search(r"finished in ([\d.]+)(ms|s), ([\d.]+) req/s", out)
    seconds = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    return {"rps": float(m.group(3)), "seconds": seconds, "succeeded": int(done.group(2)), "failed": int(done.group(3))}


def cpu_seconds(pids):
    """User and system CPU seconds of these processes so far (from /proc, in clock ticks)."""
    ticks = os.sysconf("SC_CLK_TCK")
    user = system = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            user += int(fields[11])
            system += int(fields[12])
        except (FileNotFoundError, IndexError):
            pass
    return user / ticks, system / ticks


def timed_wrk(url, seconds, connections, pids):
    """wrk, plus the proxy's user and system microseconds per request (its CPU time over
    the run divided by the requests: what perf's cpu-clock split by user and kernel says,
    without perf)."""
    user0, system0 = cpu_seconds(pids)
    r = wrk(url, seconds, connections)
    user1, system1 = cpu_seconds(pids)
    if pids:
        r["user_us"] = (user1 - user0) * 1e6 / r["requests"]
        r["system_us"] = (system1 - system0) * 1e6 / r["requests"]
    return r


def tls_resumed(port, seconds):
    """Resumed TLS connections per second: openssl s_time reusing one session (a ticket or
    a session ID, whichever the server offers), one GET per connection."""
    out = run(["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-reuse", "-time", str(seconds), "-www", "/"])
    m = re.search(r"(\d+) connections in ([\d.]+) real seconds", out)
    return {"per_s": int(m.group(1)) / float(m.group(2))}


def tls_connections(port, connections):
    """New TLS connections per second: h2load with one request per connection
    (the rounds of the throughput phase give the best of three)."""
    r = h2load(f"https://127.0.0.1:{port}/", connections, connections, 1)
    return {"per_s": r["succeeded"] / r["seconds"]}


def make_certificate(dir):
    key = os.path.join(dir, "key.pem")
    cert = os.path.join(dir, "cert.pem")
    ca_key = os.path.join(dir, "ca-key.pem")
    ca = os.path.join(dir, "ca.pem")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "check": True}
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=bench CA",
                    "-addext", "basicConstraints=critical,CA:TRUE"], **quiet)
    subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", os.path.join(dir, "leaf.csr"), "-subj", "/CN=localhost"], **quiet)
    ext = os.path.join(dir, "leaf.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    subprocess.run(["openssl", "x509", "-req", "-in", os.path.join(dir, "leaf.csr"), "-CA", ca, "-CAkey", ca_key,
                    "-CAcreateserial", "-out", os.path.join(dir, "leaf.pem"), "-days", "2", "-extfile", ext], **quiet)
    with open(cert, "w") as out:
        for part in ("leaf.pem", "ca.pem"):
            with open(os.path.join(dir, part)) as f:
                out.write(f.read())
    with open(os.path.join(dir, "haproxy.pem"), "w") as out:
        for part in (cert, key):
            with open(part) as f:
                out.write(f.read())
    return cert, key, ca


NGINX_BACKEND = """
worker_processes 1;
pid {work}/backend-nginx.pid;
error_log {work}/backend-nginx.error.log;
worker_rlimit_nofile {nofile};
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {work}/body;
  proxy_temp_path {work}/proxy; fastcgi_temp_path {work}/fcgi; uwsgi_temp_path {work}/uwsgi; scgi_temp_path {work}/scgi;
  server {{
    listen 127.0.0.1:{http};
    listen 127.0.0.1:{https} ssl http2;
    ssl_certificate {cert}; ssl_certificate_key {key};
    location / {{ default_type text/plain; return 200 "hello from the backend\\n"; }}
    location /upload {{ client_max_body_size 2m; client_body_buffer_size 2m; return 200 "ok\\n"; }}
  }}
}}
"""

NGINX_PROXY = """
worker_processes 1;
pid {work}/proxy-nginx.pid;
error_log {work}/proxy-nginx.error.log;
worker_rlimit_nofile {nofile};
events {{ worker_connections {connections}; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {work}/pbody;
  proxy_temp_path {work}/pproxy; fastcgi_temp_path {work}/pfcgi; uwsgi_temp_path {work}/puwsgi; scgi_temp_path {work}/pscgi;
  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 64; }}
  upstream websocket {{ server 127.0.0.1:{ws_backend}; }}
  server {{
    listen 127.0.0.1:{http};
    listen 127.0.0.1:{https} ssl http2;
    ssl_certificate {cert}; ssl_certificate_key {key};
    client_max_body_size 2m;
    # Streamed like the others (nginx's default spools bodies over 16 KiB to disk).
    proxy_request_buffering off;
    proxy_http_version 1.1;
    proxy_set_header Host $host;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header X-Forwarded-Port $server_port;
    location / {{
      proxy_set_header Connection "";
      proxy_pass http://backend;
    }}
    location /api/sim/ws {{
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_read_timeout 3600s;
      proxy_pass http://websocket;
    }}
  }}
}}
"""

HAPROXY = """
global
  nbthread 1
  maxconn {connections}
  tune.ssl.default-dh-param 2048
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout tunnel 3600s
  option http-keep-alive
  http-reuse always
frontend web
  bind 127.0.0.1:{http}
  bind 127.0.0.1:{https} ssl crt {pem} alpn h2,http/1.1
  option forwardfor
  http-request set-header X-Forwarded-Proto https if {{ ssl_fc }}
  http-request set-header X-Forwarded-Proto http if !{{ ssl_fc }}
  http-request set-header X-Forwarded-Port %[dst_port]
  use_backend websocket if {{ path_beg /api/sim/ws }}
  default_backend backend
backend backend
  server b1 127.0.0.1:{backend} maxconn 1000
backend websocket
  server w1 127.0.0.1:{ws_backend}
"""


def start_target(name, procs, ports, backend_ports, cert, key, connections):
    """Starts nginx or HAProxy as a proxy on core 0."""
    http, https = ports
    backend, ws_backend = backend_ports
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if name == "nginx":
        conf = os.path.join(WORK, "proxy-nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_PROXY.format(work=WORK, nofile=nofile, connections=connections, backend=backend,
                                       ws_backend=ws_backend, http=http, https=https, cert=cert, key=key))
        return procs.start(name, ["nginx", "-c", conf, "-g", "daemon off;"], PROXY_CORE)
    if name == "haproxy":
        conf = os.path.join(WORK, "haproxy.cfg")
        with open(conf, "w") as f:
            f.write(HAPROXY.format(connections=connections, backend=backend, ws_backend=ws_backend,
                                   http=http, https=https, pem=os.path.join(WORK, "haproxy.pem")))
        return procs.start(name, ["haproxy", "-f", conf], PROXY_CORE)
    raise ValueError(name)


def flowgate_config(http, https, cert, key, backend, ws_backend, connections):
    """flowgate routes /api/sim/ws to the simulator and the rest to nginx, like the others."""
    path = os.path.join(WORK, "flowgate.toml")
    with open(path, "w") as f:
        f.write(f"""
listen = ["127.0.0.1:{http}"]
admin = "off"
state_dir = "{WORK}/flowgate-state"

[limits]
max_connections = {connections}

[tls]
listen = ["127.0.0.1:{https}"]
mode = "files"
cert = "{cert}"
key = "{key}"
redirect_http = false

[[route]]
path_prefix = "/api/sim/ws"
service = "ws"

[[route]]
service = "backend"

[service.backend]
backends = ["127.0.0.1:{backend}"]

[service.backend.health]
enabled = false

[service.ws]
backends = ["127.0.0.1:{ws_backend}"]

[service.ws.health]
enabled = false
""")
    return path


def measure_ws(port, sessions, seconds, pids):
    before = rss_kib(pids)
    argv = [BIN, "loadgen", "--url", f"http://127.0.0.1:{port}", "--ws-clients", str(sessions),
            "--heartbeat", "5s", "--rps", "0", "--duration", f"{seconds}s", "--json",
            "--connect-concurrency", "500"]
    proc = subprocess.Popen(["taskset", "-c", LOAD_CORE] + argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    # Memory once every session is open and has heartbeated (loadgen opens them within a few seconds).
    time.sleep(max(seconds - 5, seconds * 0.6))
    during = rss_kib(pids)
    out, _ = proc.communicate(timeout=seconds + 120)
    summary = json.loads(out)
    return {
        "sessions": sessions,
        "opened": summary["ws_opened"],
        "failed": summary["ws_failed"],
        "dropped": summary["ws_dropped"],
        "rtt_p99_ms": summary["heartbeat_rtt_p99_ms"],
        "rtt_steady_p99_ms": summary.get("heartbeat_rtt_steady_p99_ms"),
        "rss_before_kib": before,
        "rss_during_kib": during,
        "kib_per_session": (during - before) / summary["ws_opened"] if summary["ws_opened"] else None,
        "raw": summary,
    }


def main():
    global WORK
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round and 2,000 sessions: about 2 minutes instead of 12")
    parser.add_argument("--json", default=os.path.join(ROOT, "target", "bench", "compare.json"),
                        help="where to write the figures [target/bench/compare.json]")
    parser.add_argument("--sessions", type=int, help="WebSocket sessions [10,000, or what the fd limit allows]")
    parser.add_argument("--only", help="comma-separated targets (direct,flowgate,nginx,haproxy)")
    args = parser.parse_args()
    for tool in ("nginx", "haproxy", "wrk", "h2load", "openssl", "taskset"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            sys.exit(f"compare.py: {tool} is missing (Debian: apt-get install nginx-light haproxy wrk nghttp2-client openssl)")
    if not os.access(BIN, os.X_OK):
        sys.exit("compare.py: build first: cargo build --release")
    os.environ["PATH"] += ":/usr/sbin"
    if os.cpu_count() < 2:
        sys.exit("compare.py: needs 2 cores (one for the proxy, one for the load)")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # A proxy holds two descriptors per session; keep 500 for listeners and the rest.
    fd_sessions = (hard - 500) // 2
    wanted = args.sessions or (2_000 if args.quick else 10_000)
    sessions = min(wanted, fd_sessions)
    limit_note = None
    if sessions < wanted:
        limit_note = (f"{wanted} sessions asked, {sessions} run: the open-file limit here is {hard} per process "
                      f"and cannot be raised, and a proxy needs two descriptors per session")
    seconds = {"http": 4 if args.quick else 15, "upload": 3 if args.quick else 10, "ws": 15 if args.quick else 40}
    h2_requests = 20_000 if args.quick else 100_000
    rounds = 1 if args.quick else 3

    WORK = tempfile.mkdtemp(prefix="flowgate-bench-")
    # nginx started as root runs its workers as nobody, and they write
    # request bodies over 16 KiB to a temp dir inside WORK (else 500).
    os.chmod(WORK, 0o755)
    procs = Processes()
    results = {"machine": machine(), "sessions_limit": limit_note, "quick": args.quick, "targets": {}}
    try:
        cert, key, _ca = make_certificate(WORK)
        upload = os.path.join(WORK, "upload.lua")
        with open(upload, "w") as f:
            f.write('wrk.method = "POST"\nwrk.body = string.rep("a", 1048576)\n'
                    'wrk.headers["Content-Type"] = "application/octet-stream"\n')
        backend_http, backend_https, ws_backend = free_port(), free_port(), free_port()
        conf = os.path.join(WORK, "backend-nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_BACKEND.format(work=WORK, nofile=hard, http=backend_http, https=backend_https,
                                         cert=cert, key=key))
        procs.start("backend-nginx", ["nginx", "-c", conf, "-g", "daemon off;"], LOAD_CORE)
        procs.start("backend-sim", [BIN, "sim", "flow", "--listen", f"127.0.0.1:{ws_backend}", "--name", "sim"],
                    LOAD_CORE, env={"FLOWGATE_LOG": "warn"})
        wait_port(backend_http)
        wait_port(ws_backend)

        targets = (args.only or "direct,flowgate,nginx,haproxy").split(",")
        backends = (backend_http, backend_https, ws_backend)
        # Throughput first, with every proxy up at once and the targets taken
        # in turn, round after round (best round kept): a slow spell of the
        # machine then falls on all of them instead of on whichever target
        # it happened to meet.
        running = {}
        for name in targets:
            try:
                running[name] = Target(name, procs, sessions, cert, key, backends)
            except Exception as e:  # one target failing must not lose the others
                print(f"   {name} failed to start: {e}", file=sys.stderr, flush=True)
                results["targets"][name] = {"error": str(e)}
        throughput = {name: {} for name in running}
        for round_ in range(rounds):
            print(f"-- throughput, round {round_ + 1} of {rounds}", file=sys.stderr, flush=True)
            for name, target in running.items():
                try:
                    keep_best(throughput[name], measure_throughput(target, args, seconds, h2_requests, upload))
                except Exception as e:
                    print(f"   {name} failed: {e}", file=sys.stderr, flush=True)
        for target in running.values():
            target.stop()
        # WebSocket sessions one target after another, each from a freshly
        # started proxy, so memory pools warmed before do not hide what
        # sessions cost and one proxy's sessions do not share the machine
        # with another's.
        for name in running:
            print(f"-- {name}", file=sys.stderr, flush=True)
            try:
                r = throughput[name]
                target = Target(name, procs, sessions, cert, key, backends)
                try:
                    r["ws"] = measure_ws(target.ws, sessions, seconds["ws"], target.memory_pids())
                finally:
                    target.stop()
                results["targets"][name] = r
                print(f"   {summary_line(r)}", file=sys.stderr, flush=True)
            except Exception as e:
                print(f"   {name} failed: {e}", file=sys.stderr, flush=True)
                results["targets"][name] = {"error": str(e)}
    finally:
        procs.stop_all()
        shutil.rmtree(WORK, ignore_errors=True)

    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    print(table(results))
    print(f"\nfigures: {args.json}")


class Target:
    """One target: a proxy started on core 0 (or, for the direct row, the backends themselves)."""

    def __init__(self, name, procs, sessions, cert, key, backends):
        backend_http, backend_https, ws_backend = backends
        self.name, self.procs, self.proc = name, procs, None
        if name == "direct":
            self.http, self.https, self.ws = backend_http, backend_https, ws_backend
            return
        self.http, self.https = free_port(), free_port()
        self.ws = self.http
        if name == "flowgate":
            path = flowgate_config(self.http, self.https, cert, key, backend_http, ws_backend, sessions * 2 + 100)
            self.proc = procs.start(name, [BIN, "proxy", "--config", path], PROXY_CORE, env={"FLOWGATE_LOG": "warn"})
        else:
            # nginx counts both sides of a proxied connection, HAProxy the client side.
            limit = sessions * 2 + 100 if name == "nginx" else sessions + 100
            self.proc = start_target(name, procs, (self.http, self.https), (backend_http, ws_backend), cert, key, limit)
        wait_port(self.http)
        wait_port(self.https)
        time.sleep(0.5)

    def cpu_pids(self):
        """The proxy's processes, for CPU per request; none for the direct row."""
        return children(self.proc.pid) if self.proc else []

    def memory_pids(self):
        """The proxy's processes, or the simulator's for the direct row."""
        if self.proc:
            return children(self.proc.pid)
        return [p.pid for p in self.procs.procs if "sim" in " ".join(map(str, p.args))]

    def stop(self):
        if self.proc:
            self.procs.stop(self.proc)
            self.proc = None


def measure_throughput(target, args, seconds, h2_requests, upload):
    """One round of every throughput measure of one target."""
    http, https = target.http, target.https
    r = {
        "http": timed_wrk(f"http://127.0.0.1:{http}/", seconds["http"], 64, target.cpu_pids()),
        "h2_tls": h2load(f"https://127.0.0.1:{https}/", h2_requests, 16, 10),
        "tls_new": tls_connections(https, 500 if args.quick else 1000),
        "tls_resumed": tls_resumed(https, 2 if args.quick else 5),
    }
    up = wrk(f"http://127.0.0.1:{http}/upload", seconds["upload"], 8, upload)
    up["mib_per_s"] = up["rps"]  # one MiB per request
    r["upload"] = up
    return r


# What makes a round's figure the best one, per measure.
BEST_BY = {"http": "rps", "h2_tls": "rps", "tls_new": "per_s", "tls_resumed": "per_s", "upload": "mib_per_s"}


def keep_best(best, r):
    """Keeps, per measure, the round with the higher rate (its other figures
    with it), and every round's rate under "rounds"."""
    for measure, key in BEST_BY.items():
        rates = best.get(measure, {}).get("rounds", []) + [r[measure][key]]
        if measure not in best or r[measure][key] > best[measure][key]:
            best[measure] = r[measure]
        best[measure]["rounds"] = rates


def summary_line(r):
    return (f"{r['http']['rps']:.0f} req/s p99 {r['http']['p99_ms']:.2f} ms; h2 {r['h2_tls']['rps']:.0f} req/s; "
            f"{r['tls_new']['per_s']:.0f} TLS conn/s ({r['tls_resumed']['per_s']:.0f} resumed); upload {r['upload']['mib_per_s']:.0f} MiB/s; "
            f"ws {r['ws']['kib_per_session'] or 0:.1f} KiB/session, dropped {r['ws']['dropped']}")


def machine():
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
    except OSError:
        model = "?"
    return {"cpu": model, "cores": os.cpu_count(), "kernel": platform.release(),
            "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
            "haproxy": subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.splitlines()[0]}


def table(results):
    t = results["targets"]
    rows = [
        ("HTTP/1.1 keep-alive GET, req/s", lambda r: r["http"]["rps"], True, "{:,.0f}"),
        ("HTTP/1.1 p50, ms", lambda r: r["http"]["p50_ms"], False, "{:.2f}"),
        ("HTTP/1.1 p99, ms", lambda r: r["http"]["p99_ms"], False, "{:.2f}"),
        ("HTTP/2 over TLS, req/s", lambda r: r["h2_tls"]["rps"], True, "{:,.0f}"),
        ("proxy user time per GET, us", lambda r: r["http"].get("user_us"), False, "{:.2f}"),
        ("proxy system time per GET, us", lambda r: r["http"].get("system_us"), False, "{:.2f}"),
        ("new TLS connections/s", lambda r: r["tls_new"]["per_s"], True, "{:,.0f}"),
        ("resumed TLS connections/s", lambda r: r["tls_resumed"]["per_s"], True, "{:,.0f}"),
        # Only uploads that were answered 2xx count: a proxy that refuses
        # them fast (a 413, or a 500 from a temp dir it cannot write) is not fast.
        ("1 MiB uploads, MiB/s", lambda r: r["upload"]["mib_per_s"] if not r["upload"]["non_2xx"] else None,
         True, "{:,.0f}"),
        ("WebSocket memory, KiB/session", lambda r: r["ws"]["kib_per_session"], False, "{:.1f}"),
        ("heartbeat RTT p99 (all), ms", lambda r: r["ws"]["rtt_p99_ms"], False, "{:.2f}"),
        ("heartbeat RTT p99 (all open), ms", lambda r: r["ws"]["rtt_steady_p99_ms"], False, "{:.2f}"),
        ("sessions that failed to open", lambda r: r["ws"]["failed"], False, "{}"),
        ("sessions dropped", lambda r: r["ws"]["dropped"], False, "{}"),
    ]
    names = [n for n in ("direct", "flowgate", "nginx", "haproxy") if n in t and "error" not in t[n]]
    head = "| measure | " + " | ".join(names) + " | flowgate/nginx | flowgate/HAProxy | flowgate/direct |"
    lines = [head, "|" + "---|" * (len(names) + 4)]

    def ratio(a, b):
        if a is None or b in (None, 0):
            return "-"
        return f"{a / b:.2f}"

    for label, get, _higher_better, fmt in rows:
        values = {n: get(t[n]) for n in names}
        cells = [fmt.format(values[n]) if values[n] is not None else "-" for n in names]
        f = values.get("flowgate")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {ratio(f, values.get('nginx'))} | "
                     f"{ratio(f, values.get('haproxy'))} | {ratio(f, values.get('direct'))} |")
    s = t.get("flowgate", {}).get("ws", {}).get("sessions")
    lines.append("")
    lines.append(f"WebSocket: {s} sessions per target from a freshly started proxy, heartbeat every 5 s; "
                 f"memory = RSS growth / sessions (the direct row is the simulator's own); RTT 'all' includes "
                 f"the opening burst, 'all open' counts heartbeats sent once every session was open.")
    if results.get("sessions_limit"):
        lines.append(results["sessions_limit"] + ".")
    return "\n".join(lines)


WORK = None

if __name__ == "__main__":
    main()
