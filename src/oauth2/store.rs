//! The refresh token on disk, one JSON file per credential: written atomically (temp file,
//! fsync, rename, directory fsync), 0600 in a 0700 directory, and checked on load against the
//! credential it belongs to, so a file copied from another app or endpoint is not used.

use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// What the file holds.
#[derive(Serialize, Deserialize)]
pub struct Stored {
    pub version: u32,
    /// Identity: the token belongs to this endpoint and client.
    pub token_url: String,
    pub client_id: String,
    /// SHA-256 of the configured first refresh token this line descends from: a new one in
    /// the config (after a re-login) wins over what is stored.
    pub seed_sha256: String,
    pub refresh_token: String,
    /// Unix seconds when this refresh token was received.
    pub received_at: i64,
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stored")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("received_at", &self.received_at)
            .finish_non_exhaustive()
    }
}

/// Hex SHA-256 of a configured seed token ("" without one).
pub fn seed_hash(seed: Option<&Secret>) -> String {
    seed.map(|s| hex::encode(Sha256::digest(s.expose().as_bytes())))
        .unwrap_or_default()
}

/// The stored token, `None` when there is no file. An unreadable or foreign file is an error,
/// never silently replaced.
pub fn load(path: &Path) -> Result<Option<Stored>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(format!(
                "cannot read the token store {}: {e}",
                path.display()
            ))
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| format!("the token store {} is damaged: {e}", path.display()))
}

/// Replaces the file atomically and durably: after this returns, a crash leaves the new token.
pub fn save(path: &Path, stored: &Stored) -> Result<(), String> {
    let fail = |what: &str, e: std::io::Error| format!("{what} {}: {e}", path.display());
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| fail("cannot create the directory of", e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| fail("cannot chmod the directory of", e))?;
    let text = serde_json::to_vec_pretty(stored).map_err(|e| e.to_string())?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("token"),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail("cannot write the token store", e)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn saved_tokens_are_private_and_replace_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oauth2/cred.json");
        let mut stored = Stored {
            version: 1,
            token_url: "https://t".into(),
            client_id: "c".into(),
            seed_sha256: seed_hash(Some(&Secret::new("seed"))),
            refresh_token: "r1".into(),
            received_at: 1,
        };
        assert!(load(&path).unwrap().is_none());
        save(&path, &stored).unwrap();
        stored.refresh_token = "r2".into();
        save(&path, &stored).unwrap();
        assert_eq!(load(&path).unwrap().unwrap().refresh_token, "r2");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
        assert!(!format!("{stored:?}").contains("r2"));
    }
}
