//! `integrity-monitor rebaseline --key FILE`: the key ceremony. It fetches the hasher's signed
//! plan of what a rebaseline would change (with the service token: the plan is a full read),
//! checks the signature with the key, shows the plan and asks the operator; only then does it
//! ask for a challenge and prove, with the rebaseline authority derived from the key, over the
//! challenge, the plan's digest and the generation. The hasher adopts that candidate at that
//! generation or nothing, and signs its answer, which is checked here: a relay can neither
//! change what is adopted nor pass a faked failure or success off as the hasher's.

mod client;
pub mod show;

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use protocol::authority::Authority;
use protocol::plan::{Outcome, Plan, Signed};
use serde_json::{json, Value};

use client::Client;

/// Exit codes of `integrity-monitor rebaseline`.
pub mod exit {
    /// The approved plan was adopted (the hasher's signed word).
    pub const ADOPTED: i32 = 0;
    /// Nothing was sent that could adopt anything: key, token, monitor, or plan at fault.
    pub const FAILED: i32 = 1;
    /// Bad flags, or no terminal to ask on and no `--yes`.
    pub const USAGE: i32 = 2;
    /// The hasher refused the proof (its signed word); where the files changed, the new plan
    /// was shown.
    pub const REFUSED: i32 = 3;
    /// The operator did not approve the plan.
    pub const DECLINED: i32 = 4;
    /// The answer to the proof was not the hasher's signed word: what happened is unknown.
    pub const UNKNOWN: i32 = 5;
}

/// What the ceremony is run with.
pub struct Options {
    /// The HMAC key file.
    pub key: PathBuf,
    /// The monitor, `http://HOST:PORT`.
    pub url: String,
    /// The service token file (else where the service finds it).
    pub token_file: Option<PathBuf>,
    /// Approve without asking (scripts).
    pub yes: bool,
    /// One JSON document on stdout instead of text.
    pub json: bool,
}

/// Runs the ceremony; the exit code ([`exit`]).
pub fn rebaseline(o: &Options) -> i32 {
    let mut out = Value::Null;
    let code = run(o, &mut out).unwrap_or_else(|why| {
        eprintln!("integrity-monitor rebaseline: {why}");
        out["result"] = json!("failed");
        out["error"] = json!(why);
        exit::FAILED
    });
    if o.json {
        println!("{out}");
    }
    code
}

fn run(o: &Options, out: &mut Value) -> Result<i32, String> {
    let key = read_secret(&o.key, protocol::sign::MAX_KEY_LEN)?;
    if key.len() < protocol::sign::MIN_KEY_LEN {
        return Err(format!(
            "{}: not an HMAC key ({} bytes)",
            o.key.display(),
            key.len()
        ));
    }
    let token_path = token_path(o.token_file.as_deref());
    let token = read_secret(&token_path, 4096)?;
    let token = String::from_utf8_lossy(token.trim_ascii()).into_owned();
    let client = Client::new(&o.url)?;
    let (plan, digest) = fetch_plan(&client, &token, &key, o.json)?;
    out["plan"] = serde_json::to_value(&plan).unwrap_or_default();
    out["plan_digest"] = json!(digest);
    if !o.json {
        print!("{}", show::plan(&plan, &digest));
    }
    if let Some(code) = approve(o, &plan, out) {
        return Ok(code);
    }
    let answer = client.post("/api/v1/rebaseline/challenge", None, &[], &mut |_| {})?;
    let challenge = answer.body["challenge"]
        .as_str()
        .filter(|c| protocol::authority::challenge_ok(c))
        .ok_or_else(|| format!("no challenge ({}): {}", answer.status, answer.body))?
        .to_owned();
    let proof = Authority::derive(&key).prove(&challenge, &digest, plan.generation);
    let header = format!("{challenge}:{digest}:{}:{proof}", plan.generation);
    let sent = Sent {
        challenge: &challenge,
        digest: &digest,
        proof: &proof,
        plan: &plan,
    };
    let answer = client.post(
        "/api/v1/rebaseline",
        None,
        &[(crate::http::PROOF_HEADER, &header)],
        &mut progress(o.json, "adopting (every watched file is read again)"),
    );
    Ok(judge(answer, &sent, &key, o.json, out))
}

/// The plan, fetched with the token and opened with the key; and its digest.
fn fetch_plan(
    client: &Client,
    token: &str,
    key: &[u8],
    json: bool,
) -> Result<(Plan, String), String> {
    let answer = client.post(
        "/api/v1/rebaseline/plan",
        Some(token),
        &[],
        &mut progress(json, "making the plan (every watched file is read)"),
    )?;
    if answer.status != 200 {
        return Err(format!("no plan ({}): {}", answer.status, answer.body));
    }
    let signed = signed(&answer.body["plan"])
        .ok_or_else(|| format!("no plan in the answer: {}", answer.body))?;
    let plan = signed.open_plan(key).ok_or(
        "the plan is not signed by this appliance's hasher (another key, or an altered answer): nothing approved",
    )?;
    Ok((plan, signed.digest()))
}

/// `None` when approved; else the exit code.
fn approve(o: &Options, plan: &Plan, out: &mut Value) -> Option<i32> {
    if o.yes {
        return None;
    }
    if !std::io::stdin().is_terminal() {
        eprintln!("integrity-monitor rebaseline: stdin is not a terminal, so the plan cannot be approved by asking: read it (--json) and pass --yes to approve it");
        out["result"] = json!("not_approved");
        return Some(exit::USAGE);
    }
    eprint!(
        "Adopt this plan as generation {}? Type yes to approve: ",
        plan.generation
    );
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    if line.trim().eq_ignore_ascii_case("yes") {
        return None;
    }
    eprintln!("not approved: nothing was sent");
    out["result"] = json!("declined");
    Some(exit::DECLINED)
}

/// What the proof was made over.
struct Sent<'a> {
    challenge: &'a str,
    digest: &'a str,
    proof: &'a str,
    plan: &'a Plan,
}

/// The exit code for the answer to the proof, judged by the hasher's signed word only.
fn judge(
    answer: Result<client::Answer, String>,
    sent: &Sent,
    key: &[u8],
    json: bool,
    out: &mut Value,
) -> i32 {
    let (status, body) = match answer {
        Ok(a) => (a.status.to_string(), a.body),
        Err(e) => (e, Value::Null),
    };
    let outcome = signed(&body["outcome"])
        .and_then(|s| s.open_outcome(key))
        .filter(|o| {
            o.challenge == sent.challenge && o.plan == sent.digest && o.proof == sent.proof
        });
    let Some(outcome) = outcome else {
        let why = format!(
            "the answer ({status}) is not the hasher's signed word, so what happened is unknown. Whoever holds the proof can adopt with it only the plan approved ({}, generation {}), once, within 120 s of its challenge; check `/api/v1/status` (baseline.generation) and the audit log's rebaseline records before running this again",
            sent.digest, sent.plan.generation
        );
        eprintln!("integrity-monitor rebaseline: {why}");
        out["result"] = json!("unknown");
        out["error"] = json!(why);
        return exit::UNKNOWN;
    };
    out["outcome"] = serde_json::to_value(&outcome).unwrap_or_default();
    match &outcome.adopted {
        Some(a) if a.candidate == sent.plan.candidate && a.generation == sent.plan.generation => {
            out["result"] = json!("adopted");
            if !json {
                println!("{}", show::adopted(&outcome, &body));
            }
            exit::ADOPTED
        }
        _ => refused(&outcome, &body, key, json, out),
    }
}

/// A signed refusal: why, and the new plan where the files changed.
fn refused(outcome: &Outcome, body: &Value, key: &[u8], json: bool, out: &mut Value) -> i32 {
    out["result"] = json!("refused");
    let new = signed(&body["plan"])
        .filter(|s| outcome.new_plan.as_deref() == Some(s.digest().as_str()))
        .and_then(|s| Some((s.open_plan(key)?, s.digest())));
    if let Some((plan, digest)) = &new {
        out["new_plan"] = serde_json::to_value(plan).unwrap_or_default();
        out["new_plan_digest"] = json!(digest);
        if !json {
            print!("{}", show::plan(plan, digest));
        }
    }
    let again = if new.is_some() {
        " The hasher now holds the plan above: run the ceremony again to approve it."
    } else {
        ""
    };
    eprintln!(
        "integrity-monitor rebaseline: refused, nothing adopted (the hasher's signed word): {}.{again}",
        show::escape(&outcome.refused)
    );
    exit::REFUSED
}

/// A signed payload as the api relays it (`{"payload": text, "hmac": hex}`).
fn signed(v: &Value) -> Option<Signed> {
    Some(Signed {
        payload: v["payload"].as_str()?.as_bytes().to_vec(),
        hmac: v["hmac"].as_str()?.to_owned(),
    })
}

/// Shows the time waited on a terminal (stderr), nothing in scripts or with `--json`.
fn progress(json: bool, what: &'static str) -> impl FnMut(Duration) {
    let shown = !json && std::io::stderr().is_terminal();
    move |waited| {
        if shown {
            eprint!("\r{what}… {} s ", waited.as_secs());
            let _ = std::io::stderr().flush();
        }
    }
}

/// A secret file's bytes (at most `max`), wiped when dropped.
fn read_secret(path: &Path, max: usize) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    std::fs::File::open(path)
        .and_then(|f| f.take(max as u64 + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() > max || bytes.trim_ascii().is_empty() {
        return Err(format!(
            "{}: not a secret ({} bytes)",
            path.display(),
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// The service token file, found where the service finds it: `explicit` (`--token-file`),
/// else the unit's credential, else the appliance's credential store, else the legacy path.
fn token_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_owned();
    }
    let credential =
        std::env::var_os("CREDENTIALS_DIRECTORY").map(|d| Path::new(&d).join("service-token"));
    credential
        .into_iter()
        .chain([PathBuf::from(
            "/var/lib/secure-ai/credentials/integrity-monitor.token",
        )])
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("/run/secure-ai/service-token"))
}
