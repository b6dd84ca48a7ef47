//! Watched files with more than one link. A directory's inotify watch sees writes made through
//! a name in that directory only; a write through a hard link elsewhere is seen by a watch on
//! the file itself. So a check that finds a file with several links asks the watcher for one
//! (`take_wanted`), and a file it could not watch (the user's inotify watch limit) is read at
//! every sweep instead of answered from its metadata. A link made after a file's last check
//! moves its link count and ctime: the next metadata check (at most a sweep later) sees it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The linked files watched, asked for, or refused a watch.
#[derive(Debug, Default)]
pub(crate) struct Links {
    watched: HashSet<PathBuf>,
    wanted: Vec<PathBuf>,
    refused: HashSet<PathBuf>,
    /// A refusal was said (once per process: the warning names the bound, not each file).
    warned: bool,
}

impl Links {
    /// Whether `path`, found with more than one link, may answer from its metadata: watched
    /// itself, or asked for now (a write before the watch is in moves its ctime, which the
    /// next check sees); not when the watcher could not watch it.
    pub(crate) fn covers(&mut self, path: &Path) -> bool {
        if self.refused.contains(path) {
            return false;
        }
        if self.watched.insert(path.to_owned()) {
            self.wanted.push(path.to_owned());
        }
        true
    }

    /// The files to watch themselves, asked for since the last call.
    pub(in crate::verifying) fn take_wanted(&mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.wanted)
    }

    /// The watcher could not watch these: their checks read them at every sweep.
    pub(crate) fn refused(&mut self, files: Vec<PathBuf>) {
        if files.is_empty() {
            return;
        }
        if !self.warned {
            self.warned = true;
            tracing::warn!(
                files = files.len(),
                "watched files with several links cannot all be watched themselves (the user's inotify watch limit, fs.inotify.max_user_watches): each is read in full at every sweep"
            );
        }
        for f in files {
            self.watched.remove(&f);
            self.refused.insert(f);
        }
    }

    /// `path` changed (it may be another file now): its next check looks again.
    pub(in crate::verifying) fn forget(&mut self, path: &Path) {
        if !self.watched.is_empty() {
            self.watched.remove(path);
        }
        if !self.refused.is_empty() {
            self.refused.remove(path);
        }
    }

    /// The watcher was replaced (a reload): every linked file is asked for again.
    pub(in crate::verifying) fn forget_all(&mut self) {
        self.watched.clear();
        self.refused.clear();
        self.wanted.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_linked_file_is_asked_for_once_and_a_refused_one_is_read_every_sweep() {
        let mut links = Links::default();
        let p = Path::new("/m/a.gguf");
        assert!(links.covers(p));
        assert!(links.covers(p));
        assert_eq!(links.take_wanted(), vec![p.to_owned()], "asked for once");
        assert!(links.take_wanted().is_empty());
        links.refused(vec![p.to_owned()]);
        assert!(!links.covers(p), "no watch: no answer from metadata");
        assert!(links.take_wanted().is_empty(), "not asked for again");
        links.forget(p);
        assert!(links.covers(p), "replaced: asked for again");
        assert_eq!(links.take_wanted(), vec![p.to_owned()]);
    }
}
