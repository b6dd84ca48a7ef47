//! The TPM's character device (`/dev/tpmrm0`, the kernel's resource manager), or for tests a
//! swtpm unix socket: one command written, its whole response read back. Opened before the
//! sandbox and kept at a fixed descriptor (`sys::TPM_FD`), the one besides stderr that the
//! seccomp filter lets `write(2)` reach. Plain `read`/`write` on a `File`, on both.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::wire;

/// The appliance's TPM, through the kernel's resource manager.
pub(crate) const DEFAULT_DEVICE: &str = "/dev/tpmrm0";

/// An open TPM.
#[derive(Debug)]
pub(crate) struct Device {
    file: File,
    path: PathBuf,
}

/// What went wrong talking to the TPM.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeviceError {
    /// The device could not be opened.
    #[error("{path}: {why}")]
    Open {
        /// The device.
        path: PathBuf,
        /// Why.
        why: std::io::Error,
    },
    /// A write or read failed.
    #[error("{path}: {why}")]
    Io {
        /// The device.
        path: PathBuf,
        /// Why.
        why: std::io::Error,
    },
    /// The response is out of form.
    #[error("{path}: {why}")]
    Wire {
        /// The device.
        path: PathBuf,
        /// Why.
        why: wire::WireError,
    },
}

impl DeviceError {
    /// The TPM's response code, when it answered with one.
    pub(crate) fn code(&self) -> Option<u32> {
        match self {
            DeviceError::Wire {
                why: wire::WireError::Code(rc),
                ..
            } => Some(wire::base_code(*rc)),
            _ => None,
        }
    }
}

impl Device {
    /// Opens `path`: a character device read-write, or a swtpm `unixio` socket connected
    /// (tests: `--tpm-device`).
    pub(crate) fn open(path: &Path) -> Result<Device, DeviceError> {
        let fail = |why| DeviceError::Open {
            path: path.to_owned(),
            why,
        };
        let meta = std::fs::metadata(path).map_err(fail)?;
        let file = if meta.file_type().is_socket() {
            let stream = std::os::unix::net::UnixStream::connect(path).map_err(fail)?;
            File::from(std::os::fd::OwnedFd::from(stream))
        } else {
            OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                .open(path)
                .map_err(fail)?
        };
        Ok(Device {
            file,
            path: path.to_owned(),
        })
    }

    /// The device opened at `path`, now on another descriptor (`sys::place_tpm`).
    pub(crate) fn open_placed(file: File, path: PathBuf) -> Device {
        Device { file, path }
    }

    /// Gives the descriptor up (to be placed).
    pub(crate) fn into_parts(self) -> (File, PathBuf) {
        (self.file, self.path)
    }

    /// Where it was opened.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Sends `command`; the response, checked for success, as `parse` reads it.
    pub(super) fn call<T>(
        &mut self,
        command: &[u8],
        parse: impl FnOnce(&[u8]) -> Result<T, wire::WireError>,
    ) -> Result<T, DeviceError> {
        let response = self.transact(command)?;
        parse(&response).map_err(|why| DeviceError::Wire {
            path: self.path.clone(),
            why,
        })
    }

    /// One command out, its whole response in (the device answers in one read; a socket may
    /// take several, up to the size the header announces).
    pub(crate) fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>, DeviceError> {
        let io = |why| DeviceError::Io {
            path: self.path.clone(),
            why,
        };
        self.file.write_all(command).map_err(io)?;
        let mut buf = vec![0u8; wire::MAX_RESPONSE];
        let mut got = 0;
        loop {
            let n = match self.file.read(&mut buf[got..]) {
                Ok(0) => return Err(io(std::io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io(e)),
            };
            got += n;
            if got < wire::HEADER {
                continue;
            }
            match wire::announced_size(&buf[..got]) {
                Some(size) if (wire::HEADER..=wire::MAX_RESPONSE).contains(&size) => {
                    if got >= size {
                        buf.truncate(size);
                        return Ok(buf);
                    }
                }
                _ => {
                    return Err(DeviceError::Wire {
                        path: self.path.clone(),
                        why: wire::WireError::Malformed("response size out of bounds"),
                    })
                }
            }
        }
    }
}
