//! Configuration: parsed (`raw`), then validated into `model`, then built by the caller.
//! [`load`] reads a YAML file and returns the validated [`Config`] plus warnings to log.

pub mod batch;
pub mod duration;
pub mod error;
pub mod interpolate;
pub mod model;
pub mod raw;
mod validate;

pub use error::{ConfigError, Problem};
pub use model::*;
pub(crate) use validate::resolve;

use std::path::Path;
use std::rc::Rc;

/// A validated configuration and the warnings found on the way (e.g. `tls_verify: false`),
/// which the caller should log.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

/// Read, parse and validate the config file at `path`; `${VAR}` comes from the process
/// environment.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    load_str(&text, path)
}

/// Parse and validate `text` as if read from `origin` (used for messages and to resolve
/// relative paths); `${VAR}` comes from the process environment.
pub fn load_str(text: &str, origin: &Path) -> Result<Loaded, ConfigError> {
    load_str_with_env(text, origin, |name| std::env::var(name).ok())
}

/// [`load_str`] with `${VAR}` looked up through `env` instead of the process environment.
pub fn load_str_with_env(
    text: &str,
    origin: &Path,
    env: impl Fn(&str) -> Option<String> + 'static,
) -> Result<Loaded, ConfigError> {
    let env: interpolate::Lookup = Rc::new(env);
    let mut raw: raw::RawConfig = interpolate::with_env(env.clone(), || yaml_serde::from_str(text))
        .map_err(|e| ConfigError::from_yaml(origin.to_path_buf(), text, &e))?;
    let base = origin.parent().unwrap_or(Path::new(""));
    for b in std::mem::take(&mut raw.mailboxes_from) {
        let rows = interpolate::with_env(env.clone(), || batch::expand(&b, base)).map_err(|e| {
            ConfigError::Parse {
                file: e.file,
                location: e.line.map(|l| (l, 1)),
                message: e.message,
            }
        })?;
        raw.mailboxes.extend(rows);
    }
    let (config, warnings) =
        validate::validate(raw, origin).map_err(|problems| ConfigError::Invalid {
            file: origin.to_path_buf(),
            problems,
        })?;
    Ok(Loaded { config, warnings })
}

#[cfg(test)]
mod tests;
