//! Hostile input to the hasher's parsers: the policy YAML and the registry and release
//! manifests. Each must answer with an error, never panic or hang.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "fuzz_support.rs"]
mod fuzz;

#[test]
fn policy_parser_never_panics() {
    let seed = b"scan_interval: 30s\nservice_binaries:\n  - /usr/bin/a\npolicy_files: [/etc/p.yaml]\nmodel_dirs:\n  - /m\nhmac_key_path: /k\ndegradation_threshold: 3\nrequire_token_for_reads: false\nfull_rehash_interval: 24h\n".to_vec();
    let dict: &[&[u8]] = &[
        b"&a ",
        b"*a",
        b"!!binary ",
        b"<<: ",
        b"- ",
        b": ",
        b"{",
        b"[",
        b"\t",
        b"---\n",
        b"\"\\u",
        b"999999999999999999999",
    ];
    fuzz::run("policy", &[seed], dict, fuzz::iterations(), |input| {
        if let Ok(text) = std::str::from_utf8(input) {
            let _ = hasher::policy::Policy::parse(text);
        }
    });
}

#[test]
fn registry_and_release_parsers_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.json");
    let h = "a".repeat(64);
    let registry = format!("{{\"version\":1,\"models\":[{{\"name\":\"m\",\"filename\":\"m.gguf\",\"sha256\":\"{h}\",\"size_bytes\":5}}]}}").into_bytes();
    let release = format!("{{\"version\":1,\"source_commit\":\"0123456789abcdef0123456789abcdef01234567\",\"files\":[{{\"path\":\"/a\",\"sha256\":\"{h}\",\"size\":1}}]}}").into_bytes();
    let entries = [protocol::baseline::Entry {
        path: "/a".into(),
        hash: protocol::hexfmt::Sha256Digest([0xaa; 32]),
        category: protocol::Category::ServiceBinary,
        size: 1,
    }];
    let entries = protocol::entries::Entries::from(entries.to_vec());
    let iters = fuzz::iterations() / 4;
    fuzz::run(
        "registry+release",
        &[registry, release],
        &[b"null", b"-1", b"\"..\\/\"", b"[]"],
        iters,
        |input| {
            std::fs::write(&p, input).unwrap();
            let _ = hasher::verifying::Registry::load(&p);
            let _ = hasher::verifying::check_release(&p, &entries);
        },
    );
}
