//! `--demo`: a self-contained appliance tree under a temp dir, so the monitor can be tried
//! on any machine without touching /etc or /var.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::Config;

/// Files of the demo tree: (relative path, content).
const FILES: [(&str, &str); 7] = [
    (
        "usr/libexec/secure-ai/registry",
        "#!/bin/sh\necho registry\n",
    ),
    (
        "usr/libexec/secure-ai/tool-firewall",
        "#!/bin/sh\necho tool-firewall\n",
    ),
    ("etc/secure-ai/policy/policy.yaml", "default: deny\n"),
    ("etc/secure-ai/policy/agent.yaml", "agent: local\n"),
    (
        "etc/systemd/system/secure-ai-registry.service",
        "[Service]\nExecStart=/usr/libexec/secure-ai/registry\n",
    ),
    (
        "etc/secure-ai/cosign.pub",
        "-----BEGIN PUBLIC KEY-----\ndemo\n-----END PUBLIC KEY-----\n",
    ),
    (
        "var/lib/secure-ai/registry/tiny-model.gguf",
        "GGUF demo weights\n",
    ),
];

fn hex(bytes: &[u8]) -> String {
    protocol::hexfmt::encode(bytes)
}

/// Writes the demo tree and returns the config that monitors it, the curl lines to try, and
/// the tree's root (the caller removes it on exit). The tree is 0700; the key and the token
/// 0600. Fails first if the listen address is taken, before anything is printed.
pub fn prepare(base: &Config) -> Result<(Config, String, PathBuf), String> {
    std::net::TcpListener::bind(base.listen).map_err(|e| {
        format!(
            "{} is not free ({e}); pick another with --listen",
            base.listen
        )
    })?;
    let mut nonce = [0u8; 6];
    crate::sys::random_bytes(&mut nonce).map_err(|e| e.to_string())?;
    let root = std::env::temp_dir().join(format!("integrity-monitor-demo-{}", hex(&nonce)));
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&root)
            .map_err(|e| format!("{}: {e}", root.display()))?;
    }
    let write = |rel: &str, content: &[u8]| -> Result<PathBuf, String> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt;
        let p = root.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)
            .and_then(|mut f| f.write_all(content))
            .map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(p)
    };
    for (rel, content) in FILES {
        write(rel, content.as_bytes())?;
    }
    let mut key = [0u8; 32];
    crate::sys::random_bytes(&mut key).map_err(|e| e.to_string())?;
    let key_path = write("run/secure-ai/integrity-hmac-key", &key)?;
    let mut token = [0u8; 32];
    crate::sys::random_bytes(&mut token).map_err(|e| e.to_string())?;
    let token = hex(&token);
    let token_path = write("run/secure-ai/service-token", token.as_bytes())?;
    let r = root.display();
    let policy = format!(
        "# integrity-monitor demo policy\nscan_interval: 10s\n\
         service_binaries:\n  - {r}/usr/libexec/secure-ai/registry\n  - {r}/usr/libexec/secure-ai/tool-firewall\n\
         policy_files:\n  - {r}/etc/secure-ai/policy/policy.yaml\n  - {r}/etc/secure-ai/policy/agent.yaml\n\
         model_dirs:\n  - {r}/var/lib/secure-ai/registry\n\
         systemd_units:\n  - {r}/etc/systemd/system/secure-ai-registry.service\n\
         trust_material:\n  - {r}/etc/secure-ai/cosign.pub\n\
         hmac_key_path: {}\ndegradation_threshold: 3\n\
         # a throwaway key: never counted in the machine's TPM\ntpm: off\n",
        key_path.display()
    );
    let policy_path = write(
        "etc/secure-ai/policy/integrity-monitor.yaml",
        policy.as_bytes(),
    )?;
    let config = Config {
        policy: policy_path,
        token_file: Some(token_path),
        hmac_key_file: Some(key_path.clone()),
        audit_log: root.join("var/lib/secure-ai/logs/integrity-monitor-audit.jsonl"),
        state_dir: root.join("var/lib/secure-ai/integrity"),
        ..base.clone()
    };
    Ok((config.clone(), instructions(&root, &config, &token), root))
}

fn instructions(root: &Path, c: &Config, token: &str) -> String {
    let a = c.listen;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "integrity-monitor demo: appliance tree in {}",
        root.display()
    );
    let _ = writeln!(s, "Try, in another shell:");
    let _ = writeln!(s, "  curl -s http://{a}/health");
    let _ = writeln!(s, "  curl -s http://{a}/api/v1/status");
    let _ = writeln!(s, "  curl -si http://{a}/api/v1/verify");
    let _ = writeln!(s, "  curl -s http://{a}/api/v1/baseline");
    let _ = writeln!(
        s,
        "  echo tampered >> {}/usr/libexec/secure-ai/registry",
        root.display()
    );
    let _ = writeln!(
        s,
        "  curl -s -X POST -H 'Authorization: Bearer {token}' http://{a}/api/v1/scan"
    );
    let _ = writeln!(
        s,
        "  curl -si http://{a}/api/v1/verify            # now 503"
    );
    // A rebaseline is the key ceremony: the token (which crosses the api) cannot make one
    // alone; the ceremony reads it too, from the demo's tree.
    let key = c.hmac_key_file.as_deref().unwrap_or(Path::new("KEY"));
    let token_file = c.token_file.as_deref().unwrap_or(Path::new("TOKEN"));
    let _ = writeln!(
        s,
        "  {} rebaseline --key {} --token-file {} --url http://{a}",
        std::env::current_exe()
            .map_or_else(|_| "integrity-monitor".into(), |p| p.display().to_string()),
        key.display(),
        token_file.display()
    );
    let _ = writeln!(
        s,
        "  curl -s -X POST http://{a}/api/v1/scan         # 401 without the token"
    );
    let _ = writeln!(s, "  tail -f {}", c.audit_log.display());
    let _ = writeln!(s, "Stop with Ctrl-C.");
    s
}
