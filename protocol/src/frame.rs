//! Framing: a message is postcard-encoded in an [`Envelope`], then cut into datagrams of at
//! most [`MAX_FRAME`] bytes. One datagram is one SEQPACKET message, so the receiver reads into a
//! fixed buffer of `MAX_FRAME + 1` bytes and refuses any datagram that fills it.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use thiserror::Error;

use crate::message::{Envelope, PROTOCOL_VERSION};

/// Largest datagram either side sends or accepts.
pub const MAX_FRAME: usize = 64 * 1024;
/// Largest reassembled message; a baseline of 200,000 entries fits.
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// Payload bytes per frame, leaving room for the frame header.
const CHUNK: usize = MAX_FRAME - 64;

#[derive(Serialize, Deserialize)]
struct Frame<'a> {
    version: u16,
    id: u64,
    seq: u32,
    last: bool,
    #[serde(borrow)]
    data: &'a [u8],
}

/// Why a datagram or message was refused. Every variant means the peer is broken or hostile.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum FrameError {
    /// The datagram is larger than [`MAX_FRAME`].
    #[error("frame of {0} bytes or more exceeds the {MAX_FRAME}-byte cap")]
    FrameTooLarge(usize),
    /// The reassembled message would exceed [`MAX_MESSAGE`].
    #[error("message exceeds the {MAX_MESSAGE}-byte cap")]
    MessageTooLarge,
    /// The frame or message does not decode.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// Bytes follow the encoded frame or message.
    #[error("trailing bytes after the {0}")]
    Trailing(&'static str),
    /// The peer speaks another protocol version.
    #[error("protocol version {0} is not {PROTOCOL_VERSION}")]
    Version(u16),
    /// A frame arrived out of sequence or for another message.
    #[error("frame out of sequence")]
    Sequence,
}

/// Encodes `body` under request `id` into the datagrams to send, in order.
pub fn encode<T: Serialize>(id: u64, body: &T) -> Result<Vec<Vec<u8>>, FrameError> {
    let message = postcard::to_allocvec(&Envelope {
        version: PROTOCOL_VERSION,
        id,
        body,
    })
    .map_err(|_| FrameError::Malformed("message (encode)"))?;
    if message.len() > MAX_MESSAGE {
        return Err(FrameError::MessageTooLarge);
    }
    let chunks: Vec<&[u8]> = if message.is_empty() {
        vec![&[]]
    } else {
        message.chunks(CHUNK).collect()
    };
    let last_index = chunks.len() - 1;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, data)| {
            let seq = u32::try_from(i).map_err(|_| FrameError::MessageTooLarge)?;
            let frame = Frame {
                version: PROTOCOL_VERSION,
                id,
                seq,
                last: i == last_index,
                data,
            };
            postcard::to_allocvec(&frame).map_err(|_| FrameError::Malformed("frame (encode)"))
        })
        .collect()
}

/// Collects the frames of one message at a time, bounded by [`MAX_MESSAGE`].
#[derive(Debug, Default)]
pub struct Reassembler {
    buf: Vec<u8>,
    current: Option<(u64, u32)>,
}

impl Reassembler {
    /// A reassembler with nothing pending.
    pub fn new() -> Reassembler {
        Reassembler::default()
    }

    /// True when a message is partly received.
    pub fn pending(&self) -> bool {
        self.current.is_some()
    }

    /// Takes one received datagram; returns the whole message when its last frame arrives.
    /// On error the partial message is dropped.
    pub fn push(&mut self, datagram: &[u8]) -> Result<Option<Vec<u8>>, FrameError> {
        let result = self.push_inner(datagram);
        if result.is_err() {
            self.buf = Vec::new();
            self.current = None;
        }
        result
    }

    fn push_inner(&mut self, datagram: &[u8]) -> Result<Option<Vec<u8>>, FrameError> {
        if datagram.len() > MAX_FRAME {
            return Err(FrameError::FrameTooLarge(datagram.len()));
        }
        let (frame, rest) = postcard::take_from_bytes::<Frame<'_>>(datagram)
            .map_err(|_| FrameError::Malformed("frame"))?;
        if !rest.is_empty() {
            return Err(FrameError::Trailing("frame"));
        }
        if frame.version != PROTOCOL_VERSION {
            return Err(FrameError::Version(frame.version));
        }
        let expected = match self.current {
            None => (frame.id, 0),
            Some((id, seq)) => (id, seq.checked_add(1).ok_or(FrameError::Sequence)?),
        };
        if (frame.id, frame.seq) != expected {
            return Err(FrameError::Sequence);
        }
        if self.buf.len() + frame.data.len() > MAX_MESSAGE {
            return Err(FrameError::MessageTooLarge);
        }
        self.buf.extend_from_slice(frame.data);
        if frame.last {
            self.current = None;
            Ok(Some(std::mem::take(&mut self.buf)))
        } else {
            self.current = Some(expected);
            Ok(None)
        }
    }
}

/// Decodes a reassembled message, refusing trailing bytes and other versions.
pub fn decode<T: DeserializeOwned>(message: &[u8]) -> Result<Envelope<T>, FrameError> {
    let (envelope, rest) = postcard::take_from_bytes::<Envelope<T>>(message)
        .map_err(|_| FrameError::Malformed("message"))?;
    if !rest.is_empty() {
        return Err(FrameError::Trailing("message"));
    }
    if envelope.version != PROTOCOL_VERSION {
        return Err(FrameError::Version(envelope.version));
    }
    Ok(envelope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Request, Response};

    fn round_trip<T: Serialize + DeserializeOwned>(id: u64, body: &T) -> Envelope<T> {
        let frames = encode(id, body).expect("encodes");
        let mut r = Reassembler::new();
        let mut out = None;
        for f in &frames {
            assert!(f.len() <= MAX_FRAME);
            assert!(out.is_none());
            out = r.push(f).expect("frame accepted");
        }
        decode(&out.expect("complete")).expect("decodes")
    }

    #[test]
    fn small_and_large_messages_round_trip() {
        let e = round_trip(7, &Request::Scan);
        assert_eq!((e.id, e.body), (7, Request::Scan));
        let big = Request::CreateBaseline {
            token: Some(vec![0xa5; 5 * MAX_FRAME + 17]),
            proof: None,
        };
        let e = round_trip(9, &big);
        assert_eq!(e.body, big);
    }

    #[test]
    fn oversized_datagram_is_refused_before_decoding() {
        let mut r = Reassembler::new();
        assert_eq!(
            r.push(&vec![0u8; MAX_FRAME + 1]),
            Err(FrameError::FrameTooLarge(MAX_FRAME + 1))
        );
    }

    #[test]
    fn truncated_trailing_and_garbage_frames_are_refused() {
        let frames = encode(
            1,
            &Request::CreateBaseline {
                token: None,
                proof: None,
            },
        )
        .expect("encodes");
        let f = &frames[0];
        let mut r = Reassembler::new();
        assert!(r.push(&f[..f.len() - 1]).is_err());
        let mut extra = f.clone();
        extra.push(0);
        assert_eq!(r.push(&extra), Err(FrameError::Trailing("frame")));
        assert!(r.push(&[0xff; 40]).is_err());
        assert!(r.push(&[]).is_err());
    }

    #[test]
    fn out_of_order_and_interleaved_frames_are_refused() {
        let big = Request::CreateBaseline {
            token: Some(vec![1; 3 * MAX_FRAME]),
            proof: None,
        };
        let frames = encode(3, &big).expect("encodes");
        let mut r = Reassembler::new();
        assert_eq!(r.push(&frames[1]), Err(FrameError::Sequence));
        assert_eq!(r.push(&frames[0]), Ok(None));
        let other = encode(4, &big).expect("encodes");
        assert_eq!(r.push(&other[1]), Err(FrameError::Sequence));
        assert!(!r.pending());
    }

    #[test]
    fn message_cap_holds_across_frames() {
        // A hostile peer streams non-final frames forever: refused once past MAX_MESSAGE.
        let data = vec![0u8; CHUNK];
        let mut r = Reassembler::new();
        let mut refused = false;
        for seq in 0..u32::try_from(MAX_MESSAGE / CHUNK + 2).unwrap_or(u32::MAX) {
            let f = postcard::to_allocvec(&Frame {
                version: PROTOCOL_VERSION,
                id: 1,
                seq,
                last: false,
                data: &data,
            })
            .expect("encodes");
            if let Err(e) = r.push(&f) {
                assert_eq!(e, FrameError::MessageTooLarge);
                refused = true;
                break;
            }
        }
        assert!(refused);
    }

    #[test]
    fn wrong_version_and_trailing_message_bytes_are_refused() {
        let msg = postcard::to_allocvec(&Envelope {
            version: 99,
            id: 1,
            body: Request::Scan,
        })
        .expect("enc");
        assert_eq!(
            decode::<Request>(&msg).map(|_| ()),
            Err(FrameError::Version(99))
        );
        let mut msg = postcard::to_allocvec(&Envelope {
            version: PROTOCOL_VERSION,
            id: 1,
            body: Request::Scan,
        })
        .expect("enc");
        msg.push(0);
        assert_eq!(
            decode::<Request>(&msg).map(|_| ()),
            Err(FrameError::Trailing("message"))
        );
        // A request is not a response: decoding with the wrong type fails or mismatches.
        let req = postcard::to_allocvec(&Envelope {
            version: PROTOCOL_VERSION,
            id: 1,
            body: Request::Reload,
        })
        .expect("enc");
        assert!(decode::<Response>(&req)
            .map(|e| e.body)
            .ok()
            .filter(|b| matches!(b, Response::Error { .. }))
            .is_none());
    }
}
