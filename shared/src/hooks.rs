//! Webhook signatures and what a delivery names: pure functions, so that the
//! API's routes only read headers and bodies.
//!
//! GitHub signs the raw body with HMAC-SHA256 and the hook's secret
//! (`X-Hub-Signature-256: sha256=<hex>`). A registry hook signs
//! `<timestamp>.<body>` the same way (`X-Drover-Signature`), with the Unix time
//! in `X-Drover-Timestamp`, so that an old delivery cannot be replayed.
//! Signatures are compared in constant time ([`hmac::Mac::verify_slice`]).

use std::fmt;

use hmac::{KeyInit as _, Mac as _};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The prefix of every hook secret, so that a leaked one is recognisable.
const PREFIX: &str = "whsec_";

/// A freshly generated hook secret. Its `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct HookSecret(String);

impl HookSecret {
    /// A new secret with 244 random bits.
    pub fn generate() -> Self {
        let a = uuid::Uuid::new_v4().simple().to_string();
        let b = uuid::Uuid::new_v4().simple().to_string();
        Self(format!("{PREFIX}{a}{b}"))
    }

    /// The secret, to show once to whoever asked for it (and to keep).
    pub fn reveal(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for HookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HookSecret(..)")
    }
}

/// `sha256=<hex>`: the HMAC-SHA256 of `parts`, in order, under `secret`.
pub fn sign(secret: &str, parts: &[&[u8]]) -> String {
    let Some(mut mac) = hmac(secret) else {
        return String::new();
    };
    for part in parts {
        mac.update(part);
    }
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `signature` (`sha256=<hex>`) is the HMAC-SHA256 of `parts` under
/// `secret`, compared in constant time.
pub fn verify(secret: &str, parts: &[&[u8]], signature: &str) -> bool {
    let Some(digest) = signature
        .strip_prefix("sha256=")
        .and_then(|hex| hex::decode(hex).ok())
    else {
        return false;
    };
    let Some(mut mac) = hmac(secret) else {
        return false;
    };
    for part in parts {
        mac.update(part);
    }
    mac.verify_slice(&digest).is_ok()
}

/// HMAC-SHA256 under `secret` (HMAC takes keys of any length: never `None`).
fn hmac(secret: &str) -> Option<HmacSha256> {
    HmacSha256::new_from_slice(secret.as_bytes()).ok()
}

/// How far a registry hook's timestamp may be from now, either way.
pub const MAX_SIGNATURE_AGE_SECS: i64 = 300;

/// The longest branch a hook may name.
pub const MAX_BRANCH_LEN: usize = 255;

/// A branch name a hook cannot deploy.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid branch `{0}`: 1 to {MAX_BRANCH_LEN} characters, no spaces or control characters, none of ~ ^ : ? * [ \\, no `..` or `@{{`, not starting or ending with `/` (git's rules)"
)]
pub struct InvalidBranch(pub String);

/// Checks a branch name by git's rules for refs: it is matched against pushes and
/// passed on as data, never interpreted.
pub fn check_branch(branch: &str) -> Result<(), InvalidBranch> {
    let bad = branch.is_empty()
        || branch.len() > MAX_BRANCH_LEN
        || branch
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c))
        || branch.contains("..")
        || branch.contains("@{")
        || branch.starts_with('/')
        || branch.ends_with('/')
        || branch.ends_with(".lock");
    if bad {
        return Err(InvalidBranch(branch.to_owned()));
    }
    Ok(())
}

/// The branch a GitHub hook deploys when none is named.
pub const DEFAULT_BRANCH: &str = "main";

/// A webhook that cannot be made or changed as asked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HookError {
    #[error(transparent)]
    Branch(#[from] InvalidBranch),
    #[error("a `registry` hook has no branch: leave it out")]
    RegistryBranch,
    #[error(
        "hook {0} has two valid secrets already: finish that rotation first (`drover hook rotate {0} --finish`)"
    )]
    Rotating(crate::ids::HookId),
}

/// The branch a hook of `kind` deploys, asked as `branch`: a GitHub hook's, checked
/// (default [`DEFAULT_BRANCH`]); a registry hook has none.
pub fn hook_branch(
    kind: crate::model::HookKind,
    branch: Option<String>,
) -> Result<Option<String>, HookError> {
    use crate::model::HookKind;
    match (kind, branch) {
        (HookKind::Github, branch) => {
            let branch = branch.unwrap_or_else(|| DEFAULT_BRANCH.to_owned());
            check_branch(&branch)?;
            Ok(Some(branch))
        }
        (HookKind::Registry, None) => Ok(None),
        (HookKind::Registry, Some(_)) => Err(HookError::RegistryBranch),
    }
}

/// A repository's address without what differs between its spellings: the scheme,
/// `git@host:`, a trailing `.git` or `/`, and case. `https://github.com/Org/Repo.git`,
/// `git@github.com:org/repo` and `github.com/org/repo` are one repository.
pub fn repository_key(address: &str) -> String {
    let mut key = address.trim().to_ascii_lowercase();
    for scheme in ["https://", "http://", "ssh://", "git://"] {
        if let Some(rest) = key.strip_prefix(scheme) {
            key = rest.to_owned();
        }
    }
    if let Some(rest) = key.strip_prefix("git@") {
        key = rest.replacen(':', "/", 1);
    }
    let key = key.trim_end_matches('/');
    key.strip_suffix(".git").unwrap_or(key).to_owned()
}

/// An image reference without its tag or digest: `registry.example/web:1.4` and
/// `registry.example/web@sha256:…` are `registry.example/web`.
pub fn image_repository(image: &str) -> &str {
    let image = image.split_once('@').map_or(image, |(name, _)| name);
    // A `:` after the last `/` starts a tag; one before it is a registry's port.
    match image.rfind(':') {
        Some(colon) if !image[colon..].contains('/') => &image[..colon],
        _ => image,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's published example (docs: "Validating webhook deliveries").
    #[test]
    fn githubs_test_vector_verifies() {
        let secret = "It's a Secret to Everybody";
        let signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(secret, &[b"Hello, World!"]), signature);
        assert!(verify(secret, &[b"Hello, World!"], signature));
        assert!(!verify(secret, &[b"Hello, World?"], signature));
        assert!(!verify("another secret", &[b"Hello, World!"], signature));
        assert!(!verify(secret, &[b"Hello, World!"], "sha1=757107ea"));
        assert!(!verify(secret, &[b"Hello, World!"], "sha256=not-hex"));
        assert!(!verify(secret, &[b"Hello, World!"], ""));
        // Parts are one message: signing them apart is signing them together.
        assert!(verify(secret, &[b"Hello, ", b"World!"], signature));
    }

    #[test]
    fn secrets_are_distinct_and_hidden() {
        let (a, b) = (HookSecret::generate(), HookSecret::generate());
        assert_ne!(a, b);
        assert!(a.reveal().starts_with("whsec_"));
        assert_eq!(format!("{a:?}"), "HookSecret(..)");
    }

    #[test]
    fn branches_follow_gits_rules_and_anything_else_is_data() {
        for good in [
            "main",
            "release/1.4",
            "zzz\";echo${IFS}hello;#",
            "feature-ü",
        ] {
            assert_eq!(check_branch(good), Ok(()), "{good}");
        }
        for bad in [
            "", "a b", "a..b", "a@{1}", "/main", "main/", "x.lock", "a\nb", "a~1",
        ] {
            assert!(check_branch(bad).is_err(), "{bad:?}");
        }
        assert!(check_branch(&"a".repeat(256)).is_err());
    }

    #[test]
    fn one_repository_has_one_key_however_it_is_spelled() {
        let key = "github.com/wikimedia/toolhunt";
        for address in [
            "https://github.com/wikimedia/toolhunt",
            "https://github.com/Wikimedia/Toolhunt.git",
            "git@github.com:wikimedia/toolhunt.git",
            "ssh://git@github.com/wikimedia/toolhunt",
            "git://github.com/wikimedia/toolhunt.git",
            "github.com/wikimedia/toolhunt/",
        ] {
            assert_eq!(repository_key(address), key, "{address}");
        }
        assert_ne!(
            repository_key("https://github.com/wikimedia/toolhunt-ui"),
            key
        );
    }

    #[test]
    fn an_images_repository_drops_its_tag_or_digest_not_its_port() {
        for (image, repository) in [
            ("registry.example/web:1.4", "registry.example/web"),
            ("registry.example/web@sha256:abc", "registry.example/web"),
            ("registry.example:5000/web", "registry.example:5000/web"),
            ("registry.example:5000/web:2", "registry.example:5000/web"),
            ("web", "web"),
        ] {
            assert_eq!(image_repository(image), repository, "{image}");
        }
    }
}
