//! `integrity-monitor rebaseline --key FILE [--url URL]`: the key ceremony, as easy as curl.
//! Root (or whoever holds the HMAC key file) asks the hasher, through the api, for a one-time
//! challenge, proves the rebaseline authority derived from the key over it, and sends the
//! proof back. The key never leaves this process; the api relays bytes that are worthless a
//! second time.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use protocol::authority::{Authority, REBASELINE};

/// Largest answer read.
const MAX_ANSWER: u64 = 16 << 20;
/// A rebaseline reads every watched file: give it time.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(900);

/// Runs the ceremony against the monitor at `url`; the exit code (0: rebaselined).
pub fn rebaseline(key: &Path, url: &str) -> i32 {
    match run(key, url) {
        Ok(body) => {
            println!("{body}");
            0
        }
        Err(why) => {
            eprintln!("integrity-monitor rebaseline: {why}");
            1
        }
    }
}

fn run(key: &Path, url: &str) -> Result<String, String> {
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    std::fs::File::open(key)
        .and_then(|f| {
            f.take(protocol::sign::MAX_KEY_LEN as u64 + 1)
                .read_to_end(&mut bytes)
        })
        .map_err(|e| format!("{}: {e}", key.display()))?;
    if bytes.len() < protocol::sign::MIN_KEY_LEN || bytes.len() > protocol::sign::MAX_KEY_LEN {
        return Err(format!(
            "{}: not an HMAC key ({} bytes)",
            key.display(),
            bytes.len()
        ));
    }
    let authority = Authority::derive(&bytes);
    let host = url
        .strip_prefix("http://")
        .map(|h| h.trim_end_matches('/'))
        .filter(|h| !h.is_empty() && !h.contains('/'))
        .ok_or_else(|| format!("{url}: expected http://HOST:PORT"))?;
    let (code, body) = post(host, "/api/v1/rebaseline/challenge", None)?;
    if code != 200 {
        return Err(format!("no challenge ({code}): {body}"));
    }
    let answer: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("challenge answer: {e}"))?;
    let challenge = answer["challenge"]
        .as_str()
        .filter(|c| protocol::authority::challenge_ok(c))
        .ok_or_else(|| format!("challenge answer without a challenge: {body}"))?;
    let proof = authority.prove(challenge, REBASELINE);
    let header = format!("{challenge}:{proof}");
    match post(host, "/api/v1/rebaseline", Some(&header))? {
        (200, body) => Ok(body),
        (code, body) => Err(format!("refused ({code}): {body}")),
    }
}

/// One `POST` with `Connection: close`: (status, body).
fn post(host: &str, path: &str, proof: Option<&str>) -> Result<(u16, String), String> {
    let fail = |e: std::io::Error| format!("{host}: {e}");
    let mut s = TcpStream::connect(host).map_err(fail)?;
    s.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(fail)?;
    let extra = proof.map_or_else(String::new, |p| {
        format!("{}: {p}\r\n", crate::http::PROOF_HEADER)
    });
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\n{extra}\r\n"
    )
    .map_err(fail)?;
    let mut raw = Vec::new();
    s.take(MAX_ANSWER).read_to_end(&mut raw).map_err(fail)?;
    let text = String::from_utf8_lossy(&raw);
    let code = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{host}: not an HTTP answer"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((code, body.to_owned()))
}
