//! Who may call what: bearer tokens and roles ([`Auth`]), tenant scopes,
//! signed writes against replay ([`signed`]) and the risk check on
//! high-frequency reserves ([`risk`]).
//!
//! Verifying a token costs tens of microseconds (ES256); a verified token
//! is cached by its hash until it expires or the keys are reloaded, so a
//! caller that sends the same token with every request pays a hash-map
//! lookup.

pub mod jwt;
pub mod risk;
pub mod signed;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

pub use jwt::TokenError;
use jwt::{Expect, KeySet};

/// A least-privilege role; every endpoint needs one of a few (see
/// `Endpoint::roles`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    /// Reserve and release; read its tenant's holds and orders.
    Reserver = 1,
    /// Confirm a hold once paid.
    Payment = 2,
    /// Stock queries.
    Reader = 4,
    /// Receive stock, one row or a batch.
    Receiver = 8,
    /// Freeze, unfreeze, propose adjustments, transfers.
    Operator = 16,
    /// Approve or reject adjustments.
    Approver = 32,
    /// Reconcile and repair, snapshots, capacity, persistence and event status.
    Admin = 64,
}

impl Role {
    pub const ALL: [Role; 7] =
        [Role::Reserver, Role::Payment, Role::Reader, Role::Receiver, Role::Operator, Role::Approver, Role::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Role::Reserver => "reserver",
            Role::Payment => "payment",
            Role::Reader => "reader",
            Role::Receiver => "receiver",
            Role::Operator => "operator",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }

    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// The caller a request was made by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The token's `sub`: recorded as the operator of every change.
    pub sub: String,
    roles: u8,
    /// Holds, orders and idempotency keys are scoped to it.
    pub tenant: Option<String>,
    /// The caller's risk service cleared it (`risk_cleared: true`).
    pub risk_cleared: bool,
}

impl Identity {
    pub fn new(sub: impl Into<String>, roles: &[Role], tenant: Option<String>) -> Identity {
        Identity { sub: sub.into(), roles: roles.iter().fold(0, |m, r| m | *r as u8), tenant, risk_cleared: false }
    }

    pub fn has_any(&self, roles: &[Role]) -> bool {
        roles.iter().any(|r| self.roles & *r as u8 != 0)
    }
}

/// What `--auth` and its companion flags configure.
#[derive(Clone, Debug, Default)]
pub struct AuthConfig {
    pub hs256_secret_file: Option<PathBuf>,
    pub jwks_file: Option<PathBuf>,
    pub expect: Expect,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuthSetupError(pub String);

/// Verified tokens kept; past this the cache starts over.
const CACHE_MAX: usize = 65_536;

/// Bearer-token authentication: the keys (re-read on SIGHUP) and the cache
/// of verified tokens.
pub struct Auth {
    config: AuthConfig,
    keys: RwLock<Arc<KeySet>>,
    /// Token hash -> identity and `exp`, for tokens verified with the keys
    /// loaded now (a reload empties it).
    cache: Mutex<HashMap<u128, (Arc<Identity>, u64)>>,
}

impl Auth {
    pub fn new(config: AuthConfig) -> Result<Auth, AuthSetupError> {
        let keys = load_keys(&config)?;
        Ok(Auth { config, keys: RwLock::new(Arc::new(keys)), cache: Mutex::default() })
    }

    /// Reads the key files again; on an error the keys in use stay.
    pub fn reload(&self) -> Result<(), AuthSetupError> {
        let keys = load_keys(&self.config)?;
        *self.keys.write() = Arc::new(keys);
        self.cache.lock().clear();
        Ok(())
    }

    /// The identity `token` proves at `now_secs`.
    pub fn verify(&self, token: &str, now_secs: u64) -> Result<Arc<Identity>, TokenError> {
        let hash = xxhash_rust::xxh3::xxh3_128(token.as_bytes());
        if let Some((identity, exp)) = self.cache.lock().get(&hash) {
            if now_secs < exp.saturating_add(self.config.expect.leeway_secs) {
                return Ok(identity.clone());
            }
        }
        let keys = self.keys.read().clone();
        let claims = jwt::verify(token, &keys, &self.config.expect, now_secs)?;
        let mut identity = Identity::new(
            claims.sub,
            &claims.roles.iter().filter_map(|r| Role::parse(r)).collect::<Vec<_>>(),
            claims.tenant,
        );
        identity.risk_cleared = claims.risk_cleared;
        let identity = Arc::new(identity);
        // A token not valid yet is not cached: it is checked again later.
        let mut cache = self.cache.lock();
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        if Arc::ptr_eq(&keys, &*self.keys.read()) {
            cache.insert(hash, (identity.clone(), claims.exp));
        }
        Ok(identity)
    }
}

fn load_keys(config: &AuthConfig) -> Result<KeySet, AuthSetupError> {
    let mut keys = KeySet::default();
    if let Some(path) = &config.hs256_secret_file {
        let secret = read_secret(path)?;
        keys.hs256 = Some(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret));
    }
    if let Some(path) = &config.jwks_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AuthSetupError(format!("cannot read the JWKS file {}: {e}", path.display())))?;
        keys.public = jwt::parse_jwks(&text).map_err(|e| AuthSetupError(format!("{}: {e}", path.display())))?;
    }
    if keys.hs256.is_none() && keys.public.is_empty() {
        return Err(AuthSetupError(
            "--auth jwt needs keys: --jwt-hs256-secret-file and/or --jwt-jwks-file (with at least one key)".into(),
        ));
    }
    Ok(keys)
}

/// Reads a secret from a file that only its owner may read: a file that
/// its group or others can read or write is refused. Trailing line breaks
/// are not part of the secret; an empty secret is refused.
pub fn read_secret(path: &Path) -> Result<Vec<u8>, AuthSetupError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| AuthSetupError(format!("cannot read the secret file {}: {e}", path.display())))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(AuthSetupError(format!(
            "the secret file {} has mode {mode:03o}: its group and others must have no access (chmod 600)",
            path.display()
        )));
    }
    let mut secret = std::fs::read(path)
        .map_err(|e| AuthSetupError(format!("cannot read the secret file {}: {e}", path.display())))?;
    while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        secret.pop();
    }
    if secret.is_empty() {
        return Err(AuthSetupError(format!("the secret file {} is empty", path.display())));
    }
    Ok(secret)
}

/// Separates a tenant from an id in the ids the core stores: `acme|o-1`.
/// With authentication on, callers' order ids and idempotency keys may not
/// contain it, so no caller can name another tenant's id.
pub const TENANT_SEPARATOR: char = '|';

/// `id` as stored for `tenant`.
pub fn scoped(tenant: Option<&str>, id: String) -> String {
    match tenant {
        Some(tenant) => format!("{tenant}{TENANT_SEPARATOR}{id}"),
        None => id,
    }
}

/// The caller's view of a stored id, if it is in the caller's scope.
pub fn unscoped<'a>(tenant: Option<&str>, stored: &'a str) -> Option<&'a str> {
    match (tenant, stored.split_once(TENANT_SEPARATOR)) {
        (Some(tenant), Some((owner, id))) if owner == tenant => Some(id),
        (None, None) => Some(stored),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::jwt::mint::SigningKey;
    use super::*;

    fn secret_file(dir: &Path, mode: u32, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(format!("secret-{mode:o}"));
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_secret_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let open = secret_file(dir.path(), 0o644, "k\n");
        assert!(read_secret(&open).unwrap_err().0.contains("chmod 600"));
        assert_eq!(read_secret(&secret_file(dir.path(), 0o600, "k\n")).unwrap(), b"k");
        assert!(read_secret(&secret_file(dir.path(), 0o400, "\n")).unwrap_err().0.contains("empty"));
    }

    #[test]
    fn verified_tokens_are_cached_until_they_expire_and_reload_forgets_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = secret_file(dir.path(), 0o600, "one");
        let auth = Auth::new(AuthConfig { hs256_secret_file: Some(path.clone()), ..Default::default() }).unwrap();
        let claims = serde_json::json!({ "sub": "a", "roles": ["reader", "nope"], "exp": 1_000 });
        let token = SigningKey::Hs256(b"one".to_vec()).sign(&claims, None);
        let identity = auth.verify(&token, 900).unwrap();
        assert!(identity.has_any(&[Role::Reader]) && !identity.has_any(&[Role::Admin]));
        assert_eq!(auth.cache.lock().len(), 1);
        assert_eq!(auth.verify(&token, 1_000).unwrap_err(), TokenError::Expired);
        std::fs::write(&path, "two").unwrap();
        auth.reload().unwrap();
        assert_eq!(auth.verify(&token, 900).unwrap_err(), TokenError::BadSignature);
    }

    #[test]
    fn ids_are_scoped_to_their_tenant() {
        assert_eq!(scoped(Some("acme"), "o-1".into()), "acme|o-1");
        assert_eq!(unscoped(Some("acme"), "acme|o-1"), Some("o-1"));
        assert_eq!(unscoped(Some("other"), "acme|o-1"), None);
        assert_eq!(unscoped(None, "acme|o-1"), None);
        assert_eq!(unscoped(Some("acme"), "o-1"), None);
        assert_eq!(unscoped(None, "o-1"), Some("o-1"));
    }
}
