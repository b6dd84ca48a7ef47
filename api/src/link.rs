//! The api's end of the hasher channel: async, one call at a time, anything unexpected fatal.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{recv, send, MsgFlags};
use protocol::frame::{self, FrameError};
use protocol::{Reassembler, Request, Response, MAX_FRAME};
use std::sync::Arc;
use thiserror::Error;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use tokio::sync::{mpsc, oneshot, Notify};

/// Why the hasher can no longer be trusted to answer.
#[derive(Debug, Error, Clone)]
pub enum LinkError {
    /// The hasher closed the channel or exited.
    #[error("hasher closed the channel")]
    Closed,
    /// The socket failed.
    #[error("hasher channel failed: {0}")]
    Io(String),
    /// The hasher sent a frame or message that does not decode.
    #[error("hasher sent a bad frame: {0}")]
    Frame(FrameError),
    /// The hasher answered another request, or spoke unasked.
    #[error("hasher sent a message out of turn (id {got}, expected {expected})")]
    OutOfTurn {
        /// Id received.
        got: u64,
        /// Id expected.
        expected: u64,
    },
    /// The api cut the link after the hasher misbehaved.
    #[error("link cut after the hasher misbehaved")]
    Cut,
    /// The link task is gone.
    #[error("hasher link is down")]
    Down,
}

/// The hasher's change notices: how many so far, and a wake-up for the scheduler.
#[derive(Debug, Default)]
pub struct Changes {
    /// Wakes the scheduler: scan now.
    pub notify: Notify,
    /// Notices received so far.
    pub count: std::sync::atomic::AtomicU64,
}

impl Changes {
    /// One notice arrived.
    pub fn seen(&self) {
        self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.notify.notify_one();
    }

    /// Notices received so far.
    pub fn count(&self) -> u64 {
        self.count.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The channel to the hasher.
pub struct Link {
    fd: AsyncFd<OwnedFd>,
    buf: Box<[u8]>,
    reasm: Reassembler,
    next_id: u64,
    notices: Arc<Changes>,
}

impl Link {
    /// Wraps a connected SEQPACKET socket (made non-blocking here); the hasher's change
    /// notices wake `notices`.
    pub fn new(fd: OwnedFd, notices: Arc<Changes>) -> io::Result<Link> {
        nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(io::Error::from)?;
        Ok(Link {
            fd: crate::sys::register(fd)?,
            buf: vec![0u8; MAX_FRAME + 1].into_boxed_slice(),
            reasm: Reassembler::new(),
            next_id: 1,
            notices,
        })
    }

    /// Sends `request` and waits for its response; with it, how many of the notices received
    /// so far that response covers (all but those sent while it was being answered).
    pub async fn call(&mut self, request: &Request) -> Result<(Response, u64), LinkError> {
        let id = self.next_id;
        self.next_id += 1;
        let frames = frame::encode(id, request).map_err(LinkError::Frame)?;
        for f in &frames {
            self.send_frame(f).await?;
        }
        let mut uncovered = 0u64;
        loop {
            let message = self.recv_message().await?;
            let envelope = frame::decode::<Response>(&message).map_err(LinkError::Frame)?;
            if let Some(during_request) = self.notice(&envelope) {
                uncovered += u64::from(during_request);
                continue;
            }
            if envelope.id != id {
                return Err(LinkError::OutOfTurn {
                    got: envelope.id,
                    expected: id,
                });
            }
            // Counted here, in the order the messages came: a notice after the response
            // must not count as covered by it.
            let covered = self.notices.count().saturating_sub(uncovered);
            return Ok((envelope.body, covered));
        }
    }

    /// A change notice (unsolicited, id 0) wakes the scheduler; returns whether it was sent
    /// while a request was answered (`None`: not a notice).
    fn notice(&self, envelope: &protocol::Envelope<Response>) -> Option<bool> {
        let Response::Notice { during_request, .. } = envelope.body else {
            return None;
        };
        if envelope.id != 0 {
            return None;
        }
        self.notices.seen();
        Some(during_request)
    }

    async fn send_frame(&self, f: &[u8]) -> Result<(), LinkError> {
        loop {
            let mut guard = self
                .fd
                .writable()
                .await
                .map_err(|e| LinkError::Io(e.to_string()))?;
            match guard.try_io(|fd| {
                send(fd.as_raw_fd(), f, MsgFlags::MSG_NOSIGNAL).map_err(io::Error::from)
            }) {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EPIPE) => {
                    return Err(LinkError::Closed)
                }
                Ok(Err(e)) => return Err(LinkError::Io(e.to_string())),
                Err(_would_block) => continue,
            }
        }
    }

    async fn recv_datagram(&mut self) -> Result<usize, LinkError> {
        loop {
            let mut guard = self
                .fd
                .ready(Interest::READABLE)
                .await
                .map_err(|e| LinkError::Io(e.to_string()))?;
            let buf = &mut self.buf;
            match guard.try_io(|fd| {
                recv(fd.as_raw_fd(), buf, MsgFlags::MSG_CMSG_CLOEXEC).map_err(io::Error::from)
            }) {
                Ok(Ok(0)) => return Err(LinkError::Closed),
                Ok(Ok(n)) => return Ok(n),
                Ok(Err(e)) if e.raw_os_error() == Some(Errno::EINTR as i32) => continue,
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ECONNRESET) => {
                    return Err(LinkError::Closed)
                }
                Ok(Err(e)) => return Err(LinkError::Io(e.to_string())),
                Err(_would_block) => continue,
            }
        }
    }

    async fn recv_message(&mut self) -> Result<Vec<u8>, LinkError> {
        loop {
            let n = self.recv_datagram().await?;
            // n == MAX_FRAME + 1 means the datagram was larger and got truncated: refused.
            if let Some(message) = self.reasm.push(&self.buf[..n]).map_err(LinkError::Frame)? {
                return Ok(message);
            }
        }
    }

    /// Serves the idle channel: passes change notices on and resolves when the hasher is gone
    /// or speaks out of turn.
    pub async fn idle_failure(&mut self) -> LinkError {
        loop {
            let message = match self.recv_message().await {
                Ok(m) => m,
                Err(e) => return e,
            };
            match frame::decode::<Response>(&message) {
                Ok(envelope) if self.notice(&envelope).is_some() => continue,
                Ok(envelope) => {
                    return LinkError::OutOfTurn {
                        got: envelope.id,
                        expected: 0,
                    }
                }
                Err(e) => return LinkError::Frame(e),
            }
        }
    }
}

/// One request and where its answer goes.
pub struct Call {
    /// The request.
    pub request: Request,
    /// Where the response goes, with the notices it covers ([`Link::call`]).
    pub reply: oneshot::Sender<Result<(Response, u64), LinkError>>,
}

/// Owns the link: serves calls one at a time and watches the idle channel. Returns the call
/// queue and why the link ended (`None`: the queue closed); a link is never reused after an error.
pub async fn run(
    mut link: Link,
    mut calls: mpsc::Receiver<Call>,
    cut: Arc<Notify>,
) -> (mpsc::Receiver<Call>, Option<LinkError>) {
    let failure = loop {
        tokio::select! {
            () = cut.notified() => break LinkError::Cut,
            call = calls.recv() => {
                let Some(call) = call else { return (calls, None) };
                let result = link.call(&call.request).await;
                let failed = result.as_ref().err().cloned();
                let _ = call.reply.send(result);
                if let Some(e) = failed {
                    break e;
                }
            }
            e = link.idle_failure() => break e,
        }
    };
    tracing::error!(error = %failure, "hasher link lost");
    refuse_pending(&mut calls);
    (calls, Some(failure))
}

/// Answers every queued call with [`LinkError::Down`]: they were meant for a link that is gone.
pub fn refuse_pending(calls: &mut mpsc::Receiver<Call>) {
    while let Ok(call) = calls.try_recv() {
        let _ = call.reply.send(Err(LinkError::Down));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{recv, socketpair, AddressFamily, SockFlag, SockType};
    use protocol::message::ErrorKind;

    fn notice(during_request: bool) -> Vec<Vec<u8>> {
        let body = Response::Notice {
            changed: 1,
            overflow: false,
            during_request,
        };
        frame::encode(0, &body).expect("encode")
    }

    fn answer(id: u64) -> Vec<Vec<u8>> {
        let body = Response::Error {
            kind: ErrorKind::NoBaseline,
            message: "answer".into(),
        };
        frame::encode(id, &body).expect("encode")
    }

    /// A hasher that, for each request it reads, sends the frames `script` gives for its id.
    fn peer(fd: OwnedFd, script: fn(u64) -> Vec<Vec<Vec<u8>>>, requests: u64) {
        std::thread::spawn(move || {
            let mut buf = vec![0u8; MAX_FRAME + 1];
            for id in 1..=requests {
                recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).expect("request");
                for f in script(id).concat() {
                    send(fd.as_raw_fd(), &f, MsgFlags::empty()).expect("send");
                }
            }
        });
    }

    #[tokio::test]
    async fn a_notice_sent_while_a_request_is_answered_is_not_covered_by_its_answer() {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .expect("socketpair");
        // First request: the notice a scan sends before it starts (covered), the sentinel's
        // during it (not), the answer, then a notice after it (not, and not yet read). Second:
        // the answer alone, which covers all three.
        peer(
            theirs,
            |id| match id {
                1 => vec![notice(false), notice(true), answer(1), notice(false)],
                _ => vec![answer(id)],
            },
            2,
        );
        let notices = Arc::new(Changes::default());
        let mut link = Link::new(ours, notices.clone()).expect("link");
        let (_, covered) = link.call(&Request::ScanChanged).await.expect("first");
        assert_eq!(
            covered, 1,
            "only the notice sent before the scan is covered"
        );
        let (_, covered) = link.call(&Request::ScanChanged).await.expect("second");
        assert_eq!(covered, 3);
        assert_eq!(notices.count(), 3);
    }
}
