//! Tests only: a private swtpm serving a TPM 2.0 on a unix socket in a temp dir, stopped
//! when dropped (Debian: swtpm; `tests/run.sh` installs it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running swtpm.
pub(crate) struct Swtpm {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Swtpm {
    /// Starts one with fresh state (started up, `TPM2_Startup(CLEAR)` done).
    pub(crate) fn start() -> Swtpm {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("tpm.sock");
        let state = dir.path().join("state");
        std::fs::create_dir(&state).expect("state dir");
        let child = Command::new("swtpm")
            .arg("socket")
            .arg("--tpm2")
            .arg("--tpmstate")
            .arg(format!("dir={}", state.display()))
            .arg("--server")
            .arg(format!("type=unixio,path={}", socket.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}.ctrl", socket.display()))
            .arg("--flags")
            .arg("not-need-init,startup-clear")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("swtpm (Debian: apt-get install swtpm; tests/run.sh installs it)");
        // The socket file appears at bind(), before swtpm listens: wait until it accepts.
        for _ in 0..250 {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Swtpm {
            child,
            socket,
            _dir: dir,
        }
    }

    /// Its data socket.
    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
