//! Whole-system tests of the HTTP surface: tokens, routes, bounds, slow clients.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use protocol::baseline::Manifest;

#[test]
fn baseline_endpoint_serves_a_manifest_the_key_verifies() {
    let a = Appliance::new();
    let m = Running::start(&a);
    let (code, body) = get(m.addr, "/api/v1/baseline").unwrap();
    assert_eq!(code, 200);
    let manifest = Manifest::parse(body.trim_end().as_bytes()).expect("manifest");
    manifest
        .verify(Some(&[0x42u8; 32]))
        .expect("HMAC verifies with the key");
    assert_eq!(manifest.entries.len(), 9);
    assert!(manifest.verify(Some(&[0x43u8; 32])).is_err());
}

#[test]
fn a_manifest_larger_than_a_part_is_relayed_whole_and_exact() {
    // About 15,000 entries: a manifest of three 1 MiB parts.
    let a = Appliance::new();
    for d in 0..15 {
        for i in 0..1000 {
            a.write(&format!("models/d{d:02}/f{i:04}.bin"), "x");
        }
    }
    let m = Running::start(&a);
    let stored = std::fs::read(a.path("state/baseline.json")).unwrap();
    assert!(
        stored.len() > 2 * protocol::message::BASELINE_PART,
        "{} bytes",
        stored.len()
    );
    let (code, body) = get(m.addr, "/api/v1/baseline").unwrap();
    assert_eq!(code, 200);
    assert!(
        body.as_bytes() == stored.as_slice(),
        "{} bytes relayed, {} stored",
        body.len(),
        stored.len()
    );
    assert_eq!(m.verify_code(), 200, "relaying cost the hasher no trust");
}

#[test]
fn a_flood_of_bad_tokens_fills_neither_the_audit_log_nor_stderr() {
    let a = Appliance::new();
    let log = a.path("stderr.log");
    let file = std::fs::File::create(&log).unwrap();
    let m = Running::start_with_stderr(&a, &[], file.into());
    for _ in 0..300 {
        let (code, _) = post(m.addr, "/api/v1/scan", Some("wrong-token-0123456789abcdef")).unwrap();
        assert_eq!(code, 403);
    }
    assert_eq!(m.verify_code(), 200, "the flood changed no verdict");
    // Written at most 20 a minute, the rest counted: in the audit log and on stderr alike.
    let deadline = Duration::from_secs(10);
    assert!(wait_until(deadline, || a.count_events("auth_refused") == 20));
    let text = std::fs::read(&log).unwrap();
    let lines = String::from_utf8_lossy(&text);
    let refused = lines
        .lines()
        .filter(|l| l.contains("request refused: bad or missing token"))
        .count();
    assert_eq!(refused, 20, "stderr is rate-limited with the audit log");
    assert!(
        text.len() < 64 * 1024,
        "stderr grew by {} bytes",
        text.len()
    );
    // stderr is a file here, not a terminal: no colour codes.
    assert!(
        !text.contains(&0x1b),
        "ANSI escapes on a stderr that is not a terminal"
    );
}

#[test]
fn mutations_need_the_token_and_routes_are_strict() {
    let a = Appliance::new();
    let m = Running::start(&a);
    tamper(&a, BINARIES[0]);
    m.scan();
    // RFC 6750: no credentials 401 (with a Bearer challenge), wrong credentials 403.
    for (token, status) in [(None, 401), (Some("wrong-token-0123456789abcdef"), 403)] {
        for path in ["/api/v1/rebaseline", "/api/v1/scan", "/api/v1/reload"] {
            let (code, body) = post(m.addr, path, token).unwrap();
            assert_eq!(code, status, "{path} {body}");
            assert!(body.contains("\"error\""), "{body}");
        }
    }
    assert_eq!(m.status()["state"], "degraded");
    assert_eq!(a.count_events("auth_refused"), 6);
    let (code, body) = request(
        m.addr,
        "POST",
        "/api/v1/rebaseline",
        &[("Authorization", "Basic abc")],
        b"",
    )
    .unwrap();
    assert_eq!(code, 401, "not a bearer token: {body}");

    let before = m.status()["baseline"]["digest"].clone();
    // The service token, right as it is, no longer makes a baseline: it crosses the api.
    let (code, body) = post(m.addr, "/api/v1/rebaseline", Some(TOKEN)).unwrap();
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("integrity-monitor rebaseline --key"),
        "{body}"
    );
    let (code, body) = rebaseline(m.addr, &a.key()).unwrap();
    assert_eq!(code, 200, "{body}");
    let s = m.status();
    assert_eq!(s["state"], "trusted");
    assert_ne!(s["baseline"]["digest"], before);
    assert_eq!(a.count_events("rebaseline"), 1);
    assert_eq!(m.verify_code(), 200);

    assert_eq!(get(m.addr, "/api/v1/rebaseline").unwrap().0, 405);
    assert_eq!(post(m.addr, "/api/v1/verify", Some(TOKEN)).unwrap().0, 405);
    assert_eq!(get(m.addr, "/api/v1/nope").unwrap().0, 404);
    let big = vec![b'x'; 5000];
    let auth = format!("Bearer {TOKEN}");
    assert_eq!(
        request(
            m.addr,
            "POST",
            "/api/v1/scan",
            &[("Authorization", &auth)],
            &big
        )
        .unwrap()
        .0,
        413
    );
    // hyper answers these itself; the answer still carries a JSON error body, and the api
    // reads what is left of the request before closing, so the client sees it (no reset).
    let huge_header = "h".repeat(64 * 1024);
    let (code, body) = request(m.addr, "GET", "/health", &[("X-Big", &huge_header)], b"").unwrap();
    assert_eq!(code, 431, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], "header_too_large", "{body}");
    let (code, body) = raw_answer(m.addr, b"GET /health HTTP/1.1\r\nBad Header\r\n\r\n");
    assert_eq!(code, 400, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], "bad_request", "{body}");
    assert_eq!(
        get(m.addr, "/health").unwrap().0,
        200,
        "still serving after abuse"
    );
}

/// Sends `head` as raw bytes and returns the status code (0: none) and body of the answer.
fn raw_answer(addr: std::net::SocketAddr, head: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(head).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (code, body)
}

fn raw_status(addr: std::net::SocketAddr, head: &[u8]) -> u16 {
    raw_answer(addr, head).0
}

#[test]
fn invalid_utf8_in_paths_and_queries_is_refused_and_nothing_breaks() {
    let a = Appliance::new();
    let m = Running::start(&a);
    let close = "Host: x\r\nConnection: close\r\n\r\n";
    // Raw bytes that are not UTF-8 in the path: refused by the parser (400) or not found.
    for path in [
        &b"/api/v1/\xff\xfe"[..],
        b"/\xc3\x28",
        b"/api/v1/verify\xed\xa0\x80",
    ] {
        let mut head = b"GET ".to_vec();
        head.extend_from_slice(path);
        head.extend_from_slice(format!(" HTTP/1.1\r\n{close}").as_bytes());
        let code = raw_status(m.addr, &head);
        assert!(code == 400 || code == 404, "{path:?}: {code}");
    }
    // Percent-encoded invalid UTF-8: an unknown path, a nonce that is not hex.
    let q = |target: &str| {
        raw_status(
            m.addr,
            format!("GET {target} HTTP/1.1\r\n{close}").as_bytes(),
        )
    };
    assert_eq!(q("/api/v1/%ff%fe"), 404);
    assert_eq!(
        q("/api/v1/attestation?nonce=%ff%fe%fd%fc%fb%fa%f9%f8%f7%f6%f5%f4%f3%f2%f1%f0"),
        400
    );
    // A mutation with a token header that is not UTF-8 is refused like a wrong token.
    let mut head = b"POST /api/v1/rebaseline HTTP/1.1\r\nAuthorization: Bearer \xff\xfe\r\nContent-Length: 0\r\n".to_vec();
    head.extend_from_slice(close.as_bytes());
    assert_eq!(raw_status(m.addr, &head), 403);
    assert_eq!(get(m.addr, "/health").unwrap().0, 200);
    assert_eq!(m.verify_code(), 200);
    assert_eq!(a.count_events("rebaseline"), 0);
}

#[test]
fn missing_token_keeps_mutations_closed() {
    let a = Appliance::new();
    std::fs::remove_file(a.path("secret/token")).unwrap();
    let m = Running::start(&a);
    let (code, body) = post(m.addr, "/api/v1/scan", Some(TOKEN)).unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("token_unavailable"));
    assert_eq!(get(m.addr, "/api/v1/verify").unwrap().0, 200);
}

#[test]
fn require_token_for_reads_closes_the_gets() {
    let a = Appliance::with_options("scan_interval: 1h\nrequire_token_for_reads: true\n");
    let handed = Handed::new();
    let addr = handed.addr;
    let mut inner = std::process::Command::new(monitor_bin());
    inner.args(a.args(addr));
    let mut child = handed.command(&inner).spawn().unwrap();
    // Liveness stays public (the boot checks probe it without a token) and tells nothing more.
    assert!(wait_until(Duration::from_secs(10), || get(addr, "/health")
        .map(|r| r.0 == 200)
        .unwrap_or(false)));
    let (_, health) = get(addr, "/health").unwrap();
    assert!(!health.contains("state"), "{health}");
    for path in [
        "/api/v1/verify",
        "/api/v1/status",
        "/api/v1/baseline",
        "/metrics",
    ] {
        assert_eq!(
            get(addr, path).unwrap().0,
            401,
            "{path} is closed without the token"
        );
    }
    assert!(wait_until(Duration::from_secs(10), || {
        verify_ok_with_token(addr)
    }));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_body_that_trickles_is_answered_408_and_the_connection_closed() {
    use std::io::{Read, Write};
    let a = Appliance::new();
    let m = Running::start(&a);
    let mut s = std::net::TcpStream::connect(m.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "POST /api/v1/scan HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n0123456789"
    );
    s.write_all(head.as_bytes()).unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer); // ends when the api closes the connection
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"error\":\"request_timeout\""), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "closed, not held open"
    );
    assert_eq!(m.verify_code(), 200, "the api still serves");
}

#[test]
fn a_head_that_never_ends_gets_408_with_a_json_body() {
    use std::io::{Read, Write};
    let a = Appliance::new();
    let m = Running::start(&a);
    let mut s = std::net::TcpStream::connect(m.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // Part of a head, then nothing: hyper's header timeout (10 s) ends it.
    s.write_all(b"GET /api/v1/verify HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"], "request_timeout");
    assert!(started.elapsed() < Duration::from_secs(20));
    // An idle keep-alive connection is closed without a word.
    let mut idle = std::net::TcpStream::connect(m.addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut nothing = Vec::new();
    let _ = idle.read_to_end(&mut nothing);
    assert!(
        nothing.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&nothing)
    );
    assert_eq!(m.verify_code(), 200);
}
