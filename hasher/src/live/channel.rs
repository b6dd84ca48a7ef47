//! Blocking end of the SEQPACKET channel: whole datagrams in, bounded by a fixed buffer.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};

use nix::errno::Errno;
use nix::sys::socket::{recv, send, MsgFlags};
use protocol::frame::{self, FrameError};
use protocol::{Reassembler, MAX_FRAME};
use serde::Serialize;

/// Why receiving stopped.
#[derive(Debug)]
pub(crate) enum RecvError {
    /// The peer closed the channel.
    Closed,
    /// A datagram or message was refused; the channel stays usable.
    Frame(FrameError),
    /// The socket failed.
    Io(Errno),
}

/// One end of the channel.
pub(crate) struct Channel {
    sender: Sender,
    buf: Box<[u8]>,
    reasm: Reassembler,
}

/// The sending half, shared with the sentinel thread; a message's frames go out under one
/// lock, so a notice never lands between the frames of a response.
#[derive(Clone)]
pub(crate) struct Sender {
    fd: Arc<OwnedFd>,
    lock: Arc<Mutex<()>>,
}

impl Sender {
    /// Sends one message, cut into frames.
    pub(crate) fn send<T: Serialize>(&self, id: u64, body: &T) -> Result<(), Errno> {
        let frames = frame::encode(id, body).map_err(|_| Errno::EMSGSIZE)?;
        let _whole = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        for f in frames {
            loop {
                match send(self.fd.as_raw_fd(), &f, MsgFlags::MSG_NOSIGNAL) {
                    Ok(_) => break,
                    Err(Errno::EINTR) => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

impl Channel {
    /// Wraps a connected SEQPACKET socket.
    pub(crate) fn new(fd: OwnedFd) -> Channel {
        Channel {
            sender: Sender {
                fd: Arc::new(fd),
                lock: Arc::new(Mutex::new(())),
            },
            buf: vec![0u8; MAX_FRAME + 1].into_boxed_slice(),
            reasm: Reassembler::new(),
        }
    }

    /// The socket, for polling.
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.sender.fd.as_fd()
    }

    /// A sending half for another thread.
    pub(crate) fn sender(&self) -> Sender {
        self.sender.clone()
    }

    /// Receives datagrams until one whole message is in.
    pub(crate) fn recv_message(&mut self) -> Result<Vec<u8>, RecvError> {
        loop {
            let n = match recv(
                self.sender.fd.as_raw_fd(),
                &mut self.buf,
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(0) => return Err(RecvError::Closed),
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(RecvError::Io(e)),
            };
            // A datagram that fills the buffer was larger than MAX_FRAME (the kernel truncated it).
            match self.reasm.push(&self.buf[..n]) {
                Ok(Some(message)) => return Ok(message),
                Ok(None) => continue,
                Err(e) => return Err(RecvError::Frame(e)),
            }
        }
    }

    /// Sends one message, cut into frames.
    pub(crate) fn send<T: Serialize>(&self, id: u64, body: &T) -> Result<(), Errno> {
        self.sender.send(id, body)
    }
}
