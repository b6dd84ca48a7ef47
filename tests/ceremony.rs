//! The key ceremony against a relay that sits where a compromised api would: it holds the
//! operator's final request and answers a fake 503, or changes files between the plan and the
//! proof. What the operator approved is adopted at most once, and nothing else; floods of
//! challenges and made-up proofs stop no ceremony and fill no log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// Between the ceremony tool and the api: passes every request on, except that it keeps the
/// final `POST /api/v1/rebaseline` and answers it with a fake 503 when `hold` is set, and runs
/// `before_challenge` before a challenge request is passed on.
struct Relay {
    addr: SocketAddr,
    held: Arc<Mutex<Vec<String>>>,
}

type Hook = Arc<dyn Fn() + Send + Sync>;

impl Relay {
    fn start(api: SocketAddr, hold: bool, before_challenge: Hook) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let held = Arc::new(Mutex::new(Vec::new()));
        let keep = held.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (keep, hook) = (keep.clone(), before_challenge.clone());
                std::thread::spawn(move || relay_one(client, api, hold, &keep, &*hook));
            }
        });
        Relay { addr, held }
    }

    fn held(&self) -> Vec<String> {
        self.held.lock().unwrap().clone()
    }
}

fn relay_one(
    mut client: TcpStream,
    api: SocketAddr,
    hold: bool,
    held: &Mutex<Vec<String>>,
    before_challenge: &(dyn Fn() + Send + Sync),
) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && client.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let path = text.split(' ').nth(1).unwrap_or_default().to_owned();
    if path == "/api/v1/rebaseline" && hold {
        let proof = text
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("x-rebaseline-proof")
                    .then(|| v.trim().to_owned())
            })
            .unwrap_or_default();
        held.lock().unwrap().push(proof);
        let body = r#"{"error":"hasher_unavailable","message":"hasher unavailable: try again"}"#;
        let _ = write!(
            client,
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        return;
    }
    if path == "/api/v1/rebaseline/challenge" {
        before_challenge();
    }
    let mut upstream = TcpStream::connect(api).unwrap();
    upstream.write_all(&head).unwrap();
    let mut back = upstream.try_clone().unwrap();
    let mut to_client = client.try_clone().unwrap();
    let answer = std::thread::spawn(move || std::io::copy(&mut back, &mut to_client));
    let _ = std::io::copy(&mut client, &mut upstream);
    let _ = upstream.shutdown(Shutdown::Write);
    let _ = answer.join();
}

fn no_hook() -> Hook {
    Arc::new(|| {})
}

/// `integrity-monitor rebaseline` against `url`, as a script runs it.
fn ceremony(a: &Appliance, addr: SocketAddr, extra: &[&str]) -> Output {
    Command::new(monitor_bin())
        .args(["rebaseline", "--key"])
        .arg(a.path("secret/key"))
        .arg("--token-file")
        .arg(a.path("secret/token"))
        .args(["--url", &format!("http://{addr}")])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn generation(m: &Running) -> u64 {
    m.status()["baseline"]["generation"].as_u64().unwrap()
}

fn forward(m: &Running, proof: &str) -> (u16, serde_json::Value) {
    let (code, body) = request(
        m.addr,
        "POST",
        "/api/v1/rebaseline",
        &[("X-Rebaseline-Proof", proof)],
        b"",
    )
    .unwrap();
    (code, serde_json::from_str(&body).unwrap())
}

/// The paths a signed plan relayed as `{"payload","hmac"}` lists, with their kind.
fn listed(signed: &serde_json::Value) -> Vec<(String, String)> {
    let plan: protocol::plan::Plan =
        serde_json::from_str(signed["payload"].as_str().unwrap()).unwrap();
    plan.changes
        .iter()
        .map(|c| (c.kind().to_owned(), c.path.clone()))
        .collect()
}

#[test]
fn a_held_proof_forwarded_after_a_change_is_refused_and_one_forwarded_unchanged_adopts_once() {
    let a = Appliance::new();
    let m = Running::start(&a);
    assert_eq!(generation(&m), 1);
    let relay = Relay::start(m.addr, true, no_hook());

    // The relay answers the operator's final request with a fake 503 and keeps the proof:
    // the tool sees that the answer is not the hasher's signed word.
    let out = ceremony(&a, relay.addr, &["--yes", "--json"]);
    assert_eq!(out.status.code(), Some(5), "outcome unknown");
    assert_eq!(json_of(&out)["result"], "unknown");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not the hasher's signed word"));
    let proof = relay.held().pop().expect("the relay kept the proof");

    // A binary is tampered, then the proof spent: refused, with the new plan naming it.
    a.write(BINARIES[0], "tampered after the operator approved\n");
    let (code, body) = forward(&m, &proof);
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["error"], "plan_changed");
    let tampered = a.path(BINARIES[0]).display().to_string();
    assert_eq!(listed(&body["plan"]), [("changed".to_owned(), tampered)]);
    assert_eq!(generation(&m), 1, "nothing adopted");
    assert_eq!(m.scan()["violation_count"], 1, "the tampering stands");
    // Spent: the same proof again, or once the file is put back, adopts nothing.
    a.write(BINARIES[0], &format!("#!/bin/sh\necho {}\n", BINARIES[0]));
    assert_eq!(forward(&m, &proof).0, 403);
    assert_eq!(generation(&m), 1);

    // Held again, and forwarded with nothing changed: the plan approved is adopted, once.
    let out = ceremony(&a, relay.addr, &["--yes", "--json"]);
    assert_eq!(out.status.code(), Some(5));
    let proof = relay.held().pop().unwrap();
    let (code, body) = forward(&m, &proof);
    assert_eq!(code, 200, "{body}");
    assert_eq!(generation(&m), 2);
    for held in relay.held().iter().chain([&proof]) {
        assert_eq!(forward(&m, held).0, 403, "no second adoption");
    }
    assert_eq!(generation(&m), 2);
    assert_eq!(m.verify_code(), 200);
}

#[test]
fn a_file_changed_between_plan_and_proof_is_refused_and_the_operator_sees_the_new_plan() {
    let a = Appliance::new();
    let m = Running::start(&a);
    let path = a.path(BINARIES[2]);
    let changed = path.clone();
    let relay = Relay::start(
        m.addr,
        false,
        Arc::new(move || std::fs::write(&changed, "swapped while the operator read\n").unwrap()),
    );
    let out = ceremony(&a, relay.addr, &["--yes", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "refused, in the hasher's signed word"
    );
    let doc = json_of(&out);
    assert_eq!(doc["result"], "refused");
    assert_eq!(
        doc["plan"]["changed"], 0,
        "the plan approved changed nothing"
    );
    assert_eq!(doc["new_plan"]["changed"], 1);
    assert_eq!(
        doc["new_plan"]["changes"][0]["path"],
        path.display().to_string()
    );
    assert_eq!(generation(&m), 1);

    // The operator runs it again, straight to the api, and reads one line.
    let out = ceremony(&a, m.addr, &["--yes"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("1 changed"), "{text}");
    let last = text.lines().last().unwrap();
    assert!(
        last.starts_with("adopted generation 2: 9 entries, baseline "),
        "{last}"
    );
    assert!(last.ends_with("/api/v1/verify answers 200 now"), "{last}");
    assert_eq!(generation(&m), 2);
}

#[test]
fn names_that_would_rewrite_the_terminal_are_shown_escaped() {
    let a = Appliance::new();
    let m = Running::start(&a);
    // Clears the screen, shows "exe.gnp" reversed, and starts a forged line.
    a.write("models/\u{1b}[2J\u{202e}gnp.exe\nadded  /fake", "x");
    let out = ceremony(&a, m.addr, &["--yes"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("\\u{001b}[2J\\u{202e}gnp.exe\\u{000a}added  /fake"),
        "{text}"
    );
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{202e}'),
        "{text:?}"
    );
    assert_eq!(text.lines().filter(|l| l.contains("/fake")).count(), 1);
}

#[test]
fn floods_of_challenges_and_made_up_proofs_stop_no_ceremony_and_fill_no_log() {
    let a = Appliance::new();
    let m = Running::start(&a);
    let (_, _, plan) = rebaseline_plan(m.addr).unwrap();
    let (digest, generation_next) = plan.expect("a plan");
    let proof = prove(m.addr, &a.key(), &digest, generation_next).unwrap();
    let refused_before = a.count_events("rebaseline_refused");
    let log_before = std::fs::metadata(a.audit_log()).unwrap().len();

    // Tokenless challenges: nothing is kept per challenge, so nothing is pushed out.
    for _ in 0..100 {
        let (code, _) = request(m.addr, "POST", "/api/v1/rebaseline/challenge", &[], b"").unwrap();
        assert_eq!(code, 200);
    }
    // 300 made-up proofs of the right form, as fast as they are answered.
    let started = Instant::now();
    for i in 0..300u64 {
        let made_up = format!("{i:064x}:{:064x}:{generation_next}:{:064x}", i + 1, i + 2);
        assert_eq!(forward(&m, &made_up).0, 403);
    }
    let took = started.elapsed();
    // The operator's ceremony goes on.
    let (code, body) = forward(&m, &proof);
    assert_eq!(code, 200, "{body}");
    assert_eq!(generation(&m), generation_next);

    let refused = a.count_events("rebaseline_refused") - refused_before;
    let grown = std::fs::metadata(a.audit_log()).unwrap().len() - log_before;
    eprintln!("300 made-up proofs in {took:?}: {refused} rebaseline_refused records; the log grew {grown} bytes (the adoption included)");
    assert!(refused <= 20, "{refused} records");
    assert!(grown < 16_384, "{grown} bytes");
    assert!(took < Duration::from_secs(30));
}
