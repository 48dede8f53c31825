//! Secrets the gateway holds: the admin token, the master key that seals IM
//! credentials at rest (XChaCha20-Poly1305), and a redacting wrapper.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::Path;

/// A value that must never be printed: `Debug` shows `<redacted>`.
#[derive(Clone, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Secret(value)
    }
    /// The value, for the one place that needs it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Errors reading or creating secrets, or opening sealed data.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// A secret file could not be read or written.
    #[error("secret file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The master key is not 32 bytes of hex or base64.
    #[error("master key must be 32 bytes as 64 hex characters (or base64): {0}")]
    BadMasterKey(String),
    /// Sealed data did not decrypt: wrong key, wrong record or tampered bytes.
    #[error("sealed data cannot be opened (wrong master key or tampered data)")]
    Unseal,
}

/// The 256-bit key that encrypts stored IM credentials.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

const NONCE_LEN: usize = 24;

impl MasterKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        MasterKey(key)
    }

    /// Parses 64 hex characters or standard base64 of 32 bytes.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        use base64::Engine as _;
        let text = text.trim();
        let bytes = hex::decode(text)
            .ok()
            .or_else(|| base64::engine::general_purpose::STANDARD.decode(text).ok())
            .ok_or_else(|| SecretError::BadMasterKey("neither hex nor base64".into()))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| SecretError::BadMasterKey(format!("{} bytes", b.len())))?;
        Ok(MasterKey(key))
    }

    /// The key's text form (hex), as written to `<data-dir>/master-key`.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Encrypts `plaintext`, binding it to `context` (e.g. the binding id) so a
    /// sealed value copied onto another record does not open there.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Vec<u8> {
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let payload = Payload {
            msg: plaintext,
            aad: context,
        };
        let mut out = nonce.to_vec();
        // Encryption with a valid key and nonce length cannot fail.
        if let Ok(ct) = cipher.encrypt(XNonce::from_slice(&nonce), payload) {
            out.extend_from_slice(&ct);
        }
        out
    }

    /// Decrypts what [`MasterKey::seal`] produced for the same `context`.
    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>, SecretError> {
        if sealed.len() < NONCE_LEN {
            return Err(SecretError::Unseal);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: context,
                },
            )
            .map_err(|_| SecretError::Unseal)
    }

    /// A binding's IM credentials (JSON text), sealed for that binding and
    /// user by the bindings API; `None` when they do not open.
    pub fn open_credentials(
        &self,
        sealed: &[u8],
        binding_id: &str,
        user_id: &str,
    ) -> Option<String> {
        let context = credentials_context(binding_id, user_id);
        self.open(sealed, context.as_bytes())
            .ok()
            .and_then(|plain| String::from_utf8(plain).ok())
    }
}

/// A fresh random token: 256 bits, base64url without padding.
pub fn random_token() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The context sealed IM credentials are bound to: a copy moved to another
/// binding or user does not decrypt.
pub fn credentials_context(binding_id: &str, user_id: &str) -> String {
    format!("binding:{binding_id}:user:{user_id}")
}

/// Hex SHA-256, used to store tokens and to name plugin bytes.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Compares two secrets without leaking where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (da, db) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    da.iter()
        .zip(db.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Reads a secret from `file`, or writes `make()` there with mode 0600 first.
fn load_or_create(file: &Path, make: impl FnOnce() -> String) -> Result<String, SecretError> {
    let io = |source| SecretError::Io {
        path: file.display().to_string(),
        source,
    };
    let read = || std::fs::read_to_string(file).map(|text| text.trim().to_owned());
    match read() {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let value = make();
            match write_private(file, &value) {
                Ok(()) => Ok(value),
                // Another process sharing the data dir created it meanwhile:
                // theirs is the secret both must use.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read().map_err(io),
                Err(e) => Err(io(e)),
            }
        }
        Err(e) => Err(io(e)),
    }
}

/// Creates `file` holding `value` (mode 0600) atomically: the value goes to a
/// private temp file, is synced, and only then appears under its name. A
/// crash leaves no file or the whole secret, never an empty admin token or a
/// truncated master key. Fails with `AlreadyExists` when `file` exists.
fn write_private(file: &Path, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    let mut suffix = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut suffix);
    let temp = dir.join(format!(".{name}.{}.tmp", hex::encode(suffix)));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Private from the first byte: the temp file holds the secret too.
        options.mode(0o600);
    }
    let written = options.open(&temp).and_then(|mut f| {
        f.write_all(value.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()
    });
    let published = written.and_then(|()| publish(&temp, file));
    // The temp name is gone after a rename; after a link it is a second
    // name of the file and must go.
    let _ = std::fs::remove_file(&temp);
    published?;
    sync_dir(dir)
}

/// Gives `temp` the name `file` unless `file` exists. A hard link does that
/// atomically; a plain rename would replace a secret another process has just
/// created and already uses (its master key would then be lost).
fn publish(temp: &Path, file: &Path) -> std::io::Result<()> {
    match std::fs::hard_link(temp, file) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(e),
        // Filesystems without hard links: rename, checking first (a race
        // remains only between two processes creating one data dir at once).
        Err(_) if file.exists() => Err(std::io::ErrorKind::AlreadyExists.into()),
        Err(_) => std::fs::rename(temp, file),
    }
}

/// Makes the new directory entry itself survive a crash.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// The admin token: `from_env` if set, else `<data_dir>/admin-token`,
/// generated on first start.
pub fn admin_token(
    from_env: Option<String>,
    data_dir: &Path,
) -> Result<Secret<String>, SecretError> {
    match from_env.filter(|t| !t.trim().is_empty()) {
        Some(t) => Ok(Secret::new(t.trim().to_owned())),
        None => load_or_create(&data_dir.join("admin-token"), random_token).map(Secret::new),
    }
}

/// The master key: `from_env` if set, else `<data_dir>/master-key`,
/// generated on first start.
pub fn master_key(from_env: Option<String>, data_dir: &Path) -> Result<MasterKey, SecretError> {
    match from_env.filter(|t| !t.trim().is_empty()) {
        Some(t) => MasterKey::parse(&t),
        None => {
            let text = load_or_create(&data_dir.join("master-key"), || {
                MasterKey::generate().to_hex()
            })?;
            MasterKey::parse(&text)
        }
    }
}

/// The context the key check value is sealed under: no record's context looks
/// like it, so no sealed record can stand in for it.
const KEY_CHECK_CONTEXT: &[u8] = b"gateway:key-check:v1";
/// What the key check value holds; only whether it opens matters.
const KEY_CHECK_TEXT: &[u8] = b"the master key of this registry";

/// How the master key passed [`check_master_key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheck {
    /// The registry's check value opens with the key.
    Verified,
    /// A new registry without sealed data: the key's check value was stored.
    Stored,
    /// A registry from before check values: one item of its sealed data
    /// opened with the key, and the key's check value was stored.
    Adopted,
}

/// Why [`check_master_key`] failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyCheckError {
    /// The key does not open what the registry already holds sealed.
    #[error("the master key does not open the data this registry holds sealed")]
    Mismatch,
    /// The registry could not be read or written.
    #[error(transparent)]
    Registry(#[from] registry_db::RegistryError),
}

/// Checks that `key` is the key the registry's data is sealed with, so a node
/// with another key (its own data dir, a lost master-key file) is refused at
/// start instead of failing every delivery it claims. The first start stores
/// a check value sealed with the key; a registry from before check values is
/// checked against one item of its sealed data and then gets its check value.
pub async fn check_master_key(
    key: &MasterKey,
    registry: &registry_db::Registry,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<KeyCheck, KeyCheckError> {
    let opens = |check: &[u8]| key.open(check, KEY_CHECK_CONTEXT).is_ok();
    if let Some(check) = registry.key_check().await? {
        return if opens(&check) {
            Ok(KeyCheck::Verified)
        } else {
            Err(KeyCheckError::Mismatch)
        };
    }
    let outcome = match sealed_sample_opens(key, registry).await? {
        Some(false) => return Err(KeyCheckError::Mismatch),
        Some(true) => KeyCheck::Adopted,
        None => KeyCheck::Stored,
    };
    let stored = registry
        .init_key_check(&key.seal(KEY_CHECK_TEXT, KEY_CHECK_CONTEXT), now)
        .await?;
    // A node starting at the same moment may have stored its value first;
    // the stored one is what this key must open.
    if opens(&stored) {
        Ok(outcome)
    } else {
        Err(KeyCheckError::Mismatch)
    }
}

/// Whether `key` opens one item of the registry's sealed data (the oldest
/// binding's credentials, else a module's config); `None` without any.
async fn sealed_sample_opens(
    key: &MasterKey,
    registry: &registry_db::Registry,
) -> Result<Option<bool>, registry_db::RegistryError> {
    if let Some(binding) = registry.first_binding().await? {
        let context = credentials_context(&binding.id, &binding.user_id);
        return Ok(Some(
            key.open(&binding.credentials.0, context.as_bytes()).is_ok(),
        ));
    }
    // Every module stored by the gateway holds its config sealed.
    let modules = registry.list_modules(true).await?;
    Ok(modules
        .iter()
        .find(|m| m.manifest.get("config_sealed").is_some())
        .map(|m| crate::modules::stored_manifest(&m.manifest, key).is_ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_credentials_open_only_with_the_same_key_and_context() {
        let key = MasterKey::generate();
        let sealed = key.seal(br#"{"password":"pw"}"#, b"binding-1");
        assert!(!sealed.windows(2).any(|w| w == b"pw"), "plaintext visible");
        assert_eq!(
            key.open(&sealed, b"binding-1").unwrap(),
            br#"{"password":"pw"}"#
        );
        assert!(key.open(&sealed, b"binding-2").is_err());
        assert!(MasterKey::generate().open(&sealed, b"binding-1").is_err());
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(key.open(&tampered, b"binding-1").is_err());
    }

    #[test]
    fn master_key_accepts_hex_and_base64_and_rejects_short_keys() {
        let key = MasterKey::generate();
        assert!(MasterKey::parse(&key.to_hex()).is_ok());
        assert!(MasterKey::parse("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").is_ok());
        assert!(MasterKey::parse("abcd").is_err());
        assert_eq!(format!("{key:?}"), "MasterKey(<redacted>)");
    }

    #[test]
    fn generated_secrets_are_kept_with_private_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let first = admin_token(None, dir.path()).unwrap();
        let again = admin_token(None, dir.path()).unwrap();
        assert_eq!(first.expose(), again.expose());
        assert!(first.expose().len() >= 43);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("admin-token"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let env = admin_token(Some("from-env".into()), dir.path()).unwrap();
        assert_eq!(env.expose(), "from-env");
        assert_eq!(format!("{env:?}"), "<redacted>");
    }

    #[test]
    fn secret_files_appear_whole_and_only_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = &dir.path().join("master-key");
        // Processes racing to create the file all end up with the one value
        // that was written, none with a value of their own.
        let values: Vec<String> = std::thread::scope(|s| {
            let racers: Vec<_> = (0..8)
                .map(|i| s.spawn(move || load_or_create(file, || format!("value-{i}")).unwrap()))
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let on_disk = std::fs::read_to_string(file).unwrap();
        assert!(values.iter().all(|v| v == on_disk.trim()), "{values:?}");
        // No temp file is left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["master-key"]);
    }
}
