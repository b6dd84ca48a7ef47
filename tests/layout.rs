//! The shape the design promises, checked on the source itself: no import circle between a
//! crate's modules, no function over 80 lines and no file over 500 outside tests, unsafe code
//! refused at every crate root and allowed in one `sys` module per crate only, and every
//! source file the docs name there to be read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const CRATES: [&str; 4] = ["protocol", "imsys", "hasher", "api"];
const MAX_FN_LINES: usize = 80;
const MAX_FILE_LINES: usize = 500;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let p = entry.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The source without its test modules, wherever they sit (each `#[cfg(test)]` then `mod`
/// at the start of a line, to its closing `}` at the start of a line; a `#[cfg(test)] mod x;`
/// line), and without a file that is itself a test module.
fn production_part(path: &Path, text: &str) -> Option<String> {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return None;
    }
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let next_is_mod = lines
            .peek()
            .is_some_and(|n| n.starts_with("mod ") || n.starts_with("pub mod "));
        if line == "#[cfg(test)]" && next_is_mod {
            let decl = lines.next().unwrap_or_default();
            if !decl.trim_end().ends_with(';') {
                // Skip to the module's closing brace at the start of a line.
                for inner in lines.by_ref() {
                    if inner == "}" {
                        break;
                    }
                }
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    Some(out)
}

/// The top-level module a file belongs to (`lib`/`main` for the roots).
fn top_module(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next().expect("a component");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_owned()
}

/// The crate's top-level modules it names after `crate::` (and `super::` from a submodule).
fn references(text: &str, in_submodule: bool) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut grab = |prefix: &str| {
        for (i, _) in text.match_indices(prefix) {
            let rest = &text[i + prefix.len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let inner = &group[..group.find('}').unwrap_or(0)];
                for part in inner.split(',') {
                    let name: String = part
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    out.insert(name);
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                out.insert(name);
            }
        }
    };
    grab("crate::");
    if in_submodule {
        grab("super::");
    }
    out
}

fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|n| n == node) {
            let mut c = path[i..].to_vec();
            c.push(node.to_owned());
            return Some(c);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

/// Which of the crate's top-level modules (a folder counts as one) each one names.
fn module_graph(krate: &str) -> BTreeMap<String, BTreeSet<String>> {
    let src = root().join(krate).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let top = top_module(&src, f);
        if top == "lib" || top == "main" {
            continue;
        }
        let text = std::fs::read_to_string(f).expect("read");
        let Some(code) = production_part(f, &text) else {
            continue;
        };
        let nested = f.parent() != Some(src.as_path());
        let refs = references(&code, nested);
        graph.entry(top.clone()).or_default().extend(refs);
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for (m, deps) in graph.iter_mut() {
        deps.retain(|d| d != m && modules.contains(d));
    }
    graph
}

#[test]
fn no_import_circle_between_modules() {
    for krate in CRATES {
        assert_eq!(
            cycle(&module_graph(krate)),
            None,
            "{krate}: modules import each other"
        );
    }
}

/// The hasher's groups and which other groups each may call: calls flow one way, server →
/// verifying → reading, storing, live → reading. Any group may call the shared leaves.
const HASHER_GROUPS: [(&str, &[&str]); 5] = [
    ("reading", &[]),
    ("live", &["reading"]),
    ("storing", &["reading", "tpm"]),
    ("tpm", &[]),
    ("verifying", &["reading", "storing", "live"]),
];
/// Modules every group may call: the crate's syscalls, errors and the policy.
const SHARED: [&str; 3] = ["sys", "error", "policy"];

/// Each call from a group that goes another way than [`HASHER_GROUPS`] allows.
fn direction_faults(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut faults = Vec::new();
    for (group, allowed) in HASHER_GROUPS {
        for dep in graph.get(group).into_iter().flatten() {
            if !(allowed.contains(&dep.as_str()) || SHARED.contains(&dep.as_str())) {
                faults.push(format!("{group} calls {dep}"));
            }
        }
    }
    faults
}

/// The module a file is (`a/b.rs` and `a/b/mod.rs` are `a::b`; the roots are the crate).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file
        .strip_prefix(src)
        .expect("under src")
        .with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|l| l == "mod") || parts == ["lib"] || parts == ["main"] {
        parts.pop();
    }
    parts
}

/// Every path a text names after `prefix` (`crate::a::b::C`, `crate::{a::b, c}`), as segments.
fn paths_after(text: &str, prefix: &str) -> Vec<Vec<String>> {
    // The segments at the start of `s`, and the bytes they took (a trailing `::` before a
    // `{` group included).
    fn segments(s: &str) -> (Vec<String>, usize) {
        let (mut out, mut used) = (Vec::new(), 0);
        loop {
            let name: String = s[used..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if name.is_empty() {
                break;
            }
            used += name.len();
            out.push(name);
            if !s[used..].starts_with("::") {
                break;
            }
            used += 2;
        }
        (out, used)
    }
    let mut out = Vec::new();
    for (i, _) in text.match_indices(prefix) {
        // `pub(in crate::x)` says who may see an item; it names nothing the file uses.
        if text[..i].ends_with("(in ") {
            continue;
        }
        let rest = &text[i + prefix.len()..];
        let (base, used) = segments(rest);
        match rest[used..].strip_prefix('{') {
            Some(group) => {
                let inner = &group[..group.find('}').unwrap_or(0)];
                for part in inner.split(',') {
                    let mut p = base.clone();
                    p.extend(segments(part.trim()).0);
                    out.push(p);
                }
            }
            None => out.push(base),
        }
    }
    out
}

/// Every path the code of module `me` names from the crate's root: its `crate::` paths and its
/// `super::` paths put after its parent.
fn named_from(me: &[String], code: &str) -> Vec<Vec<String>> {
    let parent = &me[..me.len().saturating_sub(1)];
    let mut named = paths_after(code, "crate::");
    named.extend(paths_after(code, "super::").into_iter().map(|p| {
        let mut full = parent.to_vec();
        full.extend(p);
        full
    }));
    named
}

/// Which modules each module of the crate names, file by file: a `crate::` or `super::` path
/// resolved to the longest module it reaches (the item it names lives there).
fn file_graph(krate: &str) -> BTreeMap<String, BTreeSet<String>> {
    let src = root().join(krate).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();
    let resolve = |path: Vec<String>| -> Option<Vec<String>> {
        (1..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|p| modules.contains(p))
    };
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let me = module_of(&src, f);
        let text = std::fs::read_to_string(f).expect("read");
        let Some(code) = production_part(f, &text) else {
            continue;
        };
        let deps = graph.entry(me.join("::")).or_default();
        for p in named_from(&me, &code) {
            if let Some(m) = resolve(p).filter(|m| *m != me && !m.is_empty()) {
                deps.insert(m.join("::"));
            }
        }
    }
    graph
}

#[test]
fn no_import_circle_between_files() {
    for krate in CRATES {
        assert_eq!(
            cycle(&file_graph(krate)),
            None,
            "{krate}: files import each other"
        );
    }
}

#[test]
fn the_file_circle_check_sees_a_planted_loop() {
    let graph = file_graph("hasher");
    // What it reads: a part of the verifier names the verifier, the verifier names the leaf.
    assert!(graph["verifying::scan"].contains("verifying::verifier"));
    assert!(graph["verifying::verifier"].contains("verifying::sweep"));
    assert!(
        !graph["verifying::paths"]
            .iter()
            .any(|m| m.starts_with("verifying")),
        "the leaf names no other part: {:?}",
        graph["verifying::paths"]
    );
    let mut planted = graph.clone();
    planted
        .entry("verifying::sweep".into())
        .or_default()
        .insert("verifying::scan".into());
    let circle = cycle(&planted).expect("the planted loop is seen");
    assert!(
        circle.contains(&"verifying::sweep".to_owned()),
        "{circle:?}"
    );
    assert_eq!(
        paths_after(
            "use crate::{a::b, c::D};\nx = super::e::f();\ncrate::g::h::I;\npub(in crate::j) fn k() {}",
            "crate::"
        ),
        vec![
            vec!["a".to_owned(), "b".to_owned()],
            vec!["c".to_owned(), "D".to_owned()],
            vec!["g".to_owned(), "h".to_owned(), "I".to_owned()]
        ]
    );
}

/// The hasher's groups whose sub-modules are private, each behind the face its `mod.rs` chooses
/// (`pub(crate) use`): from outside a group, a path goes through `crate::<group>::X`.
const FACED_GROUPS: [&str; 7] = [
    "tpm",
    "live",
    "storing",
    "policy",
    "reading",
    "server",
    "verifying",
];

/// A file's module and its production code.
type ModuleCode = (Vec<String>, String);

/// The module and production code of each of the crate's files, and every module there is.
fn crate_files(krate: &str) -> (Vec<ModuleCode>, BTreeSet<Vec<String>>) {
    let src = root().join(krate).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules = files.iter().map(|f| module_of(&src, f)).collect();
    let code = files
        .iter()
        .filter_map(|f| {
            let text = std::fs::read_to_string(f).expect("read");
            Some((module_of(&src, f), production_part(f, &text)?))
        })
        .collect();
    (code, modules)
}

/// Each path a file outside a faced group names inside one of the group's sub-modules
/// (`crate::<group>::<sub>::…`, `super::<group>::<sub>`) instead of through its face.
fn face_faults(files: &[ModuleCode], modules: &BTreeSet<Vec<String>>) -> Vec<String> {
    let mut faults = Vec::new();
    for (me, code) in files {
        for p in named_from(me, code) {
            let crosses = p.len() >= 2
                && FACED_GROUPS.contains(&p[0].as_str())
                && me.first() != Some(&p[0])
                && modules.contains(&p[..2]);
            if crosses {
                faults.push(format!("{} names {}", me.join("::"), p.join("::")));
            }
        }
    }
    faults
}

#[test]
fn the_hasher_groups_are_named_by_their_faces() {
    let (files, modules) = crate_files("hasher");
    for group in FACED_GROUPS {
        assert!(
            modules.contains(&vec![group.to_owned()]),
            "the hasher has no {group} group"
        );
    }
    assert_eq!(face_faults(&files, &modules), Vec::<String>::new());
}

#[test]
fn the_face_check_sees_a_path_past_a_face() {
    let (mut files, modules) = crate_files("hasher");
    let at = |m: &str| m.split("::").map(str::to_owned).collect::<Vec<_>>();
    files.push((
        at("storing::anchor"),
        "use crate::tpm::wire::NvPublic;\nuse crate::tpm::{Counter, device::Device};".into(),
    ));
    files.push((at("storing"), "use super::tpm::counter;".into()));
    // Inside the group its own sub-modules are named freely.
    files.push((at("tpm::device"), "use crate::tpm::wire::attr;".into()));
    assert_eq!(
        face_faults(&files, &modules),
        [
            "storing::anchor names tpm::wire::NvPublic",
            "storing::anchor names tpm::device::Device",
            "storing names tpm::counter",
        ]
    );
}

#[test]
fn the_hasher_groups_call_one_way() {
    let graph = module_graph("hasher");
    for (group, _) in HASHER_GROUPS {
        assert!(graph.contains_key(group), "the hasher has no {group} group");
    }
    assert_eq!(direction_faults(&graph), Vec::<String>::new());
}

#[test]
fn the_direction_check_sees_a_call_back_up() {
    let mut planted = module_graph("hasher");
    planted
        .entry("reading".into())
        .or_default()
        .insert("verifying".into());
    planted
        .entry("live".into())
        .or_default()
        .insert("server".into());
    assert_eq!(
        direction_faults(&planted),
        ["reading calls verifying", "live calls server"]
    );
}

#[test]
fn the_circle_check_sees_a_circle() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default().insert("a".into());
    assert!(cycle(&g).is_some());
    g.entry("c".into()).or_default().remove("a");
    assert_eq!(cycle(&g), None);
    let refs = references(
        "use crate::{alpha, beta::X};\nlet x = crate::gamma::f();",
        false,
    );
    assert_eq!(
        refs.into_iter().collect::<Vec<_>>(),
        ["alpha", "beta", "gamma"]
    );
}

/// `(name, first line, length)` of each `fn` whose body closes at its own indentation.
fn functions(code: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let decl = trimmed
            .trim_start_matches("pub(crate) ")
            .trim_start_matches("pub ")
            .trim_start_matches("async ")
            .trim_start_matches("const ")
            .trim_start_matches("unsafe ");
        let Some(rest) = decl.strip_prefix("fn ") else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let close = format!("{indent}}}");
        if let Some(end) = lines[i..].iter().position(|l| *l == close) {
            // A declaration without a body (a trait method) ends at `;` before any `{`.
            let head: String = lines[i..=i + end].join("\n");
            if head
                .find(';')
                .is_some_and(|s| head.find('{').is_none_or(|b| s < b))
            {
                continue;
            }
            out.push((name, i + 1, end + 1));
        }
    }
    out
}

#[test]
fn no_function_over_80_lines_outside_tests() {
    let mut long = Vec::new();
    for krate in CRATES {
        let mut files = Vec::new();
        rust_files(&root().join(krate).join("src"), &mut files);
        rust_files(&root().join(krate).join("benches"), &mut files);
        for f in files {
            let text = std::fs::read_to_string(&f).expect("read");
            let Some(code) = production_part(&f, &text) else {
                continue;
            };
            for (name, line, len) in functions(&code) {
                if len > MAX_FN_LINES {
                    long.push(format!("{}:{line} {name} ({len} lines)", f.display()));
                }
            }
        }
    }
    assert!(long.is_empty(), "split these: {long:#?}");
}

/// Files whose production part is longer than [`MAX_FILE_LINES`], with their lengths.
fn long_files(files: &[(PathBuf, String)]) -> Vec<String> {
    files
        .iter()
        .filter_map(|(f, text)| {
            let lines = production_part(f, text)?.lines().count();
            (lines > MAX_FILE_LINES).then(|| format!("{} ({lines} lines)", f.display()))
        })
        .collect()
}

#[test]
fn no_file_over_500_lines_outside_tests() {
    let mut files = Vec::new();
    for krate in CRATES {
        rust_files(&root().join(krate).join("src"), &mut files);
        rust_files(&root().join(krate).join("benches"), &mut files);
    }
    let read: Vec<(PathBuf, String)> = files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).expect("read");
            (f, text)
        })
        .collect();
    let long = long_files(&read);
    assert!(long.is_empty(), "split these by job: {long:#?}");
    // A planted fault: one line too many outside a test module is caught, inside is not.
    let code = "fn f() {}\n".repeat(MAX_FILE_LINES);
    let tests = "#[cfg(test)]\nmod tests {\n    fn g() {}\n}\n";
    let planted = [
        (PathBuf::from("fits.rs"), format!("{code}{tests}")),
        (PathBuf::from("long.rs"), format!("{code}fn h() {{}}\n")),
    ];
    assert_eq!(long_files(&planted), ["long.rs (501 lines)"]);
}

/// The workspace paths `text` names (`hasher/src/…rs`, `tests/…`, `seccomp/…json`, …), left
/// out where they are part of an absolute path on the appliance (`/etc/systemd/system/…`).
fn named_paths(text: &str) -> Vec<String> {
    const ROOTS: [&str; 10] = [
        "hasher/",
        "api/",
        "protocol/",
        "imsys/",
        "tests/",
        "seccomp/",
        "systemd/",
        "contrib/",
        "benches/",
        "docs/",
    ];
    const EXTS: [&str; 9] = [
        ".rs", ".json", ".sh", ".md", ".yml", ".service", ".socket", ".conf", ".toml",
    ];
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || "_./-".contains(c);
    let mut out = Vec::new();
    for (at, _) in text.char_indices() {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| is_path_char(c) || c == '/') {
            continue;
        }
        let rest = &text[at..];
        if !ROOTS.iter().any(|r| rest.starts_with(r)) {
            continue;
        }
        let end = rest.find(|c: char| !is_path_char(c)).unwrap_or(rest.len());
        let word = rest[..end].trim_end_matches('.');
        if EXTS.iter().any(|e| word.ends_with(e)) {
            out.push(word.to_owned());
        }
    }
    out
}

/// The workspace paths `text` names that are not there.
fn missing_in(text: &str) -> Vec<String> {
    named_paths(text)
        .into_iter()
        .filter(|p| !root().join(p).exists())
        .collect()
}

#[test]
fn every_file_the_docs_name_is_there() {
    let mut docs = vec![root().join("README.md"), root().join("BENCHMARKS.md")];
    if let Ok(entries) = std::fs::read_dir(root().join("docs")) {
        docs.extend(entries.flatten().map(|e| e.path()));
    }
    let mut missing = Vec::new();
    for doc in docs
        .iter()
        .filter(|d| d.extension().is_some_and(|e| e == "md"))
    {
        let text = std::fs::read_to_string(doc).expect("read");
        for p in missing_in(&text) {
            missing.push(format!("{} names {p}", doc.display()));
        }
    }
    assert!(
        missing.is_empty(),
        "the docs name files that moved: {missing:#?}"
    );
    // A planted fault: a moved file is found, an appliance path is not taken for one.
    let text = "see `hasher/src/spread.rs` and hasher/src/verifying/spread.rs; /etc/systemd/system/x.service";
    assert_eq!(
        named_paths(text),
        ["hasher/src/spread.rs", "hasher/src/verifying/spread.rs"]
    );
    assert_eq!(missing_in(text), ["hasher/src/spread.rs"]);
}

#[test]
fn test_modules_are_left_out_wherever_they_sit() {
    let text = "use crate::a;\n#[cfg(test)]\nmod tests {\n    use crate::b;\n}\n\nfn after() { crate::c::f(); }\n#[cfg(test)]\nmod more;\n";
    let code = production_part(Path::new("x.rs"), text).expect("not a test file");
    assert!(
        code.contains("crate::a") && code.contains("crate::c"),
        "{code}"
    );
    assert!(
        !code.contains("crate::b") && !code.contains("mod more"),
        "{code}"
    );
}

#[test]
fn the_length_check_measures_functions() {
    let body = "    x();\n".repeat(5);
    let code = format!("pub fn short() {{\n{body}}}\n\n    async fn inner(&self) -> u8;\n");
    assert_eq!(functions(&code), [("short".to_owned(), 1, 7)]);
}

#[test]
fn unsafe_code_only_in_sys_modules() {
    for krate in CRATES {
        let src = root().join(krate).join("src");
        let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
        assert!(
            lib.contains("#![forbid(unsafe_code)]") || lib.contains("#![deny(unsafe_code)]"),
            "{krate}: the crate root must refuse unsafe code"
        );
        for allowed in lib.match_indices("#[allow(unsafe_code)]") {
            let next = lib[allowed.0..].lines().nth(1).unwrap_or_default();
            assert!(
                ["pub mod sys;", "mod sys;"].contains(&next.trim()),
                "{krate}: unsafe allowed outside sys"
            );
        }
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        for f in files {
            let text = std::fs::read_to_string(&f).expect("read");
            let uses_unsafe = text.contains("unsafe {") || text.contains("unsafe fn ");
            assert!(
                !uses_unsafe || f.file_name().is_some_and(|n| n == "sys.rs"),
                "{}: unsafe code outside the crate's sys module",
                f.display()
            );
        }
    }
}
