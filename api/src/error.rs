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
}

impl MonitorError {
    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            MonitorError::HasherDown(_) => 503,
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
