//! T2 backups, pure: what a backup record holds and which requests are
//! well formed. The bytes are a blob of the user (the gateway stores a
//! backup's body before the plugin is called); any device of the same user
//! restores it, by user or by the device that made it.

use serde::{Deserialize, Serialize};

/// What a device backs up.
pub const KINDS: [&str; 3] = ["contacts", "messages", "photos"];

/// One backup, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    /// Id.
    pub id: String,
    /// One of [`KINDS`].
    pub kind: String,
    /// The device it came from.
    pub device: String,
    /// Bytes.
    pub size: u64,
    /// The media type it was sent with (JSON, an archive, an image...).
    pub content_type: String,
    /// Hex sha256 of the bytes.
    pub sha256: String,
    /// The blob holding the bytes.
    pub blob: String,
    /// When it was made, ms since the epoch.
    pub created_at: u64,
}

/// Checks the kind of a backup.
pub fn check_kind(kind: &str) -> Result<(), String> {
    if KINDS.contains(&kind) {
        Ok(())
    } else {
        Err(format!(
            "{kind:?} is not a kind of backup; one of {}",
            KINDS.join(", ")
        ))
    }
}

/// Whether `b` passes the list's filters.
pub fn listed(b: &Backup, device: Option<&str>, kind: Option<&str>) -> bool {
    device.is_none_or(|d| d == b.device) && kind.is_none_or(|k| k == b.kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_filters() {
        assert!(check_kind("photos").is_ok());
        assert!(check_kind("passwords").unwrap_err().contains("contacts"));
        let b = Backup {
            id: "1".into(),
            kind: "contacts".into(),
            device: "phone".into(),
            size: 2,
            content_type: "application/json".into(),
            sha256: String::new(),
            blob: "b".into(),
            created_at: 0,
        };
        assert!(listed(&b, None, None));
        assert!(listed(&b, Some("phone"), Some("contacts")));
        assert!(!listed(&b, Some("laptop"), None));
        assert!(!listed(&b, None, Some("photos")));
    }
}
