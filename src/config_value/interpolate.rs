//! `${VAR}` interpolation in string values, done while deserialising so that errors keep the
//! file, line and column. `$${` is a literal `${`. Secrets go through [`SecretValue`], whose
//! value never reaches an error message or `Debug`.

use crate::secret::Secret;
use serde::de::{self, Deserialize, Deserializer, Visitor};
use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

/// Looks up an environment variable by name.
pub(crate) type Lookup = Rc<dyn Fn(&str) -> Option<String>>;

thread_local! {
    /// The environment used by deserialisation on this thread; `None` means the process
    /// environment. Set only for the duration of [`with_env`].
    static ENV: RefCell<Option<Lookup>> = const { RefCell::new(None) };
}

/// Run `f` with `env` as the environment seen by `${VAR}` interpolation on this thread.
pub(crate) fn with_env<R>(env: Lookup, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Lookup>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            ENV.with(|cell| *cell.borrow_mut() = previous);
        }
    }
    let previous = ENV.with(|cell| cell.borrow_mut().replace(env));
    let _restore = Restore(previous);
    f()
}

fn lookup(name: &str) -> Option<String> {
    let env = ENV.with(|cell| cell.borrow().clone());
    match env {
        Some(env) => env(name),
        None => std::env::var(name).ok(),
    }
}

/// Replace every `${NAME}` in `text` by the variable's value; `$${` becomes a literal `${`.
/// Errors name the variable, never the text or a value.
pub fn interpolate(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos..];
        if let Some(tail) = rest.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = rest.strip_prefix("${") {
            let end = tail
                .find('}')
                .ok_or("unterminated `${` (write `$${` for a literal `${`)")?;
            let name = &tail[..end];
            if !is_variable_name(name) {
                return Err(format!(
                    "invalid environment variable name `{name}` in `${{...}}` \
                     (letters, digits and `_`; write `$${{` for a literal `${{`)"
                ));
            }
            let value = lookup_with(env, name)?;
            out.push_str(&value);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn lookup_with(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Result<String, String> {
    env(name).ok_or_else(|| format!("environment variable `{name}` is not set"))
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A string value with `${VAR}` interpolated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interpolated(pub String);

impl Interpolated {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl<'de> Deserialize<'de> for Interpolated {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Interpolated;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                interpolate(v, &lookup).map(Interpolated).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// A secret string value (password, token, signing key) with `${VAR}` interpolated. Errors
/// about it never include the value, even when it has the wrong type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretValue(pub Secret);

impl SecretValue {
    pub fn into_secret(self) -> Secret {
        self.0
    }
}

impl<'de> Deserialize<'de> for SecretValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        const QUOTE: &str = "a secret must be a string: put it in quotes";
        impl Visitor<'_> for V {
            type Value = SecretValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                interpolate(v, &lookup)
                    .map(|s| SecretValue(Secret::new(s)))
                    .map_err(E::custom)
            }
            // Every other visit refuses without echoing the value, which serde's default
            // `invalid type: integer `1234`` message would do.
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Err(E::custom(QUOTE))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Err(E::custom(QUOTE))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Err(E::custom(QUOTE))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Err(E::custom(QUOTE))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Err(E::custom("a secret must not be empty"))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Err(E::custom("a secret must not be empty"))
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "USER_NAME" => Some("alice".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn replaces_variables() {
        assert_eq!(interpolate("x-${USER_NAME}-y", &env).unwrap(), "x-alice-y");
        assert_eq!(interpolate("${USER_NAME}${EMPTY}", &env).unwrap(), "alice");
        assert_eq!(
            interpolate("no vars, $5 and $HOME", &env).unwrap(),
            "no vars, $5 and $HOME"
        );
    }

    #[test]
    fn double_dollar_escapes() {
        assert_eq!(interpolate("$${USER_NAME}", &env).unwrap(), "${USER_NAME}");
        assert_eq!(
            interpolate("a$$${USER_NAME}", &env).unwrap(),
            "a$${USER_NAME}"
        );
    }

    #[test]
    fn missing_variable_is_named() {
        let err = interpolate("pw-${NOPE}", &env).unwrap_err();
        assert_eq!(err, "environment variable `NOPE` is not set");
    }

    #[test]
    fn malformed_references_are_errors() {
        assert!(interpolate("${USER_NAME", &env)
            .unwrap_err()
            .contains("unterminated"));
        assert!(interpolate("${}", &env)
            .unwrap_err()
            .contains("invalid environment variable"));
        assert!(interpolate("${1X}", &env)
            .unwrap_err()
            .contains("invalid environment variable"));
    }

    #[test]
    fn deserialisation_uses_the_scoped_environment() {
        let got: Interpolated = with_env(Rc::new(env), || {
            yaml_serde::from_str("\"${USER_NAME}@example.com\"").unwrap()
        });
        assert_eq!(got.as_str(), "alice@example.com");
    }

    #[test]
    fn secret_of_wrong_type_is_not_echoed() {
        let err = yaml_serde::from_str::<SecretValue>("918273645").unwrap_err();
        assert!(!err.to_string().contains("918273645"), "{err}");
        let ok: SecretValue = yaml_serde::from_str("'918273645'").unwrap();
        assert_eq!(ok.0.expose(), "918273645");
    }
}
