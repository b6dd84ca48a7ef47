//! The frame of the store's side files (what the slots remember, the chunk digests): a header
//! line naming what the file belongs to, binary records, then the hex HMAC-SHA256 under the
//! baseline key of everything before it. One frame, so a file is refused for the same reasons
//! (truncated, edited, re-keyed, extended) whichever it is.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};

use protocol::sign::MacWriter;

use crate::error::StoreError;
use crate::storing::store::Store;

/// Longest header line read.
const MAX_HEADER: u64 = 512;

/// The header line of a side file of records about one baseline:
/// `<magic> baseline=<digest> count=<n>`.
pub(crate) fn header(magic: &str, baseline: &str, count: usize) -> String {
    format!("{magic} baseline={baseline} count={count}\n")
}

/// Puts a record's path as [`Reading::path`] reads it.
pub(crate) fn put_path(
    put: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    path: &str,
) -> std::io::Result<()> {
    put(&u32::try_from(path.len()).unwrap_or(u32::MAX).to_le_bytes())?;
    put(path.as_bytes())
}

/// Writes `name` atomically: `head`, what `body` puts, then the HMAC of both under `key`.
pub(crate) fn write(
    store: &Store,
    key: &[u8],
    name: &str,
    head: &str,
    body: impl FnOnce(&mut dyn FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()>,
) -> Result<(), StoreError> {
    store
        .write_atomic_with(name, |sink| {
            let mut mac = MacWriter::new(key);
            {
                let mut put = |bytes: &[u8]| -> std::io::Result<()> {
                    sink.write_all(bytes)?;
                    mac.write_all(bytes)
                };
                put(head.as_bytes())?;
                body(&mut put)?;
            }
            sink.write_all(protocol::hexfmt::encode(&mac.finish()).as_bytes())
        })
        .map(drop)
}

/// Every record of `name`, a side file of records about the baseline with digest `baseline`
/// (its [`header`] begins with `magic`; at most `max` records), each read by `record`; taken
/// only when the file's HMAC under `key` verifies.
pub(crate) fn read_records<T>(
    store: &Store,
    key: &[u8],
    (name, magic): (&'static str, &str),
    baseline: &str,
    max: usize,
    mut record: impl FnMut(&mut Reading) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let mut file = Reading::open(store, key, name)?;
    let count = file.count(magic, baseline, max)?;
    let mut out = Vec::new();
    for _ in 0..count {
        out.push(record(&mut file)?);
    }
    file.finish()?;
    Ok(out)
}

/// A side file being read: its header line, then its records, each through the MAC.
pub(crate) struct Reading {
    name: &'static str,
    reader: BufReader<File>,
    mac: MacWriter,
    /// The header line as read (newline included), for the caller to match.
    pub(crate) head: Vec<u8>,
}

impl Reading {
    /// Opens `name` in `store` and reads its header line; `Err` says why not ("none stored").
    pub fn open(store: &Store, key: &[u8], name: &'static str) -> Result<Reading, String> {
        let file = match store.open_file(name) {
            Ok(Some(f)) => f,
            Ok(None) => return Err("none stored".into()),
            Err(e) => return Err(e.to_string()),
        };
        let mut reader = BufReader::with_capacity(64 * 1024, file);
        let mut head = Vec::new();
        let read = (&mut reader).take(MAX_HEADER).read_until(b'\n', &mut head);
        read.map_err(|e| format!("{name}: cannot read: {e}"))?;
        let mut mac = MacWriter::new(key);
        let _ = mac.write_all(&head);
        Ok(Reading {
            name,
            reader,
            mac,
            head,
        })
    }

    /// How many records follow a [`header`] of `magic` for the baseline with digest
    /// `baseline`; refused when the header is another's or the count over `max`.
    pub(crate) fn count(&self, magic: &str, baseline: &str, max: usize) -> Result<usize, String> {
        let name = self.name;
        let prefix = header(magic, baseline, 0);
        let prefix = prefix.trim_end_matches("0\n");
        let count = std::str::from_utf8(&self.head)
            .ok()
            .and_then(|h| h.strip_prefix(prefix))
            .and_then(|n| n.strip_suffix('\n'))
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| format!("{name} was written for another baseline (or is not one)"))?;
        if count > max {
            return Err(format!("{name}: {count} records (at most {max})"));
        }
        Ok(count)
    }

    /// A record's path: its length (u32 little-endian, 1 to `max`), then its UTF-8 bytes.
    pub(crate) fn path(&mut self, max: usize) -> Result<String, String> {
        let name = self.name;
        let len = u32::from_le_bytes(self.take::<4>()?) as usize;
        if len == 0 || len > max {
            return Err(format!("{name}: a path of {len} bytes"));
        }
        let mut path = vec![0u8; len];
        self.fill(&mut path)?;
        String::from_utf8(path).map_err(|_| format!("{name}: a path not UTF-8"))
    }

    /// Reads exactly `buf.len()` bytes of a record into `buf`, through the MAC.
    pub(crate) fn fill(&mut self, buf: &mut [u8]) -> Result<(), String> {
        self.reader
            .read_exact(buf)
            .map_err(|e| format!("{}: truncated: {e}", self.name))?;
        let _ = self.mac.write_all(buf);
        Ok(())
    }

    /// Reads exactly `N` bytes of a record, through the MAC.
    pub(crate) fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut b = [0u8; N];
        self.fill(&mut b)?;
        Ok(b)
    }

    /// Checks the HMAC that ends the file: what was read is taken only if it verifies.
    pub(crate) fn finish(self) -> Result<(), String> {
        let name = self.name;
        let mut tag = String::new();
        let tail = self.reader.take(65).read_to_string(&mut tag);
        tail.map_err(|e| format!("{name}: cannot read its HMAC: {e}"))?;
        if !self.mac.matches_hex(&tag) {
            return Err(format!(
                "{name}: HMAC does not verify (altered, or written under another key)"
            ));
        }
        Ok(())
    }
}
