//! Hostile input to the api's parsers: protocol frames and messages (both directions), the
//! baseline manifest, attestations, and raw bytes on the HTTP socket of a running monitor.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "fuzz_support.rs"]
mod fuzz;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;
use protocol::frame::{decode, encode};
use protocol::{Reassembler, Request, Response};

#[test]
fn protocol_decoders_never_panic() {
    let requests = [
        Request::Hello {
            version: 1,
            prior: protocol::standing::Prior::Nothing,
        },
        Request::Scan,
        Request::CreateBaseline {
            token: Some(b"test-token".to_vec()),
            proof: Some(protocol::message::Proof {
                challenge: "ab".repeat(32),
                plan: "ef".repeat(32),
                generation: 3,
                proof: "cd".repeat(32),
            }),
        },
        Request::RebaselineChallenge,
        Request::RebaselinePlan {
            token: Some(b"test-token".to_vec()),
        },
        Request::GetBaseline { offset: 1 << 20 },
        Request::ScanChanged,
        Request::Attest {
            nonce: "00".repeat(16),
            audit_seq: 3,
            audit_head: "a".repeat(64),
        },
    ];
    let mut seeds: Vec<Vec<u8>> = requests
        .iter()
        .flat_map(|r| encode(7, r).unwrap())
        .collect();
    let report = protocol::report::ScanReport {
        seq: 1,
        completed_at: "t".into(),
        baseline_digest: "0".repeat(64),
        watched_files: 1,
        bytes_hashed: 1,
        duration_ms: 1,
        violation_count: 0,
        violations: vec![],
        unsettled: 0,
        sealed_files: 0,
    };
    seeds.extend(encode(7, &Response::Report(report.sign(None))).unwrap());
    let signed = protocol::plan::Signed {
        payload: br#"{"version":1}"#.to_vec(),
        hmac: "ab".repeat(32),
    };
    seeds.extend(encode(7, &Response::Plan(signed.clone())).unwrap());
    seeds.extend(
        encode(
            7,
            &Response::CeremonyRefused {
                outcome: signed.clone(),
                plan: Some(signed),
            },
        )
        .unwrap(),
    );
    seeds.extend(
        encode(
            7,
            &Response::Baseline {
                total: 3,
                offset: 0,
                part: b"{}\n".to_vec(),
            },
        )
        .unwrap(),
    );
    seeds.extend(
        encode(
            0,
            &Response::Notice {
                changed: 1,
                overflow: false,
                during_request: false,
            },
        )
        .unwrap(),
    );
    fuzz::run(
        "protocol",
        &seeds,
        &[b"\x00", b"\xff\xff\xff\xff\x0f"],
        fuzz::iterations(),
        |input| {
            let mut r = Reassembler::new();
            if let Ok(Some(message)) = r.push(input) {
                if let Ok(e) = decode::<Response>(&message) {
                    if let Response::Report(s) = e.body {
                        let _ = s.validate();
                    }
                }
                let _ = decode::<Request>(&message);
            }
        },
    );
}

#[test]
fn manifest_and_attestation_parsers_never_panic() {
    let key = [1u8; 32];
    let m = protocol::baseline::Manifest::new(
        "2026-01-01T00:00:00Z".into(),
        vec![protocol::baseline::Entry {
            path: "/a".into(),
            hash: protocol::hexfmt::Sha256Digest::from_hex(&"a".repeat(64)).expect("hex"),
            category: protocol::Category::ModelFile,
            size: 1,
        }],
        Some(&key),
    );
    fuzz::run(
        "manifest",
        &[m.to_json()],
        &[b"\"entries\"", b"null", b"[", b"{", b"\\u0000", b"1e999"],
        fuzz::iterations(),
        |input| {
            if let Ok(m) = protocol::baseline::Manifest::parse(input) {
                let _ = m.verify(Some(&key));
            }
        },
    );
    let a = b"{\"nonce\":\"00\",\"scan_seq\":1,\"scan_completed_at\":\"2026-01-01T00:00:00Z\",\"scan_age_ms\":5,\"baseline_digest\":\"x\",\"violation_count\":0,\"violations\":[],\"degradation_threshold\":3,\"audit_seq\":1,\"audit_head\":\"y\",\"issued_at\":\"z\"}";
    fuzz::run(
        "attestation",
        &[a.to_vec()],
        &[b"\"violations\"", b"-1", b"18446744073709551616"],
        fuzz::iterations(),
        |input| {
            let _ = serde_json::from_slice::<protocol::attest::Attestation>(input);
        },
    );
}

#[test]
fn hostile_http_bytes_never_take_the_api_down() {
    let a = Appliance::new();
    let m = Running::start(&a);
    let seeds = vec![
        b"GET /api/v1/verify HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        format!("POST /api/v1/scan HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 2\r\n\r\n{{}}").into_bytes(),
        b"GET /api/v1/attestation?nonce=00112233445566778899aabbccddeeff HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
    ];
    // Each input is a fresh connection: bound the count so the run stays short.
    let iters = (fuzz::iterations() / 20).max(200);
    fuzz::run(
        "http",
        &seeds,
        &[
            b"\r\n",
            b"Transfer-Encoding: chunked\r\n",
            b"\xff\xfe",
            b"%00",
            b"Content-Length: 99999999999\r\n",
        ],
        iters,
        |input| {
            let Ok(mut s) = std::net::TcpStream::connect(m.addr) else {
                return;
            };
            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = s.write_all(input);
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut sink = [0u8; 4096];
            let _ = s.read(&mut sink);
        },
    );
    assert_eq!(get(m.addr, "/health").unwrap().0, 200, "still serving");
    assert_eq!(
        m.verify_code(),
        200,
        "and still trusted: hostile bytes changed nothing"
    );
}

/// The kernel's count of connections dropped because an accept queue was full (TcpExt).
fn listen_overflows() -> u64 {
    let netstat = std::fs::read_to_string("/proc/net/netstat").unwrap();
    let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ListenOverflows")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap()
}

#[test]
fn ten_thousand_idle_connections_do_not_silence_health() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    assert!(
        hard >= 12_000,
        "this test needs 12,000 fds (hard limit {hard})"
    );
    let a = Appliance::new();
    let m = Running::start_listening(&a);
    let mut idle = Vec::with_capacity(10_000);
    let opened = std::time::Instant::now();
    let overflows = listen_overflows();
    for _ in 0..10_000 {
        idle.push(std::net::TcpStream::connect(m.addr).unwrap());
    }
    let dropped = listen_overflows() - overflows;
    eprintln!(
        "10,000 connections opened in {:?}; accept-queue overflows {dropped}",
        opened.elapsed()
    );
    // The api listens with a 4096 backlog, so a burst waits in the queue instead of being
    // dropped into SYN retries. Measured with std's 128: 62 overflows and 63 s to open these
    // 10,000 (retries back off 1 s, 3 s, 7 s…); with 4096: 0 or 1 and 0.15 s. The count
    // depends on the machine's speed, so the test checks the backlog itself.
    let ss = std::process::Command::new("ss")
        .args(["-Hltn", &format!("sport = :{}", m.addr.port())])
        .output()
        .expect("ss (iproute2; .ci/run installs it)");
    let listing = String::from_utf8_lossy(&ss.stdout);
    let backlog = listing.split_whitespace().nth(2);
    assert_eq!(backlog, Some("4096"), "listen backlog: {listing}");
    // Slowloris on top: a head that trickles in.
    let mut slow = std::net::TcpStream::connect(m.addr).unwrap();
    slow.write_all(b"GET /api/v1/status HTTP/1.1\r\nX-a: ")
        .unwrap();
    let t = std::time::Instant::now();
    let (code, _) = get(m.addr, "/health").unwrap();
    assert_eq!(
        code,
        200,
        "answered in {:?} with 10,000 idle connections open",
        t.elapsed()
    );
    eprintln!(
        "/health answered in {:?} with 10,000 idle connections open",
        t.elapsed()
    );
    let rss_kib = proc_status_kib(m.child.id(), "VmRSS:");
    assert!(
        rss_kib < 200 * 1024,
        "api RSS {rss_kib} KiB with 10,000 idle connections (MemoryMax is 256M)"
    );
    drop(idle);
    assert_eq!(m.verify_code(), 200);
}
