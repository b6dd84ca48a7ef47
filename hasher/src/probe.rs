//! `--sandbox-probe`: after installing the very same sandbox as a real run, attempt one act
//! and report whether the kernel allowed it. The sandbox tests drive this to try each attack;
//! it can do nothing the sandbox does not already permit.

use std::io::{Read, Write};

/// Attempts `act` on `arg`; prints `probe ACT: allowed` or `probe ACT: refused errno=N` on stderr.
pub fn run(act: &str, arg: &str) -> i32 {
    let pid = || nix::unistd::Pid::from_raw(arg.parse().unwrap_or(0));
    let result: std::io::Result<()> = match act {
        "read" => std::fs::File::open(arg).and_then(|mut f| f.read(&mut [0u8; 1]).map(drop)),
        "list" => std::fs::read_dir(arg).map(drop),
        "create" => std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(arg)
            .map(drop),
        "append" => std::fs::OpenOptions::new().append(true).open(arg).map(drop),
        "unlink" => std::fs::remove_file(arg),
        "rename" => std::fs::rename(arg, format!("{arg}.moved")),
        "exec" => std::process::Command::new(arg).status().map(drop),
        "thread" => std::thread::Builder::new().spawn(|| ()).and_then(|t| {
            t.join()
                .map_err(|_| std::io::Error::other("thread panicked"))
        }),
        "connect" => {
            std::net::TcpStream::connect(("127.0.0.1", arg.parse().unwrap_or(1))).map(drop)
        }
        "bind" => std::net::TcpListener::bind("127.0.0.1:0").map(drop),
        "ptrace" => nix::sys::ptrace::attach(pid()).map_err(std::io::Error::from),
        "kill" => nix::sys::signal::kill(pid(), nix::sys::signal::Signal::SIGCONT)
            .map_err(std::io::Error::from),
        // The one ioctl the filter admits, and another on the same file (FS_IOC_GETFLAGS).
        "measure" => {
            std::fs::File::open(arg).and_then(|f| imsys::sys::measure_verity(&f).map(drop))
        }
        "ioctl" => std::fs::File::open(arg).and_then(|f| crate::sys::get_flags(&f)),
        "stdout" => std::io::stdout()
            .write_all(b"probe\n")
            .and_then(|()| std::io::stdout().flush()),
        other => {
            eprintln!("probe: unknown act {other}");
            return 2;
        }
    };
    imsys::walls::report_probe(act, result)
}
