//! Forged, truncated and oversized frames sent to either side are refused without a crash.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use common::*;
use nix::sys::socket::{recv, send, MsgFlags};
use protocol::frame::{decode, encode};
use protocol::message::{ErrorKind, KeyStatus, PolicySummary, StoreStatus};
use protocol::{Reassembler, Request, Response, MAX_FRAME, PROTOCOL_VERSION};

fn send_raw(fd: &OwnedFd, bytes: &[u8]) {
    send(fd.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL).unwrap();
}

fn send_msg<T: serde::Serialize>(fd: &OwnedFd, id: u64, body: &T) {
    for f in encode(id, body).unwrap() {
        send_raw(fd, &f);
    }
}

fn recv_msg<T: serde::de::DeserializeOwned>(fd: &OwnedFd) -> (u64, T) {
    let mut buf = vec![0u8; MAX_FRAME + 1];
    let mut r = Reassembler::new();
    loop {
        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
        assert!(n > 0, "peer closed the channel");
        if let Some(m) = r.push(&buf[..n]).unwrap() {
            let e = decode::<T>(&m).unwrap();
            return (e.id, e.body);
        }
    }
}

/// The next answer, past any unsolicited change notice (id 0) the hasher's watcher sent.
fn recv_answer(fd: &OwnedFd) -> (u64, Response) {
    loop {
        match recv_msg::<Response>(fd) {
            (0, Response::Notice { .. }) => continue,
            other => return other,
        }
    }
}

fn expect_protocol_error(fd: &OwnedFd, what: &str) {
    match recv_msg::<Response>(fd) {
        (
            _,
            Response::Error {
                kind: ErrorKind::Protocol,
                ..
            },
        ) => {}
        (_, other) => panic!("{what}: expected a protocol error, got {other:?}"),
    }
}

fn spawn_hasher(a: &Appliance) -> (OwnedFd, std::process::Child) {
    let (ours, theirs) = api::sys::seqpacket_pair().unwrap();
    let args = [
        "--policy".into(),
        a.path("etc/monitor.yaml").into_os_string(),
        "--state-dir".into(),
        a.path("state").into_os_string(),
        "--token-file".into(),
        a.path("secret/token").into_os_string(),
    ];
    let child = api::sys::spawn_hasher(&hasher_bin(), &args, theirs).unwrap();
    (ours, child)
}

fn hello(fd: &OwnedFd, id: u64) -> Response {
    hello_with(fd, id, protocol::standing::Prior::Nothing)
}

/// A hello telling the hasher what the api remembers.
fn hello_with(fd: &OwnedFd, id: u64, prior: protocol::standing::Prior) -> Response {
    send_msg(
        fd,
        id,
        &Request::Hello {
            version: PROTOCOL_VERSION,
            prior,
        },
    );
    let (got, hello) = recv_answer(fd);
    assert_eq!(got, id);
    hello
}

fn create(fd: &OwnedFd, id: u64, token: Option<&[u8]>) -> Response {
    send_msg(
        fd,
        id,
        &Request::CreateBaseline {
            token: token.map(<[u8]>::to_vec),
            proof: None,
        },
    );
    recv_answer(fd).1
}

/// A one-time challenge from the hasher, as the api relays it.
fn challenge(fd: &OwnedFd, id: u64) -> String {
    send_msg(fd, id, &Request::RebaselineChallenge);
    match recv_answer(fd).1 {
        Response::Challenge { challenge, .. } => challenge,
        other => panic!("{other:?}"),
    }
}

/// The hasher's signed plan, asked for with `token`: (its digest, generation), or the answer.
fn plan(fd: &OwnedFd, id: u64, token: Option<&[u8]>) -> Result<(String, u64), Box<Response>> {
    send_msg(
        fd,
        id,
        &Request::RebaselinePlan {
            token: token.map(<[u8]>::to_vec),
        },
    );
    match recv_answer(fd).1 {
        Response::Plan(signed) => {
            let p: protocol::plan::Plan = serde_json::from_slice(&signed.payload).unwrap();
            Ok((signed.digest(), p.generation))
        }
        other => Err(Box::new(other)),
    }
}

/// `CreateBaseline` with a proof over `plan` at `generation` (and no token).
fn prove(fd: &OwnedFd, id: u64, challenge: &str, plan: &(String, u64), proof: &str) -> Response {
    send_msg(
        fd,
        id,
        &Request::CreateBaseline {
            token: None,
            proof: Some(protocol::message::Proof {
                challenge: challenge.to_owned(),
                plan: plan.0.clone(),
                generation: plan.1,
                proof: proof.to_owned(),
            }),
        },
    );
    recv_answer(fd).1
}

fn unauthorised(r: &Response) -> bool {
    matches!(
        r,
        Response::Error {
            kind: ErrorKind::Unauthorized,
            ..
        } | Response::CeremonyRefused { plan: None, .. }
    )
}

#[test]
fn hasher_refuses_bad_frames_and_keeps_serving() {
    let a = Appliance::new();
    let (ours, mut child) = spawn_hasher(&a);

    send_msg(&ours, 1, &Request::Scan);
    expect_protocol_error(&ours, "request before hello");

    send_raw(&ours, &vec![0u8; MAX_FRAME + 100]);
    expect_protocol_error(&ours, "oversized datagram");
    send_raw(&ours, &[0xff; 33]);
    expect_protocol_error(&ours, "garbage");
    let frame = encode(
        2,
        &Request::Hello {
            version: PROTOCOL_VERSION,
            prior: protocol::standing::Prior::Nothing,
        },
    )
    .unwrap()
    .remove(0);
    send_raw(&ours, &frame[..frame.len() - 1]);
    expect_protocol_error(&ours, "truncated frame");
    let mut trailing = frame.clone();
    trailing.extend_from_slice(b"junk");
    send_raw(&ours, &trailing);
    expect_protocol_error(&ours, "trailing bytes");
    send_msg(
        &ours,
        3,
        &Request::Hello {
            version: 99,
            prior: protocol::standing::Prior::Nothing,
        },
    );
    expect_protocol_error(&ours, "wrong version in hello");
    send_msg(
        &ours,
        3,
        &Request::Hello {
            version: PROTOCOL_VERSION,
            prior: protocol::standing::Prior::Trace {
                what: "x".repeat(protocol::standing::MAX_TRACE_LEN + 1),
            },
        },
    );
    expect_protocol_error(&ours, "a memory out of bounds in hello");

    let digest = protocol::sign::sha256_hex(TOKEN.trim().as_bytes());
    match hello(&ours, 4) {
        Response::Hello {
            key: KeyStatus::Present,
            store: StoreStatus::Empty,
            token_digest: Some(d),
            ..
        } => assert_eq!(
            d, digest,
            "the api gets the token's digest, never the token"
        ),
        other => panic!("{other:?}"),
    }
    // The request of the old protocol that let an api hand in any validly signed baseline,
    // replayed: refused whatever it decodes as, and nothing is adopted.
    #[derive(serde::Serialize)]
    #[allow(dead_code)]
    enum OldRequest {
        Hello { version: u16 },
        LoadBaseline { manifest: Vec<u8> },
    }
    let old = std::fs::read(a.path("etc/monitor.yaml")).unwrap();
    send_msg(&ours, 5, &OldRequest::LoadBaseline { manifest: old });
    match recv_answer(&ours).1 {
        Response::Error {
            kind: ErrorKind::Protocol | ErrorKind::Unauthorized,
            ..
        } => {}
        other => panic!("an old LoadBaseline was not refused: {other:?}"),
    }
    send_msg(&ours, 6, &Request::Scan);
    assert!(matches!(
        recv_answer(&ours).1,
        Response::Error {
            kind: ErrorKind::NoBaseline,
            ..
        }
    ));

    // Still alive and working: a first initialization of an empty store needs no token.
    assert!(matches!(
        create(&ours, 7, None),
        Response::BaselineCreated { .. }
    ));
    assert!(child.try_wait().unwrap().is_none(), "hasher crashed");
    drop(ours);
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "hasher leaves cleanly when the api closes the channel"
    );
}

#[test]
fn a_hostile_api_cannot_bless_tampering_nor_roll_the_store_back() {
    let a = Appliance::new();
    let (ours, mut child) = spawn_hasher(&a);
    assert!(matches!(
        hello(&ours, 1),
        Response::Hello {
            store: StoreStatus::Empty,
            ..
        }
    ));
    let first = create(&ours, 2, None);
    assert!(
        matches!(&first, Response::BaselineCreated { summary, .. } if summary.generation == 1),
        "{first:?}"
    );
    let gen1 = std::fs::read(a.path("state/baseline.json")).unwrap();

    // The attacker tampers a file and, holding the channel but not the token, asks again.
    a.write("bin/registry", "tampered!\n");
    assert!(unauthorised(&create(&ours, 3, None)), "no token: refused");
    assert!(
        unauthorised(&create(&ours, 4, Some(b"guess"))),
        "wrong token: refused"
    );
    assert!(
        unauthorised(&create(&ours, 5, Some(b""))),
        "empty token: refused"
    );
    send_msg(&ours, 6, &Request::Scan);
    match recv_answer(&ours).1 {
        Response::Report(r) => assert_eq!(r.report.violation_count, 1, "the tampering stands"),
        other => panic!("{other:?}"),
    }
    // The hasher's signed word says so too: a verifier on the other side is not fooled.
    send_msg(
        &ours,
        7,
        &Request::Attest {
            nonce: "ab".repeat(16),
            audit_seq: 0,
            audit_head: "0".repeat(64),
        },
    );
    match recv_answer(&ours).1 {
        Response::Attestation { payload, .. } => {
            let att: protocol::attest::Attestation = serde_json::from_slice(&payload).unwrap();
            assert_eq!((att.violation_count, att.baseline_generation), (1, 1));
        }
        other => panic!("{other:?}"),
    }
    // The service token, which every scan carries through the api, does not do it: a
    // stand-in api that has seen it still cannot bless the tampering.
    assert!(
        unauthorised(&create(&ours, 8, Some(TOKEN.trim().as_bytes()))),
        "the service token no longer authorises a rebaseline"
    );
    // A plan is a full read: not without the token.
    assert!(unauthorised(&plan(&ours, 9, None).unwrap_err()));
    assert!(unauthorised(&plan(&ours, 10, Some(b"guess")).unwrap_err()));
    let held = plan(&ours, 11, Some(TOKEN.trim().as_bytes())).unwrap();
    // Proofs the stand-in api could make: with the service token as the key, for a challenge
    // the hasher never issued, altered, or over a plan of its own making.
    let authority = protocol::authority::Authority::derive(&a.key());
    let token_as_key = protocol::authority::Authority::derive(TOKEN.trim().as_bytes());
    let c = challenge(&ours, 12);
    let by_token = token_as_key.prove(&c, &held.0, held.1);
    assert!(unauthorised(&prove(&ours, 13, &c, &held, &by_token)));
    let never_issued = "ab".repeat(32);
    let p = authority.prove(&never_issued, &held.0, held.1);
    assert!(unauthorised(&prove(&ours, 14, &never_issued, &held, &p)));
    let mut altered = authority.prove(&c, &held.0, held.1).into_bytes();
    altered[63] = if altered[63] == b'0' { b'1' } else { b'0' };
    let altered = String::from_utf8(altered).unwrap();
    assert!(unauthorised(&prove(&ours, 15, &c, &held, &altered)));
    let own_plan = ("cd".repeat(32), held.1);
    let p = authority.prove(&c, &own_plan.0, own_plan.1);
    assert!(unauthorised(&prove(&ours, 16, &c, &own_plan, &p)));
    let later = (held.0.clone(), held.1 + 1);
    let p = authority.prove(&c, &later.0, later.1);
    assert!(unauthorised(&prove(&ours, 17, &c, &later, &p)));
    // The operator's key ceremony over the plan held does it, once (a wrong proof spent
    // nothing): every byte of it replayed is refused.
    let proof = authority.prove(&c, &held.0, held.1);
    let second = prove(&ours, 18, &c, &held, &proof);
    assert!(
        matches!(&second, Response::BaselineCreated { summary, outcome: Some(_) } if summary.generation == 2),
        "{second:?}"
    );
    assert!(
        unauthorised(&prove(&ours, 19, &c, &held, &proof)),
        "a replayed ceremony"
    );
    drop(ours);
    assert_eq!(child.wait().unwrap().code(), Some(0));

    // The older, validly signed baseline put back: refused by the next hasher.
    let gen2 = std::fs::read(a.path("state/baseline.json")).unwrap();
    std::fs::write(a.path("state/baseline.json"), &gen1).unwrap();
    let (ours, mut child) = spawn_hasher(&a);
    match hello(&ours, 1) {
        Response::Hello {
            store: StoreStatus::Rejected { reason, .. },
            ..
        } => {
            assert!(reason.contains("older baseline was put back"), "{reason}")
        }
        other => panic!("rollback not caught: {other:?}"),
    }
    assert!(
        unauthorised(&create(&ours, 2, None)),
        "a rejected store is no first boot"
    );
    drop(ours);
    child.wait().unwrap();
    // The baseline deleted, the record intact: not a first boot.
    std::fs::write(a.path("state/baseline.json"), &gen2).unwrap();
    std::fs::remove_file(a.path("state/baseline.json")).unwrap();
    let (ours, mut child) = spawn_hasher(&a);
    match hello(&ours, 1) {
        Response::Hello {
            store: StoreStatus::Rejected { reason, .. },
            ..
        } => {
            assert!(reason.contains("was deleted"), "{reason}")
        }
        other => panic!("deletion not caught: {other:?}"),
    }
    assert!(
        unauthorised(&create(&ours, 2, None)),
        "a deleted baseline is no first boot"
    );
    drop(ours);
    child.wait().unwrap();
}

/// Acts as a hostile hasher when started through the wrapper script; a no-op otherwise.
#[test]
fn fake_hasher_entry() {
    let Ok(mode) = std::env::var("FAKE_HASHER_MODE") else {
        return;
    };
    // SAFETY: the api handed this process fd 3 (LISTEN_FDS=1); nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(3) };
    let (id, _) = recv_msg::<Request>(&fd);
    let policy = PolicySummary {
        scan_interval_ms: 3_600_000,
        degradation_threshold: 3,
        require_token_for_reads: false,
        watched_paths: 1,
    };
    send_msg(
        &fd,
        id,
        &Response::Hello {
            version: PROTOCOL_VERSION,
            policy,
            key: KeyStatus::Present,
            store: StoreStatus::Empty,
            token_digest: None,
            store_event: None,
            release: protocol::standing::ReleaseNews::default(),
        },
    );
    let (id, _) = recv_msg::<Request>(&fd);
    match mode.as_str() {
        "garbage" => send_raw(&fd, &[0xa5; 200]),
        "oversized" => send_raw(&fd, &vec![0u8; MAX_FRAME + 10]),
        "wrong_id" => send_msg(
            &fd,
            id + 5,
            &Response::Reloaded {
                policy: PolicySummary {
                    scan_interval_ms: 1,
                    degradation_threshold: 1,
                    require_token_for_reads: false,
                    watched_paths: 1,
                },
            },
        ),
        "forged_baseline" => {
            // Claims a signed baseline of a digest that is no SHA-256.
            let summary = protocol::message::BaselineSummary {
                digest: "zz".repeat(32),
                entries: 0,
                signed: true,
                created_at: "2026-01-01T00:00:00Z".into(),
                generation: 1,
                release: None,
                rollback: Default::default(),
            };
            send_msg(
                &fd,
                id,
                &Response::BaselineCreated {
                    summary,
                    outcome: None,
                },
            );
        }
        other => panic!("unknown mode {other}"),
    }
    // Keep the channel open: the api must act on the bad message, not on a hang-up.
    std::thread::sleep(Duration::from_secs(20));
}

#[test]
fn api_refuses_bad_frames_from_a_hostile_hasher() {
    let me = std::env::current_exe().unwrap();
    for mode in ["garbage", "oversized", "wrong_id", "forged_baseline"] {
        let a = Appliance::new();
        let script = a.path("fake-hasher.sh");
        a.write(
            "fake-hasher.sh",
            &format!("#!/bin/sh\nFAKE_HASHER_MODE={mode} exec {} fake_hasher_entry --exact --nocapture --test-threads=1 >/dev/null\n", me.display()),
        );
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let handed = Handed::new();
        let addr = handed.addr;
        let mut args = a.args(addr);
        let i = args.iter().position(|x| x == "--hasher").unwrap();
        args[i + 1] = script.display().to_string();
        let mut inner = std::process::Command::new(monitor_bin());
        inner.args(&args);
        let mut child = handed.command(&inner).spawn().unwrap();
        // Every answer /verify gives before the api exits is 503, and it exits within 20 s.
        let mut answers = std::collections::BTreeSet::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("{mode}: the api still runs 20 s after its hasher misbehaved");
            }
            if let Ok((code, _)) = get(addr, "/api/v1/verify") {
                answers.insert(code);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            answers.iter().all(|c| *c == 503),
            "{mode}: /verify answered {answers:?}, not only 503"
        );
        assert_eq!(
            status.code(),
            Some(1),
            "{mode}: the api exits with an error, not a crash: {status}"
        );
        // Misbehaving during start-up: recorded as a failed start, with the reason.
        let lost = a.audit_events().iter().any(|e| {
            (e["event"] == "hasher_lost" || e["event"] == "hasher_start_failed")
                && e["reason"].as_str().is_some_and(|r| !r.is_empty())
        });
        assert!(lost, "{mode}: the loss is audited");
    }
}
