//! What the operator sees of a plan and of the hasher's answer: counts first, then each path
//! with its old and new digest, every name escaped so that none can move the cursor, clear
//! the screen or reorder the line it is printed on.

use std::fmt::Write as _;

use protocol::plan::{Outcome, Plan};

/// `text` with every control character (C0, DEL, C1), every bidirectional formatting
/// character, the invisible separators and the backslash written as `\u{…}` (`\\` for the
/// backslash): what is printed is exactly what is there, and nothing else.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if c.is_control() || invisible(c) {
            let _ = write!(out, "\\u{{{:04x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// Bidirectional formatting marks, embeddings, overrides and isolates; zero-width and line
/// separators; the byte-order mark.
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{061c}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}'
            | '\u{feff}'
    )
}

/// The plan as the operator reads it.
pub fn plan(p: &Plan, digest: &str) -> String {
    let mut out = String::new();
    let base = p.base.as_ref().map_or_else(
        || "no baseline in force".to_owned(),
        |b| format!("generation {} ({})", b.generation, b.digest),
    );
    let _ = writeln!(out, "Rebaseline plan {digest}");
    let _ = writeln!(
        out,
        "  {} added, {} removed, {} changed; {} entries in all",
        p.added, p.removed, p.changed, p.entries
    );
    let _ = writeln!(
        out,
        "  against {base}; adopted as generation {}",
        p.generation
    );
    let _ = writeln!(
        out,
        "  made {} from the files as they were then",
        escape(&p.planned_at)
    );
    for c in &p.changes {
        let digest = |d: &Option<String>| d.as_deref().map_or("-", |d| d).to_owned();
        let _ = writeln!(
            out,
            "  {:<7} {}\n          {} -> {}",
            c.kind(),
            escape(&c.path),
            escape(&digest(&c.old)),
            escape(&digest(&c.new)),
        );
    }
    let listed = p.changes.len() as u64;
    let total = p.added + p.removed + p.changed;
    if listed < total {
        let _ = writeln!(
            out,
            "  … and {} more (the counts above are whole)",
            total - listed
        );
    }
    out
}

/// The one line saying what was adopted and when `/verify` answers 200.
pub fn adopted(o: &Outcome, api: &serde_json::Value) -> String {
    let Some(a) = &o.adopted else {
        return String::new();
    };
    let verify = if api["trusted"] == serde_json::Value::Bool(true) {
        "/api/v1/verify answers 200 now".to_owned()
    } else {
        format!(
            "/api/v1/verify answers 503 until: {} (the api says)",
            escape(
                api["untrusted_because"]
                    .as_str()
                    .unwrap_or("the next scan finds every file as baselined")
            )
        )
    };
    format!(
        "adopted generation {}: {} entries, baseline {}; {verify}",
        a.generation, a.entries, a.digest
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_rewrite_the_terminal() {
        // A name that clears the screen, a right-to-left override that would show
        // "evil.exe" as "exe.live", a C1 CSI, a newline that forges a plan line, a NUL-free
        // zero-width space, and a backslash that could fake an escape.
        let name = "/m/\u{1b}[2J\u{202e}exe.live\u{9b}31m\nadded  /fake\u{200b}\\u{1b}";
        let shown = escape(name);
        assert_eq!(
            shown,
            "/m/\\u{001b}[2J\\u{202e}exe.live\\u{009b}31m\\u{000a}added  /fake\\u{200b}\\\\u{1b}"
        );
        assert!(shown.chars().all(|c| !c.is_control() && !invisible(c)));
        assert_eq!(escape("/usr/bin/ordinary-näme"), "/usr/bin/ordinary-näme");
        // Every bidirectional control is caught.
        for c in [
            '\u{061c}', '\u{200e}', '\u{200f}', '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}',
            '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
        ] {
            assert!(
                escape(&c.to_string()).starts_with("\\u{"),
                "{:04x}",
                u32::from(c)
            );
        }
    }
}
