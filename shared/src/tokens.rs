//! API tokens: random bearer secrets, shown once and stored only as hashes.

use std::fmt;

use sha2::{Digest, Sha256};

/// The prefix of every token, so that a leaked one is recognisable (secret scanners).
const PREFIX: &str = "drover_";

/// A freshly generated bearer token. Its `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl ApiToken {
    /// A new token with 244 random bits.
    pub fn generate() -> Self {
        let a = uuid::Uuid::new_v4().simple().to_string();
        let b = uuid::Uuid::new_v4().simple().to_string();
        Self(format!("{PREFIX}{a}{b}"))
    }

    /// The secret, to show once to whoever asked for it.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// What the store keeps.
    pub fn hash(&self) -> String {
        hash_token(&self.0)
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(..)")
    }
}

/// The longest name a token may have.
pub const MAX_TOKEN_NAME: usize = 64;

/// A token name that is not one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid token name: 1 to {MAX_TOKEN_NAME} characters, none of them control characters")]
pub struct InvalidTokenName;

/// Checks what a token is called: 1 to [`MAX_TOKEN_NAME`] characters, no control
/// characters (it is printed in lists and logs).
pub fn check_token_name(name: &str) -> Result<(), InvalidTokenName> {
    if name.is_empty()
        || name.chars().count() > MAX_TOKEN_NAME
        || name.chars().any(char::is_control)
    {
        return Err(InvalidTokenName);
    }
    Ok(())
}

/// The stored form of a presented token: SHA-256, hex. A token has enough entropy
/// that a fast hash is safe; lookups are by hash, so nothing compares secrets.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_hidden_and_hashed() {
        let a = ApiToken::generate();
        let b = ApiToken::generate();
        assert_ne!(a, b);
        assert!(a.reveal().starts_with("drover_"));
        assert_eq!(a.reveal().len(), "drover_".len() + 64);
        assert_eq!(format!("{a:?}"), "ApiToken(..)");
        assert_eq!(a.hash(), hash_token(a.reveal()));
        assert_eq!(a.hash().len(), 64);
        assert_ne!(a.hash(), b.hash());
    }
}
