//! **Client secrets**: short-lived keys (`ek_…`) that `POST /v1/realtime/client_secrets`
//! mints for browsers, which cannot keep a real API key secret. A secret opens live
//! sessions (never file requests) until it expires; the store holds at most
//! `realtime.max_client_secrets` at once and keeps only their SHA-256 digests.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::protocol::SessionUpdate;

/// A minted secret, as its creator gets it once.
#[derive(Debug)]
pub struct Minted {
    pub value: String,
    /// Unix seconds.
    pub expires_at: u64,
}

/// Why no secret was minted.
#[derive(Debug, PartialEq, Eq)]
pub enum MintError {
    /// As many secrets as allowed are alive.
    Full,
    /// The system's random source failed.
    Random,
}

struct Entry {
    expires: Instant,
    /// The session settings the secret was minted with, applied when it connects.
    session: SessionUpdate,
}

#[derive(Clone)]
pub struct ClientSecrets {
    entries: Arc<Mutex<HashMap<[u8; 32], Entry>>>,
    capacity: usize,
}

impl ClientSecrets {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Arc::default(),
            capacity: capacity.max(1),
        }
    }

    /// A new secret valid for `ttl`, carrying `session` for the sessions it opens.
    pub fn mint(&self, ttl: Duration, session: SessionUpdate) -> Result<Minted, MintError> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if entries.len() >= self.capacity {
            entries.retain(|_, e| e.expires > now);
        }
        if entries.len() >= self.capacity {
            return Err(MintError::Full);
        }
        let value = format!("ek_{}", random_hex(24).ok_or(MintError::Random)?);
        entries.insert(
            digest(&value),
            Entry {
                expires: now + ttl,
                session,
            },
        );
        let expires_at = SystemTime::now()
            .checked_add(ttl)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        Ok(Minted { value, expires_at })
    }

    /// The session settings of `presented` when it is a live secret.
    pub fn accept(&self, presented: &str) -> Option<SessionUpdate> {
        if !presented.starts_with("ek_") {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&digest(presented))
            .filter(|e| e.expires > Instant::now())
            .map(|e| e.session.clone())
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// `bytes` random bytes from the system's source, as hex.
fn random_hex(bytes: usize) -> Option<String> {
    let mut buffer = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buffer))
        .ok()?;
    Some(buffer.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_open_until_they_expire_and_are_bounded_in_count() {
        let secrets = ClientSecrets::new(2);
        let a = secrets
            .mint(Duration::from_secs(60), SessionUpdate::default())
            .unwrap();
        assert!(a.value.starts_with("ek_") && a.value.len() == 51);
        assert!(secrets.accept(&a.value).is_some());
        assert!(secrets.accept("ek_nope").is_none());
        assert!(secrets.accept(&a.value[..50]).is_none());
        let short = secrets
            .mint(Duration::from_millis(1), SessionUpdate::default())
            .unwrap();
        assert_eq!(
            secrets
                .mint(Duration::from_secs(60), SessionUpdate::default())
                .err(),
            Some(MintError::Full)
        );
        std::thread::sleep(Duration::from_millis(5));
        assert!(secrets.accept(&short.value).is_none(), "expired");
        // The expired one made room.
        assert!(secrets
            .mint(Duration::from_secs(60), SessionUpdate::default())
            .is_ok());
    }
}
