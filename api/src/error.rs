//! Errors at the api's boundaries, each mapped to one HTTP status.

use protocol::message::ErrorKind;
use thiserror::Error;

/// Why an operation on the monitor failed.
#[derive(Debug, Error)]
pub enum MonitorError {
    /// The hasher is gone or misbehaved; no evidence can be had.
    #[error("hasher unavailable: {0}")]
    HasherDown(String),
    /// The hasher refused the request.
    #[error("{message}")]
    Refused {
        /// Its failure class.
        kind: ErrorKind,
        /// Its explanation for the operator.
        message: String,
    },
    /// The hasher refused a ceremony's proof, in its signed word.
    #[error("{reason}")]
    CeremonyRefused {
        /// Why, as the signed outcome says.
        reason: String,
        /// The signed `plan::Outcome`, for the operator's tool to check.
        outcome: protocol::plan::Signed,
        /// The new signed plan, when the files changed since the one approved.
        plan: Option<protocol::plan::Signed>,
    },
}

impl MonitorError {
    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            MonitorError::HasherDown(_) => 503,
            MonitorError::CeremonyRefused { plan: Some(_), .. } => 409,
            MonitorError::CeremonyRefused { plan: None, .. } => 403,
            MonitorError::Refused { kind, .. } => match kind {
                ErrorKind::PolicyInvalid => 422,
                ErrorKind::BaselineFailed
                | ErrorKind::BaselineRejected
                | ErrorKind::NoBaseline
                | ErrorKind::RestartRequired => 409,
                ErrorKind::Protocol => 502,
                ErrorKind::Unauthorized => 403,
            },
        }
    }

    /// A short machine-readable code for JSON bodies.
    pub fn code(&self) -> &'static str {
        match self {
            MonitorError::HasherDown(_) => "hasher_unavailable",
            MonitorError::CeremonyRefused { plan: Some(_), .. } => "plan_changed",
            MonitorError::CeremonyRefused { plan: None, .. } => "proof_refused",
            MonitorError::Refused { kind, .. } => match kind {
                ErrorKind::PolicyInvalid => "policy_invalid",
                ErrorKind::BaselineFailed => "baseline_failed",
                ErrorKind::BaselineRejected => "baseline_rejected",
                ErrorKind::NoBaseline => "no_baseline",
                ErrorKind::RestartRequired => "restart_required",
                ErrorKind::Protocol => "protocol_error",
                ErrorKind::Unauthorized => "invalid_token",
            },
        }
    }
}

/// `--incident-url` names no loopback HTTP endpoint.
#[derive(Debug, Error)]
pub enum RecorderUrlError {
    /// Not `http://`.
    #[error("incident URL must start with http://")]
    Scheme,
    /// The host is not `IP:port` (or `localhost:port`).
    #[error("incident URL host {host}: {why}")]
    Host {
        /// The host part as given.
        host: String,
        /// The parser's message.
        why: std::net::AddrParseError,
    },
    /// Not on loopback: the api's sandbox connects nowhere else.
    #[error("incident URL {0} is not on loopback")]
    NotLoopback(String),
}

/// One report to the incident recorder failed (it is retried).
#[derive(Debug, Error)]
pub enum PostError {
    /// No answer in time.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// The connection failed.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// HTTP failed.
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built.
    #[error("request: {0}")]
    Request(#[from] hyper::http::Error),
    /// The recorder answered other than 2xx.
    #[error("recorder answered {0}")]
    Status(u16),
}

/// A hasher socket that cannot be used.
#[derive(Debug, Error)]
pub enum ConnectError {
    /// connect(2) failed.
    #[error("{}: {why}", path.display())]
    Connect {
        /// The socket.
        path: std::path::PathBuf,
        /// The OS error.
        why: std::io::Error,
    },
    /// The peer is neither root nor the configured uid: not our hasher.
    #[error("{}: peer uid {uid} is neither root (systemd) nor --hasher-peer-uid", path.display())]
    Peer {
        /// The socket.
        path: std::path::PathBuf,
        /// The peer's uid.
        uid: u32,
    },
}
