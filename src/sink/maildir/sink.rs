//! Delivery into a Maildir: copy into `tmp/`, fsync, hard-link into `new/`, fsync the directory
//! (one fsync shared by the deliveries that linked before it began).

use super::MaildirSettings;
use crate::key::IdempotencyKey;
use crate::sink::{DeliveryError, Receipt, Sink, SpooledMessage};
use async_trait::async_trait;
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// File name in the Maildir: the idempotency key itself, so a repeat delivery finds the file.
///
/// A MUA that has moved the file to `cur/` renames it `<key>:2,<flags>`; we look for the
/// unflagged and `S` (seen) forms there. A repeat can only happen after a crash between the link
/// and the state commit, a window of milliseconds, so a full scan of `cur/` is not worth its cost.
pub struct MaildirSink {
    name: String,
    inner: Arc<Inner>,
}

/// What the blocking delivery thread needs.
struct Inner {
    settings: MaildirSettings,
    /// Maildirs whose `tmp/new/cur` we already created.
    ready: Mutex<HashSet<PathBuf>>,
    /// Shared fsyncs of `new/` directories.
    dir_sync: super::dirsync::DirSync,
}

/// The directory of a Maildir++ subfolder chosen by a routing rule: `.name` inside the Maildir
/// (`.` separates levels, as Dovecot and Courier lay it out). Never a path out of the Maildir.
fn subfolder_dir(name: &str) -> Result<String, String> {
    let bad = name.is_empty()
        || name.starts_with('.')
        || name.ends_with('.')
        || name.contains("..")
        || name.contains(['/', '\\', '\0']);
    if bad {
        return Err(format!(
            "routing parameter subfolder {name:?} is not a usable Maildir++ folder name"
        ));
    }
    Ok(format!(".{name}"))
}

impl MaildirSink {
    pub fn new(name: impl Into<String>, settings: MaildirSettings) -> Self {
        Self {
            name: name.into(),
            inner: Arc::new(Inner {
                settings,
                ready: Mutex::new(HashSet::new()),
                dir_sync: Default::default(),
            }),
        }
    }

    /// The Maildir for a mailbox, with `{mailbox}` expanded.
    pub fn dir_for(&self, mailbox: &str) -> PathBuf {
        self.inner.dir_for(mailbox)
    }
}

impl Inner {
    /// The Maildir for a mailbox, with `{mailbox}` expanded.
    pub fn dir_for(&self, mailbox: &str) -> PathBuf {
        PathBuf::from(self.settings.path.replace("{mailbox}", mailbox))
    }

    fn ensure_dirs(&self, dir: &Path) -> Result<(), DeliveryError> {
        if let Ok(ready) = self.ready.lock() {
            if ready.contains(dir) {
                return Ok(());
            }
        }
        for sub in ["tmp", "new", "cur"] {
            let d = dir.join(sub);
            fs::create_dir_all(&d).map_err(|e| io_error("create", &d, e))?;
        }
        if let Ok(mut ready) = self.ready.lock() {
            ready.insert(dir.to_path_buf());
        }
        Ok(())
    }

    fn deliver_blocking(
        &self,
        message: &SpooledMessage,
        key: &IdempotencyKey,
    ) -> Result<Receipt, DeliveryError> {
        let dir = match message.params.get("subfolder") {
            Some(sub) => self
                .dir_for(&message.mailbox)
                .join(subfolder_dir(sub).map_err(DeliveryError::permanent)?),
            None => self.dir_for(&message.mailbox),
        };
        self.ensure_dirs(&dir)?;
        let final_path = dir.join("new").join(key.as_str());
        if let Some(existing) = self.existing(&dir, key) {
            return Ok(Receipt::duplicate(existing.display().to_string()));
        }
        let tmp = dir.join("tmp").join(format!(
            "{}.{}.{}",
            key.as_str(),
            std::process::id(),
            rand::random::<u32>()
        ));
        let result = self.write_and_link(&message.path, &tmp, &final_path);
        // The tmp name is only a staging link; the message now lives under new/.
        let _ = fs::remove_file(&tmp);
        match result {
            Ok(()) => Ok(Receipt::new(final_path.display().to_string())),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                Ok(Receipt::duplicate(final_path.display().to_string()))
            }
            Err(e) => Err(io_error("deliver to", &final_path, e)),
        }
    }

    fn write_and_link(&self, spool: &Path, tmp: &Path, final_path: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        // One descriptor for copy and fsync; io::copy between files uses copy_file_range(2).
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tmp)?;
        std::io::copy(&mut File::open(spool)?, &mut out)?;
        if self.settings.fsync {
            out.sync_all()?;
        }
        drop(out);
        // link(2) fails with EEXIST instead of overwriting: the no-op repeat delivery.
        fs::hard_link(tmp, final_path)?;
        if self.settings.fsync {
            if let Some(parent) = final_path.parent() {
                self.dir_sync.sync(parent)?;
            }
        }
        Ok(())
    }

    fn existing(&self, dir: &Path, key: &IdempotencyKey) -> Option<PathBuf> {
        let k = key.as_str();
        [
            dir.join("new").join(k),
            dir.join("cur").join(k),
            dir.join("cur").join(format!("{k}:2,")),
            dir.join("cur").join(format!("{k}:2,S")),
        ]
        .into_iter()
        .find(|p| p.exists())
    }
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> DeliveryError {
    let message = format!("cannot {what} {}: {e}", path.display());
    match e.kind() {
        // A wrong path or missing permission will not fix itself between retries.
        ErrorKind::PermissionDenied | ErrorKind::NotADirectory | ErrorKind::ReadOnlyFilesystem => {
            DeliveryError::permanent(message)
        }
        _ => DeliveryError::retryable(message),
    }
}

#[async_trait]
impl Sink for MaildirSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(
        &self,
        message: &SpooledMessage,
        key: &IdempotencyKey,
    ) -> Result<Receipt, DeliveryError> {
        // A blocking-pool thread per delivery, so concurrent deliveries overlap their fsyncs.
        let inner = self.inner.clone();
        let (message, key) = (message.clone(), key.clone());
        tokio::task::spawn_blocking(move || inner.deliver_blocking(&message, &key))
            .await
            .map_err(|e| DeliveryError::retryable(format!("maildir delivery task failed: {e}")))?
    }

    async fn healthcheck(&self) -> Result<(), DeliveryError> {
        // The template's fixed prefix must be creatable and writable.
        let base = self
            .inner
            .settings
            .path
            .split("{mailbox}")
            .next()
            .unwrap_or_default()
            .to_string();
        let base = PathBuf::from(base);
        let probe_dir = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        let dir = if probe_dir.is_dir() {
            probe_dir
        } else {
            probe_dir
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."))
        };
        fs::create_dir_all(&dir).map_err(|e| io_error("create", &dir, e))?;
        let probe = dir.join(format!(".popbridge-probe-{}", std::process::id()));
        fs::write(&probe, b"").map_err(|e| io_error("write to", &dir, e))?;
        let _ = fs::remove_file(&probe);
        Ok(())
    }
}
