//! Small bounded reads of configuration files: never more than a cap into memory.

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// Reads at most `cap` bytes of `path`; a larger file is an error, not a truncation.
pub fn read_bounded(path: &Path, cap: u64) -> Result<Vec<u8>, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > cap {
        return Err(format!("larger than the {cap}-byte limit"));
    }
    Ok(bytes)
}

/// As [`read_bounded`], and the content must be UTF-8.
pub fn read_bounded_text(path: &Path, cap: u64) -> Result<String, String> {
    String::from_utf8(read_bounded(path, cap)?).map_err(|_| "not UTF-8 text".to_owned())
}
