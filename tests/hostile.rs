//! The hostile-input suite: what an attacker on the open internet sends,
//! written byte by byte to a real `flowgate proxy` on loopback, with either
//! the Flow simulator or a raw keep-alive backend (one that answers first and
//! reads the declared body afterwards, as Tomcat- and Netty-style servers
//! do) behind it. Each test ends by checking that the proxy still serves a
//! normal request, that no WebSocket session is left counted, and that
//! nothing panicked. The HTTP/2 cases are in tests/test_hostile_h2.py.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::raw::{After, Raw, RawBackend, ScriptedBackend, echo};
use common::*;

/// A proxy over a raw or scripted backend at `backend`, no health checks
/// (those backends answer every path).
fn over_raw(fx: &mut Fixture, backend: std::net::SocketAddr, extra: &[&str]) -> Proxy {
    let addr = backend.to_string();
    let mut args = vec!["--backend", addr.as_str(), "--no-health-check"];
    args.extend_from_slice(extra);
    fx.proxy("proxy", &args)
}

/// A proxy over one Flow simulator, healthy.
fn over_sim(fx: &mut Fixture, extra: &[&str]) -> Proxy {
    let sim = fx.sim_flow("flow-1").to_string();
    let mut args = vec!["--backend", sim.as_str()];
    args.extend_from_slice(extra);
    let proxy = fx.proxy("proxy", &args);
    proxy.wait_healthy(1);
    proxy
}

/// The proxy still answers a normal request, holds no session, and logged no panic.
fn still_serves(fx: &Fixture, proxy: &Proxy, path: &str) {
    let r = get(proxy.addr, path, Some("flow.example.com"));
    assert_eq!(r.status, 200, "a normal request after the attack: {}", r.text());
    wait_for(Duration::from_secs(10), || proxy.total("ws_active") == 0);
    let log = fx.log("proxy");
    assert!(!log.contains("panicked"), "the proxy panicked:\n{log}");
}

// ---------------------------------------------------------------------------
// Framing and smuggling

#[test]
fn upgrade_with_a_body_is_refused_and_smuggles_nothing_onto_pooled_connections() {
    let mut fx = Fixture::new("hostile-upgrade-cl");
    let backend = RawBackend::start();
    let proxy = over_raw(&mut fx, backend.addr, &[]);
    // Warm the pool so a smuggled body would land on a kept connection.
    assert_eq!(get(proxy.addr, "/warm", None).status, 200);
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let attack = handshake("/ws", &format!("Content-Length: {}\r\n", smuggled.len())) + smuggled;
    let mut client = Raw::connect(proxy.addr);
    client.send(attack.as_bytes());
    assert_eq!(client.response().status, 400);
    let chunked = handshake("/ws", "Transfer-Encoding: chunked\r\n") + "5\r\nhello\r\n0\r\n\r\n";
    assert_eq!(Raw::connect(proxy.addr).send(chunked.as_bytes()).response().status, 400);
    // The next clients get their own answers, and the backend never read a
    // request that no client sent.
    for i in 0..5 {
        let r = get(proxy.addr, &format!("/next-{i}"), None);
        assert_eq!(r.text(), format!("GET /next-{i} HTTP/1.1"));
    }
    let lines = backend.lines();
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("GET /warm") || l.starts_with("GET /next-")),
        "the backend saw requests no client sent: {lines:?}"
    );
    still_serves(&fx, &proxy, "/after");
}

#[test]
fn upgrade_with_expect_continue_is_answered_not_hung() {
    let mut fx = Fixture::new("hostile-upgrade-expect");
    let backend = RawBackend::start();
    let proxy = over_raw(&mut fx, backend.addr, &[]);
    let started = Instant::now();
    let mut client = Raw::connect(proxy.addr);
    client.send(handshake("/ws", "Expect: 100-continue\r\n").as_bytes());
    let r = client.response();
    assert_eq!(r.status, 404, "the backend's refusal is relayed: {}", r.text());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let heads = backend.heads();
    assert!(
        heads.iter().all(|h| !h.to_ascii_lowercase().contains("expect:")),
        "Expect reached the backend: {heads:?}"
    );
    still_serves(&fx, &proxy, "/after");
}

#[test]
fn ambiguous_framing_gets_400_and_the_connection_closes() {
    let mut fx = Fixture::new("hostile-framing");
    let backend = RawBackend::start();
    let proxy = over_raw(&mut fx, backend.addr, &[]);
    let cases: [(&str, &str); 5] = [
        (
            "TE on HTTP/1.0",
            "POST /x HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "unknown TE",
            "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabcd",
        ),
        (
            "repeated TE",
            "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "differing CLs",
            "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        ),
        (
            "obs-fold",
            "GET /x HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n",
        ),
    ];
    for (name, request) in cases {
        let mut client = Raw::connect(proxy.addr);
        client.send(request.as_bytes());
        let r = client.response();
        assert_eq!(r.status, 400, "{name}: {}", r.text());
        assert!(
            client.closed_within(Duration::from_secs(5)),
            "{name}: the connection stayed open"
        );
    }
    assert!(
        backend.lines().is_empty(),
        "a malformed request reached the backend: {:?}",
        backend.lines()
    );
    // Content-Length beside Transfer-Encoding: hyper removes the length and
    // reads the chunked body, and the connection closes after the answer
    // (RFC 9112, 6.3), so the two can never be read two ways. The backend
    // gets one request, chunked framing only, and then the next client's.
    let mut client = Raw::connect(proxy.addr);
    client.send(
        b"POST /cl-te HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    let r = client.response();
    assert!(r.status == 200 || r.status == 400, "{}", r.status);
    assert!(
        client.closed_within(Duration::from_secs(5)),
        "CL+TE: the connection stayed open"
    );
    assert_eq!(get(proxy.addr, "/next", None).text(), "GET /next HTTP/1.1");
    let heads = backend.heads();
    assert!(heads.iter().all(|h| !h.contains("/smuggled")), "{heads:?}");
    if let Some(head) = heads.iter().find(|h| h.starts_with("POST /cl-te")) {
        assert!(!head.to_ascii_lowercase().contains("content-length: 40"), "{head}");
    }
    still_serves(&fx, &proxy, "/after");
}

#[test]
fn h2c_upgrade_requests_are_plain_requests_to_the_backend() {
    let mut fx = Fixture::new("hostile-h2c");
    let backend = RawBackend::start();
    let proxy = over_raw(&mut fx, backend.addr, &[]);
    let mut client = Raw::connect(proxy.addr);
    client.send(
        b"GET /h2c HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
          HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    );
    let r = client.response();
    assert_eq!(r.status, 200, "{}", r.text());
    // The same connection goes on as HTTP/1.1.
    client.send(b"GET /second HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(client.response().text(), "GET /second HTTP/1.1");
    let head = backend
        .heads()
        .into_iter()
        .find(|h| h.starts_with("GET /h2c"))
        .unwrap()
        .to_ascii_lowercase();
    assert!(!head.contains("upgrade"), "{head}");
    assert!(!head.contains("http2-settings"), "{head}");
    still_serves(&fx, &proxy, "/after");
}

#[test]
fn an_http2_preface_after_http1_requests_is_not_served_as_http2() {
    // HTTP/2 by prior knowledge starts a connection (RFC 9113, 3.3); one
    // that began as HTTP/1.1 stays HTTP/1.1, and its idle and head limits
    // stay those of HTTP/1.1.
    let mut fx = Fixture::new("hostile-late-preface");
    let backend = RawBackend::start();
    let proxy = over_raw(&mut fx, backend.addr, &[]);
    let mut client = Raw::connect(proxy.addr);
    client.send(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(client.response().text(), "GET /first HTTP/1.1");
    client.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00");
    let r = client.response();
    assert_eq!(r.status, 505, "{}", r.text());
    assert!(
        client.closed_within(Duration::from_secs(3)),
        "the connection stayed open"
    );
    assert!(
        backend.heads().iter().all(|h| !h.starts_with("PRI")),
        "{:?}",
        backend.heads()
    );
    still_serves(&fx, &proxy, "/after");
}

#[test]
fn heads_with_bare_lf_line_ends_are_answered_at_once() {
    let mut fx = Fixture::new("hostile-bare-lf");
    let backend = RawBackend::start();
    let proxy = over_raw(&mut fx, backend.addr, &["--header-timeout", "10s"]);
    let started = Instant::now();
    let mut client = Raw::connect(proxy.addr);
    client.send(b"GET /lf HTTP/1.1\nHost: flow.example.com\n\n");
    let r = client.response();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(r.status == 200 || r.status == 400, "{}", r.status);
    still_serves(&fx, &proxy, "/after");
}

// ---------------------------------------------------------------------------
// What backends send back

/// A response with both framings, or two lengths, or a head past the
/// limit, is a 502; the connection it came on is never used again, so bytes
/// the backend meant as a second answer cannot reach another client.
#[test]
fn ambiguous_backend_framing_gets_502_and_the_connection_is_dropped() {
    let mut fx = Fixture::new("hostile-backend-framing");
    let backend = ScriptedBackend::start(|line| {
        let answer: Vec<u8> = if line.contains("/both ") {
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
              0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"
                .to_vec()
        } else if line.contains("/two-lengths ") {
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 10\r\n\r\nok".to_vec()
        } else if line.contains("/huge-head ") {
            let mut a = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..1200 {
                a.extend_from_slice(format!("x-filler-{i}: {}\r\n", "v".repeat(50)).as_bytes());
            }
            a.extend_from_slice(b"Content-Length: 0\r\n\r\n");
            a
        } else if line.contains("/not-http ") {
            b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec()
        } else {
            echo(line)
        };
        (answer, After::KeepAlive)
    });
    let proxy = over_raw(&mut fx, backend.addr, &[]);
    for path in ["/both", "/two-lengths", "/huge-head", "/not-http"] {
        let r = get(proxy.addr, path, None);
        assert_eq!(r.status, 502, "{path}: {}", r.text());
        assert!(!r.text().contains("smuggled"), "{path}: {}", r.text());
        let next = format!("/next{}", &path[1..]);
        let r = get(proxy.addr, &next, None);
        assert_eq!(r.text(), format!("GET {next} HTTP/1.1"), "after {path}");
        assert_ne!(
            backend.connection_of(&format!("{path} ")),
            backend.connection_of(&next),
            "the connection that answered {path} was used again"
        );
    }
    let log = fx.log("proxy");
    assert!(log.contains("Transfer-Encoding and Content-Length"), "{log}");
    still_serves_any(&fx, &proxy);
}

/// Bytes after a complete answer are not the next answer: the connection is
/// closed, not pooled, and the next request gets its own response.
#[test]
fn bytes_after_a_backend_answer_are_never_read_as_the_next_one() {
    let mut fx = Fixture::new("hostile-backend-extra");
    let backend = ScriptedBackend::start(|line| {
        let answer: Vec<u8> = if line.contains("/extra") {
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"
                .to_vec()
        } else {
            echo(line)
        };
        (answer, After::KeepAlive)
    });
    let proxy = over_raw(&mut fx, backend.addr, &[]);
    let mut client = Raw::connect(proxy.addr);
    client.send(b"GET /extra HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(client.response().text(), "ok");
    for i in 0..3 {
        client.send(format!("GET /next-{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        assert_eq!(client.response().text(), format!("GET /next-{i} HTTP/1.1"));
    }
    assert_ne!(backend.connection_of("/extra"), backend.connection_of("/next-0"));
    // Without the extra bytes, the connection is pooled and used again.
    assert_eq!(backend.connection_of("/next-0"), backend.connection_of("/next-2"));
}

/// A chunked answer that breaks after its head went out cannot be turned
/// into an error page: the client's connection is cut without the last
/// chunk, so the client sees a truncated body (or no answer), never a
/// complete one.
#[test]
fn a_broken_chunked_answer_cuts_the_client_connection() {
    let mut fx = Fixture::new("hostile-backend-chunks");
    let backend = ScriptedBackend::start(|line| {
        let answer: Vec<u8> = if line.contains("/bad-size") {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nmore\r\n0\r\n\r\n".to_vec()
        } else if line.contains("/bad-end") {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n".to_vec()
        } else {
            echo(line)
        };
        (answer, After::KeepAlive)
    });
    let proxy = over_raw(&mut fx, backend.addr, &[]);
    for path in ["/bad-size", "/bad-end"] {
        let mut client = Raw::connect(proxy.addr);
        client.send(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        // Either nothing (the head was still in the proxy's buffer) or a
        // head and a body without its last chunk, then the end.
        let mut got = Vec::new();
        let read = client.stream.read_to_end(&mut got);
        if let Err(e) = &read {
            let hung = matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut);
            assert!(!hung, "{path}: the connection was left open");
        }
        let got = String::from_utf8_lossy(&got);
        assert!(got.is_empty() || got.starts_with("HTTP/1.1 200"), "{path}: {got:?}");
        assert!(
            !got.ends_with("0\r\n\r\n"),
            "{path}: the client got a complete body: {got:?}"
        );
        assert!(!got.contains("more"), "{path}: {got:?}");
    }
    still_serves_any(&fx, &proxy);
}

/// What RFC 9112 frames without a length: 1xx before the answer, HEAD,
/// 204 and 304 (no body whatever their headers say), and a body that ends
/// when the backend closes.
#[test]
fn interim_bodiless_and_close_delimited_answers_are_relayed() {
    let mut fx = Fixture::new("hostile-backend-forms");
    let backend = ScriptedBackend::start(|line| {
        if line.starts_with("HEAD") {
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".to_vec(),
                After::KeepAlive,
            )
        } else if line.contains("/interim") {
            (
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n\
                  HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                    .to_vec(),
                After::KeepAlive,
            )
        } else if line.contains("/no-content") {
            (
                b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n".to_vec(),
                After::KeepAlive,
            )
        } else if line.contains("/not-modified") {
            (
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n".to_vec(),
                After::KeepAlive,
            )
        } else if line.contains("/until-close") {
            (
                b"HTTP/1.1 200 OK\r\n\r\nthe body ends when the backend closes".to_vec(),
                After::Close,
            )
        } else {
            (echo(line), After::KeepAlive)
        }
    });
    let proxy = over_raw(&mut fx, backend.addr, &[]);
    let mut client = Raw::connect(proxy.addr);
    client.send(b"GET /interim HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = client.response();
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    for (request, status) in [
        ("HEAD /head HTTP/1.1", 200),
        ("GET /no-content HTTP/1.1", 204),
        ("GET /not-modified HTTP/1.1", 304),
    ] {
        client.send(format!("{request}\r\nHost: a\r\n\r\n").as_bytes());
        // Nothing but the head comes: the next request's answer follows it.
        let head = read_head(&mut client.stream);
        assert!(head.starts_with(&format!("HTTP/1.1 {status}")), "{request}: {head}");
    }
    client.send(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(client.response().text(), "GET /after HTTP/1.1");
    // All of that went over one backend connection.
    let first = backend.connection_of("/interim");
    assert!(
        backend.requests().iter().all(|(c, _)| *c == first),
        "{:?}",
        backend.requests()
    );
    let r = get(proxy.addr, "/until-close", None);
    assert_eq!(r.text(), "the body ends when the backend closes");
    still_serves_any(&fx, &proxy);
}

/// A pooled connection the backend closed while idle is not handed a
/// request: the request goes out on a fresh connection and is answered.
#[test]
fn connections_the_backend_closed_while_pooled_are_not_used() {
    let mut fx = Fixture::new("hostile-backend-stale");
    let backend = ScriptedBackend::start(|line| {
        // Answers as if keeping the connection, then closes it anyway
        // (as a backend does when its own idle timeout is shorter).
        let after = if line.contains("/then-close") {
            After::Close
        } else {
            After::KeepAlive
        };
        (echo(line), after)
    });
    let proxy = over_raw(&mut fx, backend.addr, &[]);
    for i in 0..5 {
        assert_eq!(get(proxy.addr, &format!("/then-close-{i}"), None).status, 200);
        std::thread::sleep(Duration::from_millis(50));
        let r = get(proxy.addr, &format!("/after-{i}"), None);
        assert_eq!((r.status, r.text()), (200, format!("GET /after-{i} HTTP/1.1")));
    }
    let log = fx.log("proxy");
    assert!(!log.contains("502"), "{log}");
}

/// A backend may answer before it has read the body (413, 401) and close.
/// The client gets that answer while it is still sending, not a 502, and
/// not after a timeout.
#[test]
fn an_early_answer_reaches_the_client_before_its_body_is_sent() {
    let mut fx = Fixture::new("hostile-backend-early");
    let backend = ScriptedBackend::start(|_| {
        (
            b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo long".to_vec(),
            After::Close,
        )
    });
    let proxy = over_raw(&mut fx, backend.addr, &[]);
    let mut client = Raw::connect(proxy.addr);
    client.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000\r\n\r\n");
    client.send(&[b'x'; 16 * 1024]);
    let started = Instant::now();
    let r = client.response();
    assert_eq!((r.status, r.text().as_str()), (413, "too long"));
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // The rest of the body will never be read: the connection closes.
    assert!(client.closed_within(Duration::from_secs(5)));
    still_serves_any(&fx, &proxy);
}

/// A backend that answers first and keeps the connection (it reads or
/// discards the body after answering, as nginx's `return` does) gets the
/// whole body: the client's upload completes, its connection stays open,
/// and the backend connection is used again.
#[test]
fn an_early_answer_that_keeps_the_connection_gets_the_whole_body() {
    let mut fx = Fixture::new("hostile-backend-early-ok");
    let backend = ScriptedBackend::start(|line| (echo(line), After::KeepAlive));
    let proxy = over_raw(&mut fx, backend.addr, &[]);
    let mut client = Raw::connect(proxy.addr);
    let size = 4 * 1024 * 1024;
    client.send(format!("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {size}\r\n\r\n").as_bytes());
    client.send(&vec![b'x'; size]);
    assert_eq!(client.response().text(), "POST /upload HTTP/1.1");
    client.send(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(client.response().text(), "GET /next HTTP/1.1");
    assert_eq!(backend.connection_of("/upload"), backend.connection_of("/next"));
    still_serves_any(&fx, &proxy);
}

/// A backend that answers early, says it keeps the connection, and then
/// reads nothing more cannot hold the client: once the body has made no
/// progress toward it for the upstream timeout, the answer is relayed and
/// the connection dropped.
#[test]
fn a_backend_that_answers_early_and_stops_reading_cannot_hold_the_client() {
    let mut fx = Fixture::new("hostile-backend-early-stall");
    let backend = ScriptedBackend::start(|line| (echo(line), After::Stall));
    let proxy = over_raw(&mut fx, backend.addr, &["--upstream-timeout", "1s"]);
    let mut client = Raw::connect(proxy.addr);
    let size: usize = 256 * 1024 * 1024;
    client.send(format!("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {size}\r\n\r\n").as_bytes());
    let mut writer = client.stream.try_clone().unwrap();
    // Sends until the proxy stops taking bytes (and then closes).
    let feeding = std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        let until = Instant::now() + Duration::from_secs(15);
        for _ in 0..size / chunk.len() {
            if Instant::now() > until || writer.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    let r = client.response();
    assert_eq!(r.text(), "POST /upload HTTP/1.1");
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
    drop(client);
    feeding.join().unwrap();
    still_serves_any(&fx, &proxy);
}

/// Requests sent back to back on one connection are answered in order,
/// whether the plain path serves them (bodiless GETs) or hyper does (the
/// first request with a body hands it the connection and every byte
/// after), and nothing of one request is read as part of another.
#[test]
fn pipelined_requests_are_answered_in_order_on_both_request_paths() {
    let mut fx = Fixture::new("hostile-pipelined");
    let backend = ScriptedBackend::start(|line| (echo(line), After::KeepAlive));
    let proxy = over_raw(&mut fx, backend.addr, &[]);
    let mut client = Raw::connect(proxy.addr);
    client.send(
        b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n\
          GET /two HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n\
          POST /three HTTP/1.1\r\nHost: a\r\nContent-Length: 24\r\n\r\n\
          GET /smuggled HTTP/1.1\r\n\
          GET /four HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    for line in [
        "GET /one HTTP/1.1",
        "GET /two HTTP/1.1",
        "POST /three HTTP/1.1",
        "GET /four HTTP/1.1",
    ] {
        let r = client.response();
        assert_eq!((r.status, r.text()), (200, line.to_string()));
    }
    let lines: Vec<String> = backend.requests().into_iter().map(|(_, line)| line).collect();
    assert!(!lines.iter().any(|l| l.contains("smuggled")), "{lines:?}");
    still_serves_any(&fx, &proxy);
}

/// A chunked answer reaches a plain-path client chunked and whole, with a
/// Date, and the connection carries the next request.
#[test]
fn chunked_answers_are_relayed_whole_on_the_plain_path() {
    let mut fx = Fixture::new("hostile-plain-chunked");
    let backend = ScriptedBackend::start(|line| {
        if line.contains("/chunked") {
            let answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
            (answer.to_vec(), After::KeepAlive)
        } else {
            (echo(line), After::KeepAlive)
        }
    });
    let proxy = over_raw(&mut fx, backend.addr, &[]);
    let mut client = Raw::connect(proxy.addr);
    client.send(b"GET /chunked HTTP/1.1\r\nHost: a\r\n\r\n");
    let head = read_head(&mut client.stream).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
    assert!(head.contains("\r\ndate: "), "{head}");
    let mut body = Vec::new();
    let mut byte = [0u8; 1];
    while !body.ends_with(b"0\r\n\r\n") {
        assert_eq!(
            client.stream.read(&mut byte).unwrap(),
            1,
            "the body ended early: {body:?}"
        );
        body.push(byte[0]);
    }
    let decoded: String = String::from_utf8(body)
        .unwrap()
        .split("\r\n")
        .skip(1)
        .step_by(2)
        .collect();
    assert_eq!(decoded, "hello world");
    client.send(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(client.response().text(), "GET /next HTTP/1.1");
    still_serves_any(&fx, &proxy);
}

/// An answer's hop-by-hop fields (and those its Connection names) never
/// reach the client, on either request path; everything else does, in
/// full: both cookies, one Content-Length for two equal ones, one Date.
#[test]
fn hop_by_hop_answer_fields_stop_at_the_proxy_on_both_request_paths() {
    let mut fx = Fixture::new("hostile-answer-hops");
    let backend = ScriptedBackend::start(|_| {
        let answer = b"HTTP/1.1 200 OK\r\nConnection: X-Hop, keep-alive\r\nX-Hop: secret\r\n\
            Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTrailer: X-T\r\n\
            Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Kept: yes\r\nContent-Length: 2\r\n\
            Content-Length: 2\r\nDate: Tue, 01 Dec 2026 10:00:00 GMT\r\n\r\nok";
        (answer.to_vec(), After::KeepAlive)
    });
    let proxy = over_raw(&mut fx, backend.addr, &[]);
    for request in BOTH_PATHS {
        let mut client = Raw::connect(proxy.addr);
        client.send(request);
        let r = client.response();
        assert_eq!((r.status, r.text().as_str()), (200, "ok"));
        let head: String = r
            .headers
            .iter()
            .map(|(name, value)| format!("\r\n{name}: {value}").to_ascii_lowercase())
            .chain(["\r\n".to_string()])
            .collect();
        for gone in ["x-hop", "keep-alive:", "proxy-connection", "trailer"] {
            assert!(!head.contains(gone), "{gone} reached the client:\n{head}");
        }
        let count = |line: &str| head.matches(line).count();
        assert_eq!(count("\r\nset-cookie: "), 2, "{head}");
        assert_eq!(count("\r\nx-kept: yes\r\n"), 1, "{head}");
        assert_eq!(count("\r\ncontent-length: 2\r\n"), 1, "{head}");
        assert_eq!(count("\r\ndate: tue, 01 dec 2026 10:00:00 gmt\r\n"), 1, "{head}");
        assert_eq!(count("\r\ndate: "), 1, "{head}");
        // The connection carries the next request.
        client.send(request);
        assert_eq!(client.response().status, 200);
    }
    still_serves_any(&fx, &proxy);
}

/// still_serves for a backend that answers any path with 200.
fn still_serves_any(fx: &Fixture, proxy: &Proxy) {
    let log = fx.log("proxy");
    assert!(!log.contains("panicked"), "the proxy panicked:\n{log}");
    assert!(try_get(proxy.addr, "/still").is_some(), "the proxy stopped answering");
}

// ---------------------------------------------------------------------------
// Host and forwarded headers

#[test]
fn duplicate_or_invalid_host_gets_400_and_connection_tokens_cannot_drop_host() {
    let mut fx = Fixture::new("hostile-host");
    let proxy = over_sim(&mut fx, &["--domain", "flow.example.com"]);
    let two = "GET /api/sim/whoami HTTP/1.1\r\nHost: flow.example.com\r\nHost: evil.example\r\n\r\n";
    assert_eq!(Raw::connect(proxy.addr).send(two.as_bytes()).response().status, 400);
    for host in [
        &b"flow.example.com@evil.example"[..],
        // Not ASCII: refused, not trimmed to the name inside (U+00A0 twice).
        b"\xc2\xa0flow.example.com\xc2\xa0",
        b"flow.example.com:99999",
        b"flow.example.com:",
        b"[::1]x",
    ] {
        let head = [&b"GET /api/sim/whoami HTTP/1.1\r\nHost: "[..], host, b"\r\n\r\n"].concat();
        let status = Raw::connect(proxy.addr).send(&head).response().status;
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(host));
    }
    let r = request(
        proxy.addr,
        "GET",
        "/api/sim/whoami",
        &[
            ("Host", "flow.example.com"),
            ("Connection", "close, host, x-forwarded-host, x-forwarded-for"),
        ],
        b"",
    );
    let headers = &r.json()["headers"];
    assert_eq!(headers["host"], "flow.example.com");
    assert_eq!(headers["x-forwarded-host"], "flow.example.com");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    still_serves(&fx, &proxy, "/api/sim/whoami");
}

#[test]
fn forwarded_headers_from_clients_are_replaced_unless_the_peer_is_trusted() {
    let spoofed = [
        ("Host", "flow.example.com"),
        ("X-Forwarded-Host", "evil.example"),
        ("X-Forwarded-For", "203.0.113.66"),
        ("x-forwarded-for", "203.0.113.67"),
        ("X-Forwarded-Proto", "gopher"),
        ("X-FORWARDED-PORT", "1"),
        ("X-Forwarded-Prefix", "/admin"),
        ("Forwarded", "for=203.0.113.66;host=evil.example"),
        ("X-Real-IP", "203.0.113.66"),
    ];
    let mut fx = Fixture::new("hostile-forwarded");
    let proxy = over_sim(&mut fx, &[]);
    for send in BOTH_WAYS {
        let headers = send(proxy.addr, "/api/sim/whoami", &spoofed).json()["headers"].clone();
        assert_eq!(headers["x-forwarded-host"], "flow.example.com");
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-port"], proxy.addr.port().to_string());
        for gone in ["x-forwarded-prefix", "forwarded", "x-real-ip"] {
            assert!(headers.get(gone).is_none(), "{gone} reached Flow: {headers}");
        }
    }
    still_serves(&fx, &proxy, "/api/sim/whoami");

    // A proxy in front that the operator trusts: its chain is appended to.
    let mut fx = Fixture::new("hostile-forwarded-trusted");
    let proxy = over_sim(&mut fx, &["--trusted-proxy", "127.0.0.0/8"]);
    for send in BOTH_WAYS {
        let headers = send(proxy.addr, "/api/sim/whoami", &spoofed).json()["headers"].clone();
        assert_eq!(headers["x-forwarded-for"], "203.0.113.66, 127.0.0.1");
        assert_eq!(headers["x-real-ip"], "203.0.113.66");
        assert_eq!(headers["x-forwarded-prefix"], "/admin");
        assert_eq!(
            headers["x-forwarded-host"], "flow.example.com",
            "the proxy sets it itself"
        );
        assert_eq!(headers["x-forwarded-proto"], "http");
    }
    still_serves(&fx, &proxy, "/api/sim/whoami");
}

#[test]
fn hop_by_hop_request_fields_stop_at_the_proxy_on_both_request_paths() {
    let sent = [
        ("Host", "flow.example.com"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Authorization", "Basic c2VjcmV0"),
        ("Proxy-Connection", "keep-alive"),
        ("Trailer", "X-Checksum"),
        ("X-Kept", "yes"),
        ("x-kept", "too"),
        ("Cookie", "a=1"),
    ];
    let mut fx = Fixture::new("hostile-hop-request");
    let proxy = over_sim(&mut fx, &[]);
    for send in BOTH_WAYS {
        let headers = send(proxy.addr, "/api/sim/whoami", &sent).json()["headers"].clone();
        for gone in ["keep-alive", "proxy-authorization", "proxy-connection", "trailer"] {
            assert!(headers.get(gone).is_none(), "{gone} reached Flow: {headers}");
        }
        assert_eq!(headers["x-kept"], "yes, too");
        assert_eq!(headers["cookie"], "a=1");
        assert_eq!(headers["host"], "flow.example.com");
    }
    still_serves(&fx, &proxy, "/api/sim/whoami");
}

/// The two ways a GET reaches the proxy: hyper's (a body length and
/// `Connection: close` send it there) and the plain keep-alive path's.
const BOTH_WAYS: [Get; 2] = [closing_get, kept_alive_get];

/// A GET to the proxy at an address, for a path, with these fields.
type Get = fn(SocketAddr, &str, &[(&str, &str)]) -> Response;

fn closing_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    request(addr, "GET", path, headers, b"")
}

/// A GET with no body and no Connection field, on a connection left open.
fn kept_alive_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    let fields: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    Raw::connect(addr)
        .send(format!("GET {path} HTTP/1.1\r\n{fields}\r\n").as_bytes())
        .response()
}

// ---------------------------------------------------------------------------
// Limits and timeouts

#[test]
fn a_trickled_or_stalled_body_gets_408() {
    let mut fx = Fixture::new("hostile-slow-body");
    let proxy = over_sim(&mut fx, &["--body-timeout", "1s", "--body-min-rate", "500"]);
    // One byte every 300 ms never trips an inactivity timeout; the rate does.
    let started = Instant::now();
    let mut client = Raw::connect(proxy.addr);
    client.send(b"POST /api/sim/echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n");
    let trickler = client.stream.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        let mut s = trickler;
        for _ in 0..40 {
            if s.write_all(b"x").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let r = client.response();
    assert_eq!(r.status, 408, "{}", r.text());
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "took {:?}",
        started.elapsed()
    );
    assert!(client.closed_within(Duration::from_secs(5)));
    trickle.join().unwrap();
    // A body that stops: 408 after the inactivity timeout.
    let started = Instant::now();
    let mut client = Raw::connect(proxy.addr);
    client.send(b"POST /api/sim/echo HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc");
    assert_eq!(client.response().status, 408);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    still_serves(&fx, &proxy, "/api/sim/whoami");
}

#[test]
fn a_slow_backend_gets_504_after_the_upstream_timeout() {
    let mut fx = Fixture::new("hostile-upstream-timeout");
    // A backend that accepts and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let held = std::thread::spawn(move || {
        let mut kept = Vec::new();
        silent.set_nonblocking(true).unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Ok((s, _)) = silent.accept() {
                kept.push(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let proxy = fx.proxy(
        "proxy",
        &["--backend", &addr, "--no-health-check", "--upstream-timeout", "1s"],
    );
    let started = Instant::now();
    let r = get(proxy.addr, "/", None);
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.text().contains("did not answer in 1s"), "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(5));
    held.join().unwrap();
    assert!(!fx.log("proxy").contains("panicked"));
}

/// The two ways a request reaches the proxy's HTTP/1.1 side: a bodyless
/// keep-alive GET (its own path) and a POST with a length (hyper's).
const BOTH_PATHS: [&[u8]; 2] = [
    b"GET /stream HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /stream HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
];

/// A proxy over `backend` with a 1 s body timeout.
fn with_body_timeout(fx: &mut Fixture, backend: &str) -> Proxy {
    fx.proxy(
        "proxy",
        &[
            "--backend",
            backend,
            "--no-health-check",
            "--upstream-body-timeout",
            "1s",
        ],
    )
}

/// Sends `request` on a new connection and reads a 200 head; when it was sent.
fn answered_200(proxy: &Proxy, request: &[u8]) -> (Instant, Raw) {
    let started = Instant::now();
    let mut client = Raw::connect(proxy.addr);
    client.send(request);
    let head = read_head(&mut client.stream);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    (started, client)
}

#[test]
fn a_backend_that_stalls_mid_body_is_cut_off_after_the_body_timeout() {
    let mut fx = Fixture::new("hostile-body-stall");
    // 10 of the 100 bytes promised, then silence for 10 s.
    let backend = ScriptedBackend::start(|_| {
        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789";
        (answer.to_vec(), After::Stall)
    });
    let proxy = with_body_timeout(&mut fx, &backend.addr.to_string());
    for request in BOTH_PATHS {
        let (started, mut client) = answered_200(&proxy, request);
        let mut body = Vec::new();
        // The read timeout is 10 s: a proxy that waits for ever fails here.
        let end = client.stream.read_to_end(&mut body);
        assert!(end.is_ok(), "the connection stayed open: {end:?}");
        assert_eq!(
            body, b"0123456789",
            "only what came is relayed, then the connection closes"
        );
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(6),
            "cut off after {took:?}"
        );
    }
    let log = fx.log("proxy");
    assert!(log.contains("the response body stalled: no byte for 1s"), "{log}");
    still_serves_any(&fx, &proxy);
}

#[test]
fn a_body_that_keeps_streaming_outlives_the_body_timeout() {
    let mut fx = Fixture::new("hostile-body-steady");
    // Six chunks 400 ms apart: 2.4 s in all, never silent for the 1 s limit.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let streamer = std::thread::spawn(move || {
        for _ in 0..BOTH_PATHS.len() {
            let (mut stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let _ = read_head(&mut stream);
            // Connection: close, so the next request comes on a new
            // connection rather than racing this one's close (a POST is not
            // sent again on another).
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
                .unwrap();
            for _ in 0..6 {
                std::thread::sleep(Duration::from_millis(400));
                stream.write_all(b"5\r\nhello\r\n").unwrap();
            }
            stream.write_all(b"0\r\n\r\n").unwrap();
        }
    });
    let proxy = with_body_timeout(&mut fx, &addr);
    for request in BOTH_PATHS {
        let (started, mut client) = answered_200(&proxy, request);
        let mut body = Vec::new();
        let mut buf = [0u8; 256];
        while !body.ends_with(b"0\r\n\r\n") {
            match client.stream.read(&mut buf) {
                Ok(n) if n > 0 => body.extend_from_slice(&buf[..n]),
                other => panic!(
                    "the stream ended early ({other:?}) after {:?}",
                    String::from_utf8_lossy(&body)
                ),
            }
        }
        let text = String::from_utf8_lossy(&body);
        assert_eq!(text.matches("hello").count(), 6, "{text}");
        assert!(started.elapsed() > Duration::from_secs(2), "{:?}", started.elapsed());
    }
    streamer.join().unwrap();
    assert!(!fx.log("proxy").contains("stalled"), "{}", fx.log("proxy"));
}

#[test]
fn error_pages_name_no_address_and_no_os_error() {
    let mut fx = Fixture::new("hostile-error-pages");
    // A port nobody listens on.
    let dead = format!("127.0.0.1:{}", free_port());
    let proxy = fx.proxy("proxy", &["--backend", &dead, "--no-health-check"]);
    let port = dead.rsplit(':').next().unwrap().to_string();
    for _ in 0..2 {
        let r = get(proxy.addr, "/", None);
        assert!(r.status == 502 || r.status == 503, "{}", r.status);
        let text = r.text();
        for secret in ["127.0.0.1", port.as_str(), "refused", "os error", "connect"] {
            assert!(!text.contains(secret), "the error page shows '{secret}': {text}");
        }
        assert!(text.contains("Flow instance"), "{text}");
    }
    // The details are in the log for the operator.
    assert!(fx.log("proxy").contains(&port), "{}", fx.log("proxy"));
}

#[test]
fn websocket_sessions_count_against_max_connections() {
    let mut fx = Fixture::new("hostile-max-conn-ws");
    let proxy = over_sim(&mut fx, &["--max-connections", "4"]);
    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(ws_open(proxy.addr));
    }
    wait_for(Duration::from_secs(5), || proxy.total("ws_active") == 4);
    // Further clients wait: 16 more never get a handshake answer while the
    // four sessions are open.
    let mut waiting: Vec<TcpStream> = (0..16)
        .map(|_| {
            let mut s = TcpStream::connect(proxy.addr).unwrap();
            s.write_all(handshake("/ws", "").as_bytes()).unwrap();
            s
        })
        .collect();
    wait_for(Duration::from_secs(5), || proxy.total("ws_active") == 4);
    assert_eq!(proxy.total("ws_active"), 4, "sessions opened beyond max_connections");
    for s in &mut waiting {
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut buf = [0u8; 16];
        assert!(s.read(&mut buf).is_err(), "a waiting client was answered");
    }
    // Open sessions are never closed to make room; one that ends frees a slot.
    drop(waiting);
    let first = open.remove(0);
    drop(first);
    wait_for(Duration::from_secs(5), || proxy.total("ws_active") == 3);
    open.push(ws_open(proxy.addr));
    wait_for(Duration::from_secs(5), || proxy.total("ws_active") == 4);
    drop(open);
    still_serves(&fx, &proxy, "/api/sim/whoami");
}

#[test]
fn one_address_cannot_take_more_than_its_share() {
    let mut fx = Fixture::new("hostile-per-ip");
    let proxy = over_sim(&mut fx, &["--max-connections-per-ip", "3"]);
    let held: Vec<Raw> = (0..3)
        .map(|_| {
            let mut c = Raw::connect(proxy.addr);
            c.send(b"GET /api/sim/whoami HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_eq!(c.response().status, 200);
            c
        })
        .collect();
    let mut fourth = Raw::connect(proxy.addr);
    let _ = fourth
        .stream
        .write_all(b"GET /api/sim/whoami HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(
        fourth.closed_within(Duration::from_secs(5)),
        "a fourth connection from one address was served"
    );
    // Another address is served meanwhile.
    let mut other = Raw::connect_from("127.0.0.2", proxy.addr);
    other.send(b"GET /api/sim/whoami HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(other.response().status, 200);
    drop(held);
    wait_for(Duration::from_secs(5), || {
        let mut c = Raw::connect(proxy.addr);
        let _ = c
            .stream
            .write_all(b"GET /api/sim/whoami HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let head = read_head(&mut c.stream);
        head.starts_with("HTTP/1.1 200")
    });
    still_serves(&fx, &proxy, "/api/sim/whoami");
}

#[test]
fn idle_connections_are_closed_after_the_keepalive_timeout() {
    let mut fx = Fixture::new("hostile-idle");
    let proxy = over_sim(&mut fx, &["--keepalive-timeout", "2s", "--header-timeout", "1s"]);
    // HTTP/1.1, idle after one request.
    let mut h1 = Raw::connect(proxy.addr);
    h1.send(b"GET /api/sim/whoami HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(h1.response().status, 200);
    // HTTP/2 with prior knowledge: the preface and SETTINGS, then nothing.
    let mut h2 = Raw::connect(proxy.addr);
    h2.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00");
    let started = Instant::now();
    assert!(
        h2.closed_within(Duration::from_secs(8)),
        "an idle HTTP/2 connection stayed open"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "closed too early: {:?}",
        started.elapsed()
    );
    assert!(
        h1.closed_within(Duration::from_secs(3)),
        "an idle HTTP/1.1 connection stayed open"
    );
    // A second request head that starts and stalls gets the head timeout.
    let mut slow = Raw::connect(proxy.addr);
    slow.send(b"GET /api/sim/whoami HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(slow.response().status, 200);
    slow.send(b"GET /api/sim/whoami HTTP/1.1\r\n");
    let started = Instant::now();
    assert!(slow.closed_within(Duration::from_secs(5)));
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "took {:?}",
        started.elapsed()
    );
    still_serves(&fx, &proxy, "/api/sim/whoami");
}

// ---------------------------------------------------------------------------
// WebSocket sessions

/// A WebSocket handshake head for `path`, with `extra` header lines
/// (each ending in CRLF) before the empty line.
fn handshake(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: flow.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
}

/// An open WebSocket session on a raw socket.
fn ws_open(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(handshake("/ws", "").as_bytes()).unwrap();
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

/// A client frame: masked with a fixed key (or not, when `mask` is false).
fn client_frame(first: u8, payload: &[u8], mask: bool) -> Vec<u8> {
    let key = [0x11, 0x22, 0x33, 0x44];
    let mut out = vec![first];
    let m = if mask { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(m | n as u8),
        n if n < 65536 => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if mask {
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// The frames a server sends, read one at a time: bytes a read brings past
/// the current frame stay for the next.
#[derive(Default)]
struct ServerFrames {
    buf: Vec<u8>,
}

impl ServerFrames {
    /// The next frame as (first byte, payload), or what came instead.
    fn next(&mut self, s: &mut TcpStream) -> Result<(u8, Vec<u8>), String> {
        let mut chunk = [0u8; 65536];
        loop {
            if let Some((first, start, len)) = self.header()? {
                if self.buf.len() >= start + len {
                    let payload = self.buf[start..start + len].to_vec();
                    self.buf.drain(..start + len);
                    return Ok((first, payload));
                }
            }
            match s.read(&mut chunk) {
                Ok(0) => {
                    return Err(format!(
                        "the stream ended with {} bytes of a frame unread",
                        self.buf.len()
                    ));
                }
                Err(e) => return Err(format!("no frame ({e}) with {} bytes unread", self.buf.len())),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// (first byte, payload start, payload length) once the header is here.
    fn header(&self) -> Result<Option<(u8, usize, usize)>, String> {
        let b = &self.buf;
        if b.len() < 2 {
            return Ok(None);
        }
        if b[1] & 0x80 != 0 {
            return Err(format!("a masked frame from the server: {:02x?}", &b[..2]));
        }
        Ok(match b[1] & 0x7f {
            126 if b.len() >= 4 => Some((b[0], 4, u16::from_be_bytes([b[2], b[3]]) as usize)),
            127 if b.len() >= 10 => {
                let len = u64::from_be_bytes(b[2..10].try_into().unwrap());
                Some((
                    b[0],
                    10,
                    usize::try_from(len).map_err(|_| format!("a frame of {len} bytes"))?,
                ))
            }
            126 | 127 => None,
            n => Some((b[0], 2, n as usize)),
        })
    }
}

/// Reads frames until a close frame and returns its code; what came
/// instead (end of stream, timeout, a close without a code) as the error.
fn close_code(frames: &mut ServerFrames, s: &mut TcpStream) -> Result<u16, String> {
    loop {
        let (first, payload) = frames.next(s)?;
        if first & 0x0f == 8 {
            return match payload[..] {
                [a, b, ..] => Ok(u16::from_be_bytes([a, b])),
                _ => Err(format!("a close frame without a code: {payload:02x?}")),
            };
        }
    }
}

#[test]
fn protocol_violations_from_clients_close_the_session_with_1002() {
    let mut fx = Fixture::new("hostile-ws-frames");
    let proxy = over_sim(&mut fx, &[]);
    let mut huge = vec![0x82, 0xff];
    huge.extend_from_slice(&u64::MAX.to_be_bytes());
    huge.extend_from_slice(&[1, 2, 3, 4]);
    let cases: [(&str, Vec<u8>); 4] = [
        ("2^63-length frame", huge),
        ("unmasked frame", client_frame(0x81, b"hello", false)),
        ("reserved opcode 3", client_frame(0x83, b"x", true)),
        ("reserved control opcode 0xB", client_frame(0x8b, b"", true)),
    ];
    for (name, bytes) in cases {
        let mut s = ws_open(proxy.addr);
        wait_for(Duration::from_secs(5), || proxy.total("ws_active") == 1);
        s.write_all(&bytes).unwrap();
        assert_eq!(close_code(&mut ServerFrames::default(), &mut s), Ok(1002), "{name}");
        wait_for(Duration::from_secs(5), || proxy.total("ws_active") == 0);
    }
    still_serves(&fx, &proxy, "/api/sim/whoami");
}

#[test]
fn a_fragment_flood_is_relayed_without_growing_the_proxy() {
    let mut fx = Fixture::new("hostile-ws-fragments");
    let proxy = over_sim(&mut fx, &[]);
    let mut s = ws_open(proxy.addr);
    let mut flood = client_frame(0x01, b"a", true);
    for _ in 0..20_000 {
        flood.extend_from_slice(&client_frame(0x00, b"b", true));
    }
    flood.extend_from_slice(&client_frame(0x80, b"c", true));
    let writer = s.try_clone().unwrap();
    let send = std::thread::spawn(move || {
        let mut w = writer;
        w.write_all(&flood).unwrap();
    });
    // The simulator echoes frame by frame: a text frame, 20,000
    // continuations and the final one, a byte each.
    let mut frames = ServerFrames::default();
    let mut kinds = Vec::new();
    let mut bytes = 0;
    loop {
        let (first, payload) = frames
            .next(&mut s)
            .unwrap_or_else(|e| panic!("after {} frames of the echo: {e}", kinds.len()));
        kinds.push(first & 0x0f);
        bytes += payload.len();
        if first & 0x80 != 0 {
            break;
        }
    }
    send.join().unwrap();
    assert_eq!((kinds.len(), bytes), (20_002, 20_002), "the whole message came back");
    assert_eq!(kinds[0], 1, "a text message came back");
    assert!(kinds[1..].iter().all(|&k| k == 0), "the rest are its continuations");
    s.write_all(&client_frame(0x88, &1000u16.to_be_bytes(), true)).unwrap();
    assert_eq!(close_code(&mut frames, &mut s), Ok(1000));
    // The client never closes its end: the proxy ends the session anyway
    // once both sides have sent their close frames.
    wait_for(Duration::from_secs(10), || proxy.total("ws_active") == 0);
    drop(s);
    still_serves(&fx, &proxy, "/api/sim/whoami");
}

/// A client that sends and never reads: the echo fills the socket buffers.
fn stop_reading(proxy: &Proxy) -> (TcpStream, std::thread::JoinHandle<()>) {
    let s = ws_open(proxy.addr);
    // A small receive buffer, so the proxy's writes block sooner.
    let writer = s.try_clone().unwrap();
    let message = client_frame(0x82, &vec![7u8; 60_000], true);
    let send = std::thread::spawn(move || {
        let mut w = writer;
        w.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
        let until = Instant::now() + Duration::from_secs(15);
        while Instant::now() < until {
            if w.write_all(&message).is_err() {
                return;
            }
        }
    });
    (s, send)
}

#[test]
fn a_websocket_client_that_stops_reading_is_freed_within_the_write_timeout() {
    let mut fx = Fixture::new("hostile-ws-stuck");
    let proxy = over_sim(&mut fx, &["--write-timeout", "2s"]);
    let (held, send) = stop_reading(&proxy);
    wait_for(Duration::from_secs(5), || proxy.total("ws_active") == 1);
    let started = Instant::now();
    wait_for(Duration::from_secs(20), || proxy.total("ws_active") == 0);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "freed before the client stalled"
    );
    send.join().unwrap();
    drop(held);
    still_serves(&fx, &proxy, "/api/sim/whoami");
}

#[test]
fn a_websocket_client_that_stops_reading_is_freed_at_once_on_drain() {
    let mut fx = Fixture::new("hostile-ws-stuck-drain");
    let proxy = over_sim(&mut fx, &["--write-timeout", "60s"]);
    let (held, send) = stop_reading(&proxy);
    wait_for(Duration::from_secs(5), || proxy.total("ws_active") == 1);
    // The buffers are full once the client can send no more: the proxy has
    // stopped reading from it because it is stuck writing to it.
    wait_for(Duration::from_secs(20), || send.is_finished());
    let id = proxy.backends()[0]["id"].as_str().unwrap().to_string();
    let started = Instant::now();
    let r = proxy.admin("DELETE", &format!("/api/v1/backends/{id}?drain=0"), "");
    assert_eq!(r.status, 202, "{}", r.text());
    wait_for(Duration::from_secs(10), || proxy.backends().is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "took {:?}",
        started.elapsed()
    );
    send.join().unwrap();
    drop(held);
    assert!(!fx.log("proxy").contains("panicked"));
}

// ---------------------------------------------------------------------------
// The admin API

#[test]
fn drain_values_out_of_range_get_400_and_never_panic() {
    let mut fx = Fixture::new("hostile-admin-drain");
    let proxy = over_sim(&mut fx, &[]);
    let id = proxy.backends()[0]["id"].as_str().unwrap().to_string();
    for value in [
        "1e300",
        "-1",
        "NaN",
        "inf",
        "3601",
        "2h",
        "99999999999999999999d",
        "abc",
    ] {
        let r = proxy.admin("DELETE", &format!("/api/v1/backends/{id}?drain={value}"), "");
        assert_eq!(r.status, 400, "drain={value}: {}", r.text());
        assert!(r.text().contains("0 to 3600"), "drain={value}: {}", r.text());
    }
    assert_eq!(proxy.backends()[0]["state"], "healthy");
    // The scheme is case-insensitive.
    let r = request(
        proxy.admin,
        "GET",
        "/api/v1/backends",
        &[("Authorization", &format!("bearer {}", proxy.token))],
        b"",
    );
    assert_eq!(r.status, 200);
    still_serves(&fx, &proxy, "/api/sim/whoami");
}

#[test]
fn the_admin_server_bounds_slow_heads() {
    let mut fx = Fixture::new("hostile-admin-slow");
    let proxy = over_sim(&mut fx, &[]);
    let mut slow = Raw::connect(proxy.admin);
    slow.send(b"GET /api/v1/backends HTTP/1.1\r\n");
    let started = Instant::now();
    assert!(
        slow.closed_within(Duration::from_secs(20)),
        "a slow head held the admin server"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(proxy.backends().len(), 1);
}

#[test]
fn concurrent_admin_changes_keep_the_backend_list_whole() {
    let mut fx = Fixture::new("hostile-admin-race");
    let proxy = over_sim(&mut fx, &[]);
    let state = fx.dir.join("proxy-state");
    let adders: Vec<_> = (0..8)
        .map(|i| {
            let (admin, token) = (proxy.admin, proxy.token.clone());
            std::thread::spawn(move || {
                let client = Proxy {
                    addr: admin,
                    admin,
                    token,
                };
                for j in 0..5 {
                    let body = format!("{{\"address\": \"127.0.0.1:{}\"}}", 20_000 + i * 10 + j);
                    assert_eq!(client.admin("POST", "/api/v1/backends", &body).status, 201);
                }
            })
        })
        .collect();
    for a in adders {
        a.join().unwrap();
    }
    let saved: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(state.join("backends.json")).unwrap()).unwrap();
    assert_eq!(saved.len(), 40, "the saved list lost or tore entries");
    let temporary: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(temporary.is_empty(), "temporary files left: {temporary:?}");
    still_serves(&fx, &proxy, "/api/sim/whoami");
}

// ---------------------------------------------------------------------------
// The sticky cookie

#[test]
fn the_sticky_cookie_is_http_only_same_site_and_secure_over_tls() {
    let mut fx = Fixture::new("hostile-sticky");
    let sim = fx.sim_flow("flow-1").to_string();
    let tls_port = free_port().to_string();
    let tls_listen = format!("127.0.0.1:{tls_port}");
    let proxy = fx.proxy(
        "proxy",
        &[
            "--backend",
            &sim,
            "--sticky-cookie",
            "fg",
            "--domain",
            "flow.example.com",
            "--tls",
            "self-signed",
            "--tls-listen",
            &tls_listen,
            "--no-redirect",
        ],
    );
    proxy.wait_healthy(1);
    let plain = get(proxy.addr, "/api/sim/whoami", Some("flow.example.com"));
    let cookie = plain.header("set-cookie").expect("a sticky cookie").to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP cannot keep a Secure cookie: {cookie}"
    );
    let ca = fx.dir.join("proxy-state").join("ca.pem");
    let head = run(std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-D", "-", "--cacert"])
        .arg(&ca)
        .args(["--resolve", &format!("flow.example.com:{tls_port}:127.0.0.1")])
        .arg(format!("https://flow.example.com:{tls_port}/api/sim/whoami")));
    let secure = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie over TLS: {head}"));
    assert!(
        secure.contains("Secure") && secure.contains("HttpOnly") && secure.contains("SameSite=Lax"),
        "{secure}"
    );
    still_serves(&fx, &proxy, "/api/sim/whoami");
}

#[test]
fn the_rebalance_endpoint_takes_only_known_services() {
    let mut fx = Fixture::new("hostile-admin-rebalance");
    let proxy = over_sim(&mut fx, &[]);
    let long = "a".repeat(4000);
    for service in ["nope", "%ZZ%00", "%2e%2e%2fflow", "flow%20", long.as_str(), ""] {
        for method in ["POST", "GET"] {
            let r = proxy.admin(method, &format!("/api/v1/rebalance?service={service}"), "");
            assert_eq!(r.status, 404, "{method} service={service}: {}", r.text());
            assert!(r.text().contains("no service"), "{}", r.text());
        }
    }
    for method in ["PUT", "DELETE", "PATCH"] {
        assert_eq!(proxy.admin(method, "/api/v1/rebalance", "").status, 405, "{method}");
    }
    // Without the token, nothing starts.
    let r = request(proxy.admin, "POST", "/api/v1/rebalance", &[], b"");
    assert_eq!(r.status, 401);
    // The known service, by default: one instance is even at once.
    let first = proxy.admin("POST", "/api/v1/rebalance", "");
    assert_eq!(first.status, 202, "{}", first.text());
    wait_for(Duration::from_secs(5), || {
        proxy.admin("GET", "/api/v1/rebalance", "").json()["running"] == false
    });
    let report = proxy.admin("GET", "/api/v1/rebalance?service=flow", "").json();
    assert_eq!(report["balanced"], true, "{report}");
    still_serves(&fx, &proxy, "/api/sim/whoami");
}
