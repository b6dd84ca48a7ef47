//! Forged, truncated and oversized frames sent to either side are refused without a crash.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use common::*;
use nix::sys::socket::{recv, send, MsgFlags};
use protocol::frame::{decode, encode};
use protocol::message::{ErrorKind, KeyStatus, PolicySummary};
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

#[test]
fn hasher_refuses_bad_frames_and_keeps_serving() {
    let a = Appliance::new();
    let (ours, theirs) = api::sys::seqpacket_pair().unwrap();
    let args = ["--policy".into(), a.path("monitor.yaml").into_os_string()];
    let mut child = api::sys::spawn_hasher(&hasher_bin(), &args, theirs).unwrap();

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
    send_msg(&ours, 3, &Request::Hello { version: 99 });
    expect_protocol_error(&ours, "wrong version in hello");

    send_msg(
        &ours,
        4,
        &Request::Hello {
            version: PROTOCOL_VERSION,
        },
    );
    let (id, hello) = recv_msg::<Response>(&ours);
    assert_eq!(id, 4);
    assert!(
        matches!(
            hello,
            Response::Hello {
                key: KeyStatus::Present,
                ..
            }
        ),
        "{hello:?}"
    );

    // A forged baseline (valid form, wrong HMAC) is refused.
    let forged =
        protocol::baseline::Manifest::new("2026-01-01T00:00:00Z".into(), vec![], Some(&[9u8; 32]));
    send_msg(
        &ours,
        5,
        &Request::LoadBaseline {
            manifest: forged.to_json(),
        },
    );
    assert!(matches!(
        recv_msg::<Response>(&ours).1,
        Response::Error {
            kind: ErrorKind::BaselineRejected,
            ..
        }
    ));
    send_msg(
        &ours,
        6,
        &Request::LoadBaseline {
            manifest: b"{\"created_at\":".to_vec(),
        },
    );
    assert!(matches!(
        recv_msg::<Response>(&ours).1,
        Response::Error {
            kind: ErrorKind::BaselineRejected,
            ..
        }
    ));

    // Still alive and working.
    send_msg(&ours, 7, &Request::CreateBaseline);
    assert!(matches!(
        recv_msg::<Response>(&ours),
        (7, Response::BaselineCreated { .. })
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
            // Unsigned while the key is present, and a digest that does not match.
            let m = protocol::baseline::Manifest::new("2026-01-01T00:00:00Z".into(), vec![], None);
            let summary = protocol::message::BaselineSummary {
                digest: "0".repeat(64),
                entries: 0,
                signed: true,
                created_at: m.created_at.clone(),
            };
            send_msg(
                &fd,
                id,
                &Response::BaselineCreated {
                    manifest: m.to_json(),
                    summary,
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
        let addr = free_addr();
        let mut args = a.args(addr);
        let i = args.iter().position(|x| x == "--hasher").unwrap();
        args[i + 1] = script.display().to_string();
        let mut child = std::process::Command::new(monitor_bin())
            .args(&args)
            .spawn()
            .unwrap();
        let mut saw_200 = false;
        let mut saw_503 = false;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            match get(addr, "/api/v1/verify").map(|r| r.0) {
                Ok(200) => saw_200 = true,
                Ok(503) => saw_503 = true,
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(!saw_200, "{mode}: /verify answered 200");
        assert_eq!(
            status.code(),
            Some(1),
            "{mode}: the api exits with an error, not a crash: {status}"
        );
        let lost = a.audit_events().iter().any(|e| e["event"] == "hasher_lost");
        assert!(lost, "{mode}: the loss is audited");
        let _ = saw_503;
    }
}
