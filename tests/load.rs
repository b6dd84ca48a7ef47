//! Load while files change: keep-alive clients hammer /verify and /status while a binary is
//! tampered and restored again and again. Every answer is 200 (or 503 from /verify while
//! tampered), no connection fails, each cycle is exactly two transitions (no flapping) and
//! the api's memory stays flat. Counts, not timings: a slow machine passes, a wrong one fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

const CYCLES: usize = 10;
const CLIENTS_PER_PATH: usize = 6;

#[derive(Default, Debug)]
struct Tally {
    ok: u64,
    unavailable: u64,
    other: Vec<u16>,
    errors: Vec<String>,
}

/// One keep-alive connection sending `GET path` until told to stop.
fn client(addr: SocketAddr, path: &'static str, stop: Arc<AtomicBool>) -> Tally {
    let mut t = Tally::default();
    let stream = match TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) => {
            t.errors.push(format!("connect: {e}"));
            return t;
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = writer.write_all(request.as_bytes()) {
            t.errors.push(format!("write: {e}"));
            return t;
        }
        match read_response(&mut reader) {
            Ok(200) => t.ok += 1,
            Ok(503) if path == "/api/v1/verify" => t.unavailable += 1,
            Ok(code) => t.other.push(code),
            Err(e) => {
                t.errors.push(format!("read: {e}"));
                return t;
            }
        }
    }
    t
}

fn read_response(r: &mut BufReader<TcpStream>) -> std::io::Result<u16> {
    let bad = |what: &str| std::io::Error::other(what.to_owned());
    let mut line = String::new();
    r.read_line(&mut line)?;
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad(&format!("status line {line:?}")))?;
    let mut length = None;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("closed in the headers"));
        }
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse::<usize>().ok();
            }
        }
    }
    let mut body = vec![0u8; length.ok_or_else(|| bad("no content-length"))?];
    r.read_exact(&mut body)?;
    Ok(code)
}

#[test]
fn tamper_and_restore_under_load_answers_every_request_without_flapping() {
    let a = Appliance::new();
    let m = Running::start(&a);
    let api = m.child.id();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = ["/api/v1/verify", "/api/v1/status"]
        .into_iter()
        .flat_map(|path| std::iter::repeat_n(path, CLIENTS_PER_PATH))
        .map(|path| {
            let stop = stop.clone();
            let addr = m.addr;
            std::thread::spawn(move || client(addr, path, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let rss_before = proc_status_kib(api, "VmRSS:");
    let transitions_before = a.count_events("transition");

    let reach = |state: &str| {
        assert!(
            wait_until(Duration::from_secs(30), || m.status()["state"] == state),
            "never reached {state}"
        )
    };
    let target = BINARIES[1];
    let original = std::fs::read(a.path(target)).unwrap();
    for _ in 0..CYCLES {
        // Alternate a size change and a same-size edit (only a full read can see that one).
        let mut tampered = original.clone();
        tampered[0] ^= 0x20;
        a.write(target, std::str::from_utf8(&tampered).unwrap());
        reach("degraded");
        std::thread::sleep(Duration::from_millis(300));
        std::fs::write(a.path(target), &original).unwrap();
        reach("trusted");
        std::thread::sleep(Duration::from_millis(300));
        a.write(target, "implanted, and longer than the original\n");
        reach("degraded");
        std::fs::write(a.path(target), &original).unwrap();
        reach("trusted");
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let tallies: Vec<Tally> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let rss_after = proc_status_kib(api, "VmRSS:");

    for t in &tallies {
        assert!(t.errors.is_empty(), "a connection failed: {t:?}");
        assert!(t.other.is_empty(), "unexpected status codes: {t:?}");
        assert!(t.ok > 0, "every client got answers: {t:?}");
    }
    let unavailable: u64 = tallies.iter().map(|t| t.unavailable).sum();
    let ok: u64 = tallies.iter().map(|t| t.ok).sum();
    eprintln!("{ok} x 200, {unavailable} x 503; api RSS {rss_before} -> {rss_after} KiB");
    assert!(unavailable > 0, "/verify said 503 while tampered");

    let transitions: Vec<(String, String)> = a
        .audit_events()
        .iter()
        .filter(|e| e["event"] == "transition")
        .skip(transitions_before)
        .map(|e| (e["from"].to_string(), e["to"].to_string()))
        .collect();
    let cycle = [
        ("\"trusted\"".to_owned(), "\"degraded\"".to_owned()),
        ("\"degraded\"".to_owned(), "\"trusted\"".to_owned()),
    ];
    let expected: Vec<(String, String)> = cycle.iter().cycle().take(4 * CYCLES).cloned().collect();
    assert_eq!(
        transitions, expected,
        "exactly one degrade and one recovery per tamper/restore"
    );
    assert_eq!(
        a.count_events("transition"),
        transitions_before + 4 * CYCLES
    );
    assert!(
        rss_after < rss_before + 16 * 1024,
        "api RSS {rss_before} -> {rss_after} KiB"
    );
    assert!(proc_status_kib(api, "VmHWM:") < 32 * 1024, "api peak RSS");
}
