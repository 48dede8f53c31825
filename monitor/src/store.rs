//! The monitor's files in its config dir: the session (mode 0600), the local
//! copy of the bindings (S3), what it last saw per account, and the on-disk
//! queue of reports not yet accepted by the gateway.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why a local file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading, writing or creating a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A file holds something else than the monitor wrote.
    #[error("{path} is damaged ({source}); remove it to start afresh")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What did not parse.
        source: serde_json::Error,
    },
}

/// The logged-in session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// Gateway URL.
    pub server: String,
    /// User name.
    pub username: String,
    /// Bearer token.
    pub token: String,
    /// RFC 3339 expiry.
    pub expires_at: String,
}

/// A binding as the monitor keeps it (never with credentials).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LocalBinding {
    /// Binding id on the gateway.
    pub id: String,
    /// Module id.
    pub module: String,
    /// Account login.
    pub account: String,
    /// RFC 3339.
    pub created_at: String,
}

/// Settings of one account as last seen, to notice what changed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Seen {
    /// Signature.
    pub signature: Option<String>,
    /// Mood.
    pub mood: Option<String>,
    /// SHA-256 of the avatar image.
    pub avatar_sha256: Option<String>,
}

/// What the monitor remembers between runs.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// Per binding id: what polling the network last showed.
    #[serde(default)]
    pub seen: BTreeMap<String, Seen>,
    /// Per module id: the profile file's table as last read.
    #[serde(default)]
    pub profile: BTreeMap<String, Seen>,
    /// Modules the user declined to register when `scan` asked (S7).
    #[serde(default)]
    pub declined: BTreeSet<String>,
}

/// An avatar waiting with its report: a copy in the queue folder (the
/// original may change or go before the report is sent).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueuedImage {
    /// The copy.
    pub file: PathBuf,
    /// Its MIME type.
    pub content_type: String,
}

/// A report waiting in the queue. The idempotency key makes sending it twice
/// harmless (the gateway answers the first receipt again).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueuedReport {
    /// Reporting module.
    pub module: String,
    /// Its account, when the user has several of that module.
    pub account: Option<String>,
    /// `{"signature"?, "mood"?}`.
    pub settings: gateway_api::Settings,
    /// A new avatar, uploaded when the report is sent.
    #[serde(default)]
    pub avatar: Option<QueuedImage>,
    /// Sent as `Idempotency-Key`.
    pub idempotency_key: String,
    /// Why it was queued (shown by `status`).
    pub source: String,
}

/// The monitor's config dir and its files.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (and creates, mode 0700) the config dir.
    pub fn open(dir: PathBuf) -> Result<Store, StoreError> {
        create_private_dir(&dir)?;
        create_private_dir(&dir.join("queue"))?;
        Ok(Store { dir })
    }

    /// The config dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The saved session, if logged in.
    pub fn session(&self) -> Result<Option<Session>, StoreError> {
        read_json(&self.path("session.json"))
    }

    /// Saves the session with mode 0600 (it holds the bearer token).
    pub fn save_session(&self, session: &Session) -> Result<(), StoreError> {
        write_json(&self.path("session.json"), session)
    }

    /// Forgets the session.
    pub fn forget_session(&self) -> Result<(), StoreError> {
        remove(&self.path("session.json"))
    }

    /// The local copy of the bindings.
    pub fn bindings(&self) -> Result<Vec<LocalBinding>, StoreError> {
        Ok(read_json(&self.path("bindings.json"))?.unwrap_or_default())
    }

    /// Replaces the local copy of the bindings.
    pub fn save_bindings(&self, bindings: &[LocalBinding]) -> Result<(), StoreError> {
        write_json(&self.path("bindings.json"), &bindings)
    }

    /// What the monitor remembers between runs.
    pub fn state(&self) -> Result<State, StoreError> {
        Ok(read_json(&self.path("state.json"))?.unwrap_or_default())
    }

    /// Saves what the monitor remembers.
    pub fn save_state(&self, state: &State) -> Result<(), StoreError> {
        write_json(&self.path("state.json"), state)
    }

    /// Appends a report to the queue; returns its file.
    pub fn enqueue(&self, report: &QueuedReport) -> Result<PathBuf, StoreError> {
        let next = self.waiting()?.last().map(|(seq, _)| seq + 1).unwrap_or(1);
        let path = self.dir.join("queue").join(format!("{next:010}.json"));
        write_json(&path, report)?;
        Ok(path)
    }

    /// The queue's files, oldest first, by name only: (sequence, file).
    pub fn waiting(&self) -> Result<Vec<(u64, PathBuf)>, StoreError> {
        let dir = self.dir.join("queue");
        let mut waiting: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)
            .map_err(io(&dir))?
            .flatten()
            .filter_map(|entry| {
                let path = entry.path();
                let seq = path
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".json")?
                    .parse()
                    .ok()?;
                Some((seq, path))
            })
            .collect();
        waiting.sort_by_key(|(seq, _)| *seq);
        Ok(waiting)
    }

    /// The queued reports, oldest first: (sequence, file, report).
    pub fn queued(&self) -> Result<Vec<(u64, PathBuf, QueuedReport)>, StoreError> {
        let mut queued = Vec::new();
        for (seq, path) in self.waiting()? {
            if let Some(report) = read_json(&path)? {
                queued.push((seq, path, report));
            }
        }
        Ok(queued)
    }

    /// Removes a sent report from the queue.
    pub fn dequeue(&self, path: &Path) -> Result<(), StoreError> {
        remove(path)
    }

    /// Moves a report the gateway refused out of the queue, with the reason,
    /// so it neither blocks the reports behind it nor disappears unseen.
    pub fn reject(&self, path: &Path, reason: &str) -> Result<PathBuf, StoreError> {
        let dir = self.dir.join("rejected");
        create_private_dir(&dir)?;
        let name = path.file_name().map(PathBuf::from).unwrap_or_default();
        let target = dir.join(name);
        let mut report: Value = read_json(path)?.unwrap_or(Value::Null);
        report["rejected_because"] = Value::String(reason.to_owned());
        write_json(&target, &report)?;
        remove(path)?;
        Ok(target)
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(io(dir))
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StoreError::Damaged {
                    path: path.to_owned(),
                    source,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

/// Writes a file readable by its owner only, atomically (temp file, fsync,
/// rename): a crash leaves the old or the new content, never half of one.
fn write_json(path: &Path, value: &impl Serialize) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| StoreError::Damaged {
        path: path.to_owned(),
        source,
    })?;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(io(&tmp))?;
    file.write_all(&bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn remove(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}
