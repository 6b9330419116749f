//! Validated names: apps and components are DNS-1123 labels.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest name a DNS-1123 label may have.
pub const MAX_NAME_LEN: usize = 63;

/// Why a string is not a valid DNS-1123 label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must not be empty")]
    Empty,
    #[error("is {len} characters long; at most {MAX_NAME_LEN} are allowed")]
    TooLong { len: usize },
    #[error(
        "must consist of lower-case letters, digits and `-`, and start and end with a letter or digit"
    )]
    Invalid,
}

/// Checks that `name` is a DNS-1123 label: lower-case letters, digits and `-`,
/// starting and ending with a letter or digit, at most 63 characters.
pub fn check_dns_label(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong { len: name.len() });
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let first = name.chars().next().is_some_and(alnum);
    let last = name.chars().last().is_some_and(alnum);
    if !(first && last && name.chars().all(allowed)) {
        return Err(NameError::Invalid);
    }
    Ok(())
}

macro_rules! dns_name {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `name` as a DNS-1123 label.
            pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
                let name = name.into();
                check_dns_label(&name)?;
                Ok(Self(name))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(name: String) -> Result<Self, NameError> {
                Self::new(name)
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(name: &str) -> Result<Self, NameError> {
                Self::new(name)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

dns_name!(
    /// The name of an app, unique within its tenant.
    AppName
);
dns_name!(
    /// The name of a component, unique within its app's manifest.
    ComponentName
);
dns_name!(
    /// The name of a tenant.
    TenantName
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "toolhunt-api", "x1", "1x", &"a".repeat(63)] {
            assert_eq!(check_dns_label(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        assert_eq!(check_dns_label(""), Err(NameError::Empty));
        assert_eq!(
            check_dns_label(&"a".repeat(64)),
            Err(NameError::TooLong { len: 64 })
        );
        for bad in ["-a", "a-", "A", "a_b", "a.b", "ä", "a b"] {
            assert_eq!(check_dns_label(bad), Err(NameError::Invalid), "{bad}");
        }
    }
}
