//! `auth` owns who may call the HTTP API. Callers present a bearer token
//! (`Authorization: Bearer <token>`); the scheduler keeps only the SHA-256 digest of each token
//! (tokens are 32 random bytes, so a plain digest is as strong as a slow hash), loaded from a
//! tokens file (a Kubernetes Secret mounted as a file in the manifests) with one entry per
//! principal:
//!
//! ```json
//! { "tokens": [
//!   { "name": "acme-backend", "sha256": "<64 hex>", "scope": "tenant", "tenant": "acme" },
//!   { "name": "instructor",   "sha256": "<64 hex>", "scope": "service", "tenants": ["acme", "beta"] },
//!   { "name": "ops",          "sha256": "<64 hex>", "scope": "admin" }
//! ] }
//! ```
//!
//! A **tenant** token submits, reads, follows and cancels only its own tenant's jobs; a
//! **service** token does the same for each tenant it lists (the instructor submits on behalf
//! of the tenants it serves); an **admin** token may do anything, including the fleet endpoints
//! (`/v1/workers`, `/v1/queues`). `reelforge token new` makes a token and its entry. Without a
//! tokens file the API is open (development only; the scheduler says so at start). The probes
//! and `/metrics` are never authenticated (they reveal no job data and Kubernetes and
//! Prometheus call them).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use protocol::TenantId;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// What a principal may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One tenant's jobs.
    Tenant(TenantId),
    /// The jobs of each of these tenants (a service acting for them).
    Service(BTreeSet<TenantId>),
    /// Everything.
    Admin,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Its name in the tokens file (for logs; never the token).
    pub name: String,
    /// What it may do.
    pub scope: Scope,
}

impl Principal {
    /// The principal of an API without tokens: may do everything.
    pub fn open() -> Self {
        Principal { name: "anonymous".into(), scope: Scope::Admin }
    }

    /// True when it may submit, read and cancel `tenant`'s jobs.
    pub fn may_act_for(&self, tenant: &TenantId) -> bool {
        match &self.scope {
            Scope::Tenant(t) => t == tenant,
            Scope::Service(ts) => ts.contains(tenant),
            Scope::Admin => true,
        }
    }

    /// True for the fleet endpoints.
    pub fn is_admin(&self) -> bool {
        self.scope == Scope::Admin
    }
}

/// Why the tokens file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// It cannot be read.
    #[error("tokens file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// It is not the expected JSON.
    #[error("tokens file: {0}")]
    Parse(String),
    /// An entry is wrong.
    #[error("tokens file, entry {index} ({name}): {reason}")]
    Entry {
        /// Its position (0-based).
        index: usize,
        /// Its name.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A token no entry has.
    Unknown,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tokens: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    sha256: String,
    scope: String,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    tenants: Vec<String>,
}

/// The tokens the API accepts, by digest.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_digest: HashMap<[u8; 32], Principal>,
}

impl Tokens {
    /// Reads a tokens file.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| AuthError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text)
    }

    /// Parses a tokens file's text.
    pub fn parse(text: &str) -> Result<Self, AuthError> {
        let file: File = serde_json::from_str(text).map_err(|e| AuthError::Parse(e.to_string()))?;
        let mut by_digest = HashMap::new();
        for (index, e) in file.tokens.into_iter().enumerate() {
            let bad = |reason: String| AuthError::Entry { index, name: e.name.clone(), reason };
            let tenant = |t: &str| {
                let t = TenantId(t.to_owned());
                t.check("tenant").map(|_| t).map_err(|v| bad(v.to_string()))
            };
            let mut digest = [0u8; 32];
            hex::decode_to_slice(e.sha256.trim(), &mut digest)
                .map_err(|_| bad("sha256 must be 64 hex digits (the digest of the token, not the token)".into()))?;
            let scope = match (e.scope.as_str(), &e.tenant, e.tenants.is_empty()) {
                ("tenant", Some(t), true) => Scope::Tenant(tenant(t)?),
                ("service", None, false) => {
                    Scope::Service(e.tenants.iter().map(|t| tenant(t)).collect::<Result<_, _>>()?)
                }
                ("admin", None, true) => Scope::Admin,
                ("tenant", ..) => return Err(bad("a tenant token names exactly one `tenant`".into())),
                ("service", ..) => return Err(bad("a service token lists its `tenants` (and no `tenant`)".into())),
                ("admin", ..) => return Err(bad("an admin token names no tenant".into())),
                (other, ..) => return Err(bad(format!("unknown scope {other:?} (tenant, service, admin)"))),
            };
            let principal = Principal { name: e.name.clone(), scope };
            if by_digest.insert(digest, principal).is_some() {
                return Err(bad("the same token appears twice".into()));
            }
        }
        Ok(Tokens { by_digest })
    }

    /// The principal an `Authorization` header value names.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<&Principal, Denied> {
        let token = authorization
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(Denied::Missing)?;
        self.by_digest.get(&digest(token)).ok_or(Denied::Unknown)
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

/// The SHA-256 of a token.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new random token (`rf_` and 64 hex digits: 256 bits) and the hex digest to store.
pub fn new_token() -> Result<(String, String), getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let token = format!("rf_{}", hex::encode(bytes));
    let sha = hex::encode(digest(&token));
    Ok((token, sha))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(entries: &str) -> String {
        format!(r#"{{ "tokens": [ {entries} ] }}"#)
    }

    #[test]
    fn tokens_authenticate_to_their_scope() {
        let (acme, acme_sha) = new_token().unwrap();
        let (svc, svc_sha) = new_token().unwrap();
        let (ops, ops_sha) = new_token().unwrap();
        let tokens = Tokens::parse(&file(&format!(
            r#"{{ "name": "a", "sha256": "{acme_sha}", "scope": "tenant", "tenant": "acme" }},
               {{ "name": "s", "sha256": "{svc_sha}", "scope": "service", "tenants": ["acme", "beta"] }},
               {{ "name": "o", "sha256": "{ops_sha}", "scope": "admin" }}"#
        )))
        .unwrap();
        assert_eq!(tokens.len(), 3);
        let (a, b, c) = (TenantId("acme".into()), TenantId("beta".into()), TenantId("gamma".into()));
        let p = tokens.authenticate(Some(&format!("Bearer {acme}"))).unwrap();
        assert_eq!(p.name, "a");
        assert!(p.may_act_for(&a) && !p.may_act_for(&b) && !p.is_admin());
        let p = tokens.authenticate(Some(&format!("Bearer {svc}"))).unwrap();
        assert!(p.may_act_for(&a) && p.may_act_for(&b) && !p.may_act_for(&c) && !p.is_admin());
        let p = tokens.authenticate(Some(&format!("Bearer {ops}"))).unwrap();
        assert!(p.may_act_for(&c) && p.is_admin());
        assert_eq!(tokens.authenticate(None), Err(Denied::Missing));
        assert_eq!(tokens.authenticate(Some("Basic abc")), Err(Denied::Missing));
        assert_eq!(tokens.authenticate(Some("Bearer ")), Err(Denied::Missing));
        assert_eq!(tokens.authenticate(Some("Bearer rf_not-a-token")), Err(Denied::Unknown));
        // The digest, presented as a token, is not the token.
        assert_eq!(tokens.authenticate(Some(&format!("Bearer {acme_sha}"))), Err(Denied::Unknown));
    }

    #[test]
    fn bad_files_are_refused_with_the_entry() {
        let sha = hex::encode(digest("x"));
        for (entry, needle) in [
            (format!(r#"{{ "name": "n", "sha256": "{sha}", "scope": "tenant" }}"#), "exactly one"),
            (format!(r#"{{ "name": "n", "sha256": "{sha}", "scope": "tenant", "tenant": "Acme" }}"#), "tenant"),
            (format!(r#"{{ "name": "n", "sha256": "{sha}", "scope": "service", "tenants": [] }}"#), "lists"),
            (format!(r#"{{ "name": "n", "sha256": "{sha}", "scope": "admin", "tenant": "a" }}"#), "no tenant"),
            (format!(r#"{{ "name": "n", "sha256": "{sha}", "scope": "root" }}"#), "unknown scope"),
            (r#"{ "name": "n", "sha256": "rf_plaintext", "scope": "admin" }"#.to_string(), "64 hex"),
            (format!(r#"{{ "name": "n", "sha256": "{sha}", "scope": "admin", "extra": 1 }}"#), "unknown field"),
        ] {
            let err = Tokens::parse(&file(&entry)).unwrap_err().to_string();
            assert!(err.contains(needle), "{entry}: {err}");
        }
        let twice = format!(
            r#"{{ "name": "a", "sha256": "{sha}", "scope": "admin" }}, {{ "name": "b", "sha256": "{sha}", "scope": "admin" }}"#
        );
        assert!(Tokens::parse(&file(&twice)).unwrap_err().to_string().contains("twice"));
    }
}
