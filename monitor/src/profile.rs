//! The local profile file (TOML) that other tools may edit: one table per
//! network with the settings it holds now, e.g.
//!
//! ```toml
//! [matrix]
//! signature = "Out for lunch"
//! mood = "happy"
//! avatar = "avatar.png"   # relative to the profile file's folder
//! ```

use crate::MonitorError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One network's table.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Signature (status text).
    pub signature: Option<String>,
    /// Mood.
    pub mood: Option<String>,
    /// Avatar image file.
    pub avatar: Option<PathBuf>,
}

/// Reads the profile file: module id to its table. A missing file is empty
/// (the user may create it later).
pub fn read(path: &Path) -> Result<BTreeMap<String, Entry>, MonitorError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(MonitorError::file(path)(e)),
    };
    let mut entries: BTreeMap<String, Entry> =
        toml::from_str(&text).map_err(|e| MonitorError::File {
            path: path.display().to_string(),
            reason: format!(
                "not a profile file (tables like [matrix] with signature, mood, avatar): {e}"
            ),
        })?;
    let folder = path.parent().unwrap_or(Path::new("."));
    for entry in entries.values_mut() {
        if let Some(avatar) = &mut entry.avatar {
            if avatar.is_relative() {
                *avatar = folder.join(&*avatar);
            }
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tables_per_network_with_avatar_paths_next_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("profile.toml");
        std::fs::write(
            &path,
            "[matrix]\nsignature = \"lunch\"\navatar = \"me.png\"\n[xmpp]\nmood = \"happy\"\n",
        )
        .unwrap();
        let entries = read(&path).unwrap();
        assert_eq!(entries["matrix"].signature.as_deref(), Some("lunch"));
        assert_eq!(entries["matrix"].avatar, Some(dir.path().join("me.png")));
        assert_eq!(entries["xmpp"].mood.as_deref(), Some("happy"));
        assert!(read(&dir.path().join("missing.toml")).unwrap().is_empty());
    }

    #[test]
    fn a_misspelt_field_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("profile.toml");
        std::fs::write(&path, "[matrix]\nsignatur = \"lunch\"\n").unwrap();
        let error = read(&path).unwrap_err().to_string();
        assert!(error.contains("signatur"), "{error}");
        assert!(error.contains("not a profile file"), "{error}");
    }
}
