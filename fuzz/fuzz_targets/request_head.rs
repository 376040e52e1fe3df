//! Fuzzes the proxy's request-head path with arbitrary bytes: finding where
//! a head ends (CRLF or bare LF), parsing it as hyper does (httparse), then
//! the proxy's own checks and rewrites (framing, Host, forwarded headers).
//! Nothing may panic, and what reaches a backend must hold the proxy's
//! rules: one valid Host equal to the routed one, no hop-by-hop header, and
//! forwarded headers only as the proxy set them.

#![no_main]

use flowgate::config::proxy::Service;
use flowgate::proxy::conn::{ConnInfo, Scheme};
use flowgate::proxy::headers::{check_framing, check_upgrade_framing, prepare_request_headers, request_host};
use flowgate::websocket::peer::find_head_end;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(end) = find_head_end(data) else { return };
    assert!(end <= data.len());
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut slots);
    let Ok(httparse::Status::Complete(_)) = parsed.parse(&data[..end]) else { return };
    let (Some(method), Some(path), Some(version)) = (parsed.method, parsed.path, parsed.version) else { return };
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .version(if version == 0 { Version::HTTP_10 } else { Version::HTTP_11 });
    for h in parsed.headers.iter() {
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_bytes(h.value)) else {
            return;
        };
        builder = builder.header(name, value);
    }
    let Ok(req) = builder.body(()) else { return };
    let framing = check_framing(&req);
    let _ = check_upgrade_framing(req.headers());
    let Ok(host) = request_host(&req) else { return };
    if framing.is_err() {
        return;
    }
    let (mut parts, ()) = req.into_parts();
    let conn = ConnInfo::new("192.0.2.1:4000".parse().unwrap(), Scheme::Https, 443);
    prepare_request_headers(&mut parts.headers, &parts.uri, &conn, &Service::new("flow"));
    let hosts: Vec<_> = parts.headers.get_all("host").iter().collect();
    if parts.uri.authority().is_none() {
        assert_eq!(hosts.len(), 1, "exactly one Host goes to the backend");
        let sent = hosts[0].to_str().unwrap_or("").to_ascii_lowercase();
        assert!(sent.starts_with(host.trim_start_matches('[')) || sent.starts_with('['), "{sent} vs {host}");
    }
    for hop in ["connection", "keep-alive", "te", "transfer-encoding", "upgrade", "proxy-connection", "trailer"] {
        assert!(!parts.headers.contains_key(hop), "{hop} reached the backend");
    }
    assert_eq!(parts.headers["x-forwarded-for"], "192.0.2.1");
    assert_eq!(parts.headers["x-forwarded-proto"], "https");
    for claimed in ["forwarded", "x-real-ip"] {
        assert!(!parts.headers.contains_key(claimed), "{claimed} from the client reached the backend");
    }
});
