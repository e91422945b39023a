//! One directory fsync shared by every delivery that linked into the directory before it began.
//!
//! Each delivery must not return before its link in `new/` is durable, but an fsync per message
//! of the same directory repeats work: an fsync that starts after a link was made covers it.
//! Deliveries run on blocking-pool threads, so this uses a mutex and a condition variable.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

#[derive(Default)]
pub(super) struct DirSync {
    dirs: Mutex<HashMap<PathBuf, Arc<Shared>>>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    done: Condvar,
}

#[derive(Default)]
struct State {
    /// Links made so far (each caller takes a number after its link).
    requested: u64,
    /// Every link numbered up to this one is durable.
    synced: u64,
    running: bool,
}

fn poisoned() -> std::io::Error {
    std::io::Error::other("directory sync state poisoned")
}

impl DirSync {
    /// Return once `dir`'s entries as of this call are on disk.
    pub fn sync(&self, dir: &Path) -> std::io::Result<()> {
        let shared = {
            let mut dirs = self.dirs.lock().map_err(|_| poisoned())?;
            dirs.entry(dir.to_path_buf()).or_default().clone()
        };
        let mut state = shared.state.lock().map_err(|_| poisoned())?;
        state.requested += 1;
        let mine = state.requested;
        loop {
            if state.synced >= mine {
                return Ok(());
            }
            if !state.running {
                state.running = true;
                let target = state.requested;
                drop(state);
                let result = File::open(dir).and_then(|d| d.sync_all());
                state = shared.state.lock().map_err(|_| poisoned())?;
                state.running = false;
                if result.is_ok() {
                    state.synced = state.synced.max(target);
                }
                shared.done.notify_all();
                // A failed fsync is reported to this caller; the others try again themselves.
                result?;
                continue;
            }
            state = shared.done.wait(state).map_err(|_| poisoned())?;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn concurrent_callers_all_return_after_a_sync() {
        let dir = tempfile::tempdir().unwrap();
        let sync = Arc::new(DirSync::default());
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let (sync, path) = (sync.clone(), dir.path().to_path_buf());
                std::thread::spawn(move || {
                    std::fs::write(path.join(format!("f{i}")), b"x").unwrap();
                    sync.sync(&path).unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let shared = sync.dirs.lock().unwrap()[dir.path()].clone();
        let state = shared.state.lock().unwrap();
        assert_eq!(state.requested, 16);
        assert_eq!(state.synced, 16, "every caller's link is covered by a sync");
        assert!(!state.running);
    }

    #[test]
    fn a_missing_directory_is_an_error_not_a_hang() {
        let sync = DirSync::default();
        let err = sync
            .sync(Path::new("/nonexistent/popbridge-dirsync"))
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
        // And the next caller is not stuck behind a `running` flag.
        assert!(sync
            .sync(Path::new("/nonexistent/popbridge-dirsync"))
            .is_err());
    }
}
