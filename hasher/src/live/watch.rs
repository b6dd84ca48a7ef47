//! Realtime detection: inotify on every watched file's directory and every model dir, so a
//! change is checked within milliseconds instead of at the next 30 s tick. The periodic scan
//! stays as the safety net, and a queue overflow asks for a full scan.
//!
//! A directory's watch sees writes made through a name in it only: a write through a hard
//! link elsewhere reaches a watch on the file itself. So a watched file with more than one
//! link is watched itself too ([`Watcher::watch_files`]), as long as the user's inotify watch
//! limit allows.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use crate::policy::Policy;

/// Most directories watched (each costs the kernel about 1 KiB); past it the periodic sweep
/// covers the rest.
const MAX_WATCHES: usize = 100_000;

/// Most changed paths named in one batch; past it the batch counts as an overflow.
const MAX_NAMED: usize = 4096;

/// What a batch of events amounts to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Changes {
    /// Watched paths touched.
    pub(crate) changed: u32,
    /// The kernel dropped events (or too many paths changed to name): only a full re-read is
    /// safe.
    pub(crate) overflow: bool,
    /// The paths the events named, so each is read again whatever its metadata says.
    pub(crate) paths: HashSet<PathBuf>,
    /// A relevant event named no path (a model dir, or a listed file's directory, was itself
    /// moved or deleted): the named paths are not all that changed.
    pub(crate) unnamed: bool,
}

impl Changes {
    /// Adds a later batch to this one.
    pub(super) fn merge(&mut self, later: Changes) {
        self.changed = self.changed.saturating_add(later.changed);
        self.overflow |= later.overflow;
        self.unnamed |= later.unnamed;
        for p in later.paths {
            if self.paths.len() >= MAX_NAMED {
                self.overflow = true;
                break;
            }
            self.paths.insert(p);
        }
    }
}

/// What one watch stands for.
struct Watched {
    dir: PathBuf,
    /// For a parent of listed files, the names that matter (`None`: a model dir, where every
    /// name matters).
    names: Option<HashSet<OsString>>,
    /// A model dir itself or a listed file's parent: no parent watch names its own changes.
    root: bool,
    /// A watch on a file itself (one with several links): the watched paths it is, each
    /// named by any event on it (`None`: a directory's watch).
    files: Option<Vec<PathBuf>>,
}

/// The inotify instance and what each watch stands for.
pub(crate) struct Watcher {
    /// Shared with the sentinel thread, which polls it while a request is answered.
    inotify: Arc<Inotify>,
    /// What each watch stands for.
    watches: HashMap<WatchDescriptor, Watched>,
    /// Every directory that should be watched is (no add failed, no bound was hit): only then
    /// do the named paths tell all that changed.
    complete: bool,
    /// Which file watch each watched path with several links is in.
    file_watches: HashMap<PathBuf, WatchDescriptor>,
}

fn mask() -> AddWatchFlags {
    AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_DONT_FOLLOW
}

/// What a watch on a file itself reports: any change of its content, metadata or links.
fn file_mask() -> AddWatchFlags {
    AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_DONT_FOLLOW
}

impl Watcher {
    /// Watches the policy's paths; paths that do not exist are left to the periodic scan.
    pub(crate) fn new(policy: &Policy) -> nix::Result<Watcher> {
        let inotify = Arc::new(Inotify::init(
            InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC,
        )?);
        let mut w = Watcher {
            inotify,
            watches: HashMap::new(),
            complete: true,
            file_watches: HashMap::new(),
        };
        let mut parents: HashMap<PathBuf, HashSet<OsString>> = HashMap::new();
        // The registry manifest is watched as a listed file is: a change to it asks for a check.
        let listed = policy.files.iter().map(|(f, _)| f);
        for file in listed.chain(&policy.registry_manifest) {
            if let (Some(dir), Some(name)) = (file.parent(), file.file_name()) {
                parents
                    .entry(dir.to_owned())
                    .or_default()
                    .insert(name.to_owned());
            }
        }
        for (dir, names) in parents {
            w.add(&dir, Some(names), true);
        }
        for dir in &policy.model_dirs {
            w.add_tree(dir, true);
        }
        Ok(w)
    }

    fn add(&mut self, dir: &Path, names: Option<HashSet<OsString>>, root: bool) {
        match self.inotify.add_watch(dir, mask()) {
            Ok(wd) => {
                let dir = dir.to_owned();
                let files = None;
                self.watches.insert(
                    wd,
                    Watched {
                        dir,
                        names,
                        root,
                        files,
                    },
                );
            }
            Err(e) => {
                self.complete = false;
                tracing::debug!(dir = %dir.display(), error = %e, "not watched; the periodic scan covers it")
            }
        }
    }

    fn add_tree(&mut self, dir: &Path, root: bool) {
        self.add(dir, None, root);
        let mut stack = vec![dir.to_owned()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                if !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                if self.watches.len() >= MAX_WATCHES {
                    self.complete = false;
                    continue;
                }
                self.add(&e.path(), None, false);
                stack.push(e.path());
            }
        }
    }

    /// Watches each of `files` (watched files with more than one link) itself, so a write
    /// through a link outside the watched directories is seen; returns those it could not
    /// watch (the user's inotify watch limit, or this watcher's bound): their checks read them
    /// at every sweep.
    pub(crate) fn watch_files(&mut self, files: Vec<PathBuf>) -> Vec<PathBuf> {
        let mut refused = Vec::new();
        for file in files {
            if self.watches.len() >= MAX_WATCHES {
                refused.push(file);
                continue;
            }
            match self.inotify.add_watch(&file, file_mask()) {
                // Links of one inode share its watch.
                Ok(wd) => {
                    let w = self.watches.entry(wd).or_insert_with(|| Watched {
                        dir: file.clone(),
                        names: None,
                        root: false,
                        files: Some(Vec::new()),
                    });
                    let files = w.files.get_or_insert_with(Vec::new);
                    if !files.contains(&file) {
                        files.push(file.clone());
                    }
                    self.file_watches.insert(file, wd);
                }
                Err(e) => {
                    tracing::debug!(file = %file.display(), error = %e, "linked file not watched itself");
                    refused.push(file);
                }
            }
        }
        refused
    }

    /// Whether every directory that should be watched is: only then do the named paths tell
    /// all that changed.
    pub(crate) fn complete(&self) -> bool {
        self.complete
    }

    /// The inotify instance, to poll from another thread (it outlives a reload's new one).
    pub(crate) fn shared(&self) -> Arc<Inotify> {
        Arc::clone(&self.inotify)
    }

    /// Reads what is queued and says whether any of it matters.
    pub(crate) fn drain(&mut self) -> Changes {
        let mut changes = Changes::default();
        let mut new_dirs = Vec::new();
        // Paths a directory's event named as created, moved or deleted: another inode now.
        let mut renamed = Vec::new();
        while let Ok(events) = self.inotify.read_events() {
            if events.is_empty() {
                break;
            }
            for ev in events {
                if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    changes.overflow = true;
                    continue;
                }
                if ev.mask.contains(AddWatchFlags::IN_IGNORED) {
                    self.gone(&ev.wd, &mut changes);
                    continue;
                }
                let Some(Watched {
                    dir,
                    names,
                    root,
                    files,
                }) = self.watches.get(&ev.wd)
                else {
                    continue;
                };
                if let Some(files) = files {
                    name_all(files, &mut changes);
                    continue;
                }
                let relevant = match (&names, &ev.name) {
                    (None, _) => true,
                    (Some(names), Some(name)) => names.contains(name),
                    (Some(_), None) => ev
                        .mask
                        .intersects(AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_MOVE_SELF),
                };
                if relevant {
                    changes.changed += 1;
                    match &ev.name {
                        Some(name) if changes.paths.len() < MAX_NAMED => {
                            let path = dir.join(name);
                            if ev.mask.intersects(
                                AddWatchFlags::IN_CREATE
                                    | AddWatchFlags::IN_MOVED_TO
                                    | AddWatchFlags::IN_MOVED_FROM
                                    | AddWatchFlags::IN_DELETE,
                            ) {
                                renamed.push(path.clone());
                            }
                            changes.paths.insert(path);
                        }
                        Some(_) => changes.overflow = true,
                        None if *root => changes.unnamed = true,
                        // A subdirectory's own move or deletion: its parent's watch names it.
                        None => {}
                    }
                }
                if names.is_none()
                    && ev.mask.contains(AddWatchFlags::IN_ISDIR)
                    && ev
                        .mask
                        .intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
                {
                    if let Some(name) = &ev.name {
                        new_dirs.push(dir.join(name));
                    }
                }
            }
        }
        for d in new_dirs {
            self.add_tree(&d, false);
        }
        for path in renamed {
            self.not_that_inode(&path);
        }
        changes
    }

    /// The watch `wd` is gone (its file deleted, its filesystem unmounted): a file watch's
    /// paths are named, so each is looked at, and watched again, anew.
    fn gone(&mut self, wd: &WatchDescriptor, changes: &mut Changes) {
        if let Some(Some(files)) = self.watches.remove(wd).map(|w| w.files) {
            for f in files {
                self.file_watches.remove(&f);
                changes.changed += 1;
                changes.paths.insert(f);
            }
        }
    }

    /// `path` was created, moved or deleted: the inode its file watch is on is no longer it.
    fn not_that_inode(&mut self, path: &Path) {
        if let Some(wd) = self.file_watches.remove(path) {
            if let Some(Some(files)) = self.watches.get_mut(&wd).map(|w| w.files.as_mut()) {
                files.retain(|f| f != path);
            }
        }
    }
}

/// An event on a file watch: every path it is (none: an inode no watched path is now).
fn name_all(files: &[PathBuf], changes: &mut Changes) {
    if files.is_empty() {
        return;
    }
    changes.changed += 1;
    for f in files {
        if changes.paths.len() < MAX_NAMED {
            changes.paths.insert(f.clone());
        } else {
            changes.overflow = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(dir: &Path) -> Policy {
        std::fs::create_dir_all(dir.join("models")).expect("mkdir");
        std::fs::write(dir.join("bin"), "b").expect("write");
        std::fs::write(dir.join("other"), "o").expect("write");
        let yaml = format!(
            "service_binaries: [{d}/bin]\nmodel_dirs: [{d}/models]\n",
            d = dir.display()
        );
        Policy::parse(&yaml).expect("policy")
    }

    #[test]
    fn a_linked_file_watched_itself_is_named_by_a_write_through_another_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = Watcher::new(&policy(dir.path())).expect("inotify");
        let model = dir.path().join("models/m.gguf");
        std::fs::write(&model, "m").expect("write");
        let outside = dir.path().join("outside");
        std::fs::hard_link(&model, &outside).expect("link");
        w.drain();
        std::fs::write(&outside, "through the link").expect("write");
        assert!(
            w.drain().paths.is_empty(),
            "the directory's watch does not see a write through another name"
        );
        assert!(w.watch_files(vec![model.clone()]).is_empty(), "watched");
        std::fs::write(&outside, "again").expect("write");
        assert_eq!(w.drain().paths, HashSet::from([model.clone()]));
        // Replaced by rename: the old inode's writes no longer name the path.
        std::fs::write(dir.path().join("models/new"), "n").expect("write");
        std::fs::rename(dir.path().join("models/new"), &model).expect("rename");
        assert!(w.drain().paths.contains(&model), "the rename named it");
        std::fs::write(&outside, "the old inode").expect("write");
        assert!(w.drain().paths.is_empty(), "{model:?} is another file now");
        // Its watch gone with its last link: the path is named, to be looked at anew.
        assert!(w.watch_files(vec![model.clone()]).is_empty());
        std::fs::hard_link(&model, dir.path().join("second")).expect("link");
        w.drain();
        std::fs::remove_file(&model).expect("rm");
        std::fs::remove_file(dir.path().join("second")).expect("rm");
        assert!(w.drain().paths.contains(&model));
    }

    #[test]
    fn only_watched_names_count_and_overflow_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = Watcher::new(&policy(dir.path())).expect("inotify");
        std::fs::write(dir.path().join("other"), "changed").expect("write");
        assert_eq!(
            w.drain(),
            Changes::default(),
            "an unwatched neighbour is ignored"
        );
        std::fs::write(dir.path().join("bin"), "changed").expect("write");
        let changes = w.drain();
        assert!(changes.changed > 0);
        assert_eq!(
            changes.paths,
            HashSet::from([dir.path().join("bin")]),
            "the changed file is named, to be read again"
        );
        std::fs::write(dir.path().join("models/m"), "new").expect("write");
        assert!(w.drain().changed > 0);
        // Flood the queue past /proc/sys/fs/inotify/max_queued_events without draining.
        let max: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(16384);
        for i in 0..(max / 2 + 10) {
            std::fs::write(dir.path().join(format!("models/f{i}")), "x").expect("write");
        }
        assert!(w.drain().overflow, "a lost event must ask for a full scan");
    }
}
