//! The value types every part's config is written in: durations (`60s`), strings with
//! `${VAR}` interpolated (secrets among them), and paths relative to the config file.
//!
//! A leaf (it imports nothing of ours but `secret`), so that each sink, `pop3`, `oauth2` and
//! `store` can own its config section without importing `config`, which assembles them.

pub mod duration;
pub mod interpolate;

use std::path::{Path, PathBuf};

/// A path from the config: absolute as written, relative to the config file's directory.
pub(crate) fn resolve(base: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}
