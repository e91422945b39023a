//! One polling process per state store.
//!
//! Two processes polling with the same state (a `once` from cron next to the daemon, two
//! overlapping cron runs) would empty each other's spool and deliver the same message twice
//! to a sink that cannot tell (an IMAP APPEND). `run` and `once` therefore hold an exclusive
//! `flock` on `<state file>.lock` for their whole life; the kernel drops it when the process
//! dies, even by kill -9, so a crash never leaves a stale lock. `dlq` and `state` commands do
//! not take it: they write single rows, which SQLite serialises.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another popbridge process{holder} is polling with the state {state}; \
         wait for it to finish or stop it (`once --wait-lock 10m` waits)"
    )]
    Busy { state: String, holder: String },
    #[error("cannot lock {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Held while a process polls; released when dropped or when the process ends.
#[derive(Debug)]
pub struct PollLock {
    _file: File,
    path: PathBuf,
}

impl PollLock {
    /// Take the lock for the state file `state`, waiting up to `wait` for another process to
    /// release it.
    pub fn acquire(state: &Path, wait: Duration) -> Result<Self, LockError> {
        let path = lock_path(state);
        let io = |source| LockError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        let deadline = Instant::now() + wait;
        let mut logged = false;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    let holder = holder(&mut file);
                    if Instant::now() >= deadline {
                        return Err(LockError::Busy {
                            state: state.display().to_string(),
                            holder,
                        });
                    }
                    if !logged {
                        tracing::warn!(state = %state.display(), "Another popbridge process{holder} is polling with this state; waiting for it");
                        logged = true;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(TryLockError::Error(e)) => return Err(io(e)),
            }
        }
        // Who holds it, for the other process's error message.
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Self { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The pid of the process that holds the lock of the state file `state`, if one does. Read from
/// `/proc/locks` (matched by the lock file's inode), so asking never takes the lock and never
/// makes a starting poller fail.
pub fn holder_pid(state: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let path = lock_path(state);
    let inode = std::fs::metadata(&path).ok()?.ino();
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        // `1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF`
        let f: Vec<&str> = line.split_whitespace().collect();
        let (kind, pid, dev_ino) = (f.get(1)?, f.get(4)?, f.get(5)?);
        let ino: u64 = dev_ino.rsplit(':').next()?.parse().ok()?;
        (*kind == "FLOCK" && ino == inode)
            .then(|| pid.parse().ok())
            .flatten()
    })
}

fn lock_path(state: &Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

fn holder(file: &mut File) -> String {
    let mut text = String::new();
    if file.rewind().is_ok() && file.read_to_string(&mut text).is_ok() {
        if let Ok(pid) = text.trim().parse::<u32>() {
            return format!(" (pid {pid})");
        }
    }
    String::new()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("db.sqlite");
        let first = PollLock::acquire(&state, Duration::ZERO).unwrap();
        let err = PollLock::acquire(&state, Duration::from_millis(300)).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(matches!(err, LockError::Busy { .. }));
        drop(first);
        PollLock::acquire(&state, Duration::ZERO).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(lock_path(&state))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn the_holder_is_named_without_taking_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("db.sqlite");
        assert_eq!(holder_pid(&state), None);
        let held = PollLock::acquire(&state, Duration::ZERO).unwrap();
        assert_eq!(holder_pid(&state), Some(std::process::id()));
        drop(held);
        assert_eq!(holder_pid(&state), None);
    }
}
