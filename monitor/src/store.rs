//! The monitor's files in its config dir: the session (mode 0600), the local
//! copy of the bindings (S3), what it last saw per account, the on-disk
//! queue of reports not yet accepted by the gateway, and this terminal's
//! device registration (mode 0600) with its inbox position.
//!
//! Several monitor processes may use one config dir at once (`watch` in the
//! background, `report` from a script): every file is written whole and
//! durably (unique temp file, fsync, rename, fsync of the folder), the queue
//! is numbered under an exclusive lock file, and only one process at a time
//! sends the queue (see [`Store::lock_sending`]).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// Per `module/client`: what the client's own files last said.
    #[serde(default)]
    pub local: BTreeMap<String, Seen>,
}

/// This terminal as a device of the user (`monitor device register`): the
/// device token handoff commands use, kept with mode 0600 in `device.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Device {
    /// Gateway URL the token was issued by.
    pub server: String,
    /// The user it was registered for.
    pub username: String,
    /// The device's stable id.
    pub id: String,
    /// Its name in the control list.
    pub name: String,
    /// Its platform, as registered.
    #[serde(default)]
    pub platform: Option<String>,
    /// The apps it can continue, as registered.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Bearer token acting as this device.
    pub token: String,
}

/// An upload `files upload` began: where it lives on the gateway, for the
/// next run to resume it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PendingUpload {
    /// Gateway URL.
    pub server: String,
    /// The file's record.
    pub file_id: String,
    /// The tus upload URL (path on the server).
    pub upload: String,
}

/// Where `monitor handoff inbox` stopped reading the device's event stream
/// (`inbox.json`): the id of the last event it handled, sent as
/// `Last-Event-ID` when it starts again.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct InboxCursor {
    /// Gateway URL.
    pub server: String,
    /// The device whose inbox it is (ids are counted per device).
    pub device: String,
    /// The last event handled.
    pub last_event_id: u64,
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
    /// Read from a local client's files: its own network is pushed too.
    #[serde(default)]
    pub from_local_client: bool,
}

/// The right to send the queue: an exclusive lock on `send.lock` in the
/// config dir, released when this is dropped (or the process ends).
#[derive(Debug)]
#[must_use = "the lock is released when this is dropped"]
pub struct Sending {
    _file: File,
}

/// The right to number and move the queue's files: an exclusive lock on
/// `queue.lock`, released when dropped.
#[derive(Debug)]
struct Numbering {
    _file: File,
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
        // The queue folder's own entry must survive a crash too, or the
        // reports in it would be lost with it.
        sync_dir(&dir)?;
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

    /// This terminal's device registration, if any.
    pub fn device(&self) -> Result<Option<Device>, StoreError> {
        read_json(&self.path("device.json"))
    }

    /// Saves the device registration with mode 0600 (it holds the device
    /// token) and forgets the inbox position of any earlier registration:
    /// the gateway's own record of what was sent takes over.
    pub fn save_device(&self, device: &Device) -> Result<(), StoreError> {
        write_json(&self.path("device.json"), device)?;
        remove(&self.path("inbox.json"))
    }

    /// The id of the last inbox event handled for `device` at `server`.
    pub fn inbox_cursor(&self, server: &str, device: &str) -> Result<Option<u64>, StoreError> {
        let cursor: Option<InboxCursor> = read_json(&self.path("inbox.json"))?;
        Ok(cursor
            .filter(|c| c.server == server && c.device == device)
            .map(|c| c.last_event_id))
    }

    /// Remembers the last inbox event handled.
    pub fn save_inbox_cursor(&self, cursor: &InboxCursor) -> Result<(), StoreError> {
        write_json(&self.path("inbox.json"), cursor)
    }

    /// Uploads begun by `files upload` and not finished, by file (path,
    /// size and modification time), for resuming them (`uploads.json`).
    pub fn uploads(&self) -> Result<BTreeMap<String, PendingUpload>, StoreError> {
        Ok(read_json(&self.path("uploads.json"))?.unwrap_or_default())
    }

    /// Saves the unfinished uploads.
    pub fn save_uploads(
        &self,
        uploads: &BTreeMap<String, PendingUpload>,
    ) -> Result<(), StoreError> {
        write_json(&self.path("uploads.json"), uploads)
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

    /// Waits for the right to send the queue and takes it. Only one monitor
    /// process sends at a time: two senders could otherwise send a later
    /// report while an earlier one is still on its way, or move a report to
    /// `rejected/` that the other just got accepted. Blocks the calling
    /// thread; the holder is another process, whose sending is bounded by
    /// the client's request timeouts.
    pub fn lock_sending(&self) -> Result<Sending, StoreError> {
        let path = self.path("send.lock");
        let file = open_lock_file(&path)?;
        lock_exclusive(&file).map_err(io(&path))?;
        Ok(Sending { _file: file })
    }

    /// The right to send the queue if no other process has it now.
    pub fn try_lock_sending(&self) -> Result<Option<Sending>, StoreError> {
        let path = self.path("send.lock");
        let file = open_lock_file(&path)?;
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => Ok(Some(Sending { _file: file })),
            Err(fs4::TryLockError::WouldBlock) => Ok(None),
            Err(fs4::TryLockError::Error(e)) => Err(io(&path)(e)),
        }
    }

    // Why a lock file rather than `create_new` (O_EXCL) and a retry with the
    // next number: a queued report is written to a temp file and renamed into
    // place so nobody ever reads half of one, and rename replaces an existing
    // file silently, so O_EXCL could only guard an empty placeholder that a
    // concurrent `flush` or `status` would read as damaged (and that a crash
    // would leave behind). The lock also keeps the numbers in the order the
    // reports were made, each durable before the next is numbered, and the
    // kernel releases it when its holder dies, so a crash leaves no stale lock.
    fn lock_numbering(&self) -> Result<Numbering, StoreError> {
        let path = self.path("queue.lock");
        let file = open_lock_file(&path)?;
        lock_exclusive(&file).map_err(io(&path))?;
        Ok(Numbering { _file: file })
    }

    /// Appends a report to the queue, durably; returns its file. Safe with
    /// other writers in other threads or processes: each report gets its own
    /// number, higher than every report already waiting.
    pub fn enqueue(&self, report: &QueuedReport) -> Result<PathBuf, StoreError> {
        let queue = self.dir.join("queue");
        let bytes = to_json(&queue, report)?;
        let _numbering = self.lock_numbering()?;
        let next = self.waiting()?.last().map(|(seq, _)| seq + 1).unwrap_or(1);
        let path = queue.join(format!("{next:010}.json"));
        write_durable(&path, &bytes)?;
        Ok(path)
    }

    /// Copies an avatar into the queue folder, durably, before the report
    /// that names it is queued; returns the copy. `key` is the report's
    /// idempotency key, unique, so no lock is needed.
    pub fn queue_image(&self, key: &str, bytes: &[u8]) -> Result<PathBuf, StoreError> {
        let path = self.dir.join("queue").join(format!("{key}.image"));
        write_durable(&path, bytes)?;
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

    /// The queued reports, oldest first: (sequence, file, report). A file
    /// another process removed since the listing is skipped.
    pub fn queued(&self) -> Result<Vec<(u64, PathBuf, QueuedReport)>, StoreError> {
        let mut queued = Vec::new();
        for (seq, path) in self.waiting()? {
            if let Some(report) = read_json(&path)? {
                queued.push((seq, path, report));
            }
        }
        Ok(queued)
    }

    /// Removes a sent report from the queue. (Not synced: should a crash
    /// bring it back, it is sent again under the same idempotency key,
    /// which the gateway answers with the first receipt.)
    pub fn dequeue(&self, path: &Path) -> Result<(), StoreError> {
        remove(path)
    }

    /// Moves a report the gateway refused out of the queue, with the reason,
    /// so it neither blocks the reports behind it nor disappears unseen.
    /// Queue numbers start again at 1 once the queue is empty, so a name
    /// already taken in `rejected/` gets a suffix instead of being replaced.
    pub fn reject(&self, path: &Path, reason: &str) -> Result<PathBuf, StoreError> {
        let dir = self.dir.join("rejected");
        create_private_dir(&dir)?;
        let stem = path
            .file_stem()
            .and_then(|stem| stem.to_str())
            .unwrap_or("report")
            .to_owned();
        let mut report: Value = read_json(path)?.unwrap_or(Value::Null);
        report["rejected_because"] = Value::String(reason.to_owned());
        let bytes = to_json(path, &report)?;
        let _numbering = self.lock_numbering()?;
        let mut target = dir.join(format!("{stem}.json"));
        let mut n = 1;
        while target.try_exists().map_err(io(&target))? {
            n += 1;
            target = dir.join(format!("{stem}-{n}.json"));
        }
        write_durable(&target, &bytes)?;
        // Synced so the new folder's entry outlives a crash as well.
        sync_dir(&self.dir)?;
        remove(path)?;
        if let Some(queue) = path.parent() {
            sync_dir(queue)?;
        }
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

/// Options for a new file readable by its owner only.
fn private_file() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

fn open_lock_file(path: &Path) -> Result<File, StoreError> {
    // Never truncated nor removed: removing a lock file while another
    // process waits on it would let a third lock a new file beside it.
    private_file()
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io(path))
}

/// `flock(LOCK_EX)` (`LockFileEx` on Windows) through `fs4`. Called by
/// path rather than as a method: since Rust 1.89 `File` has an inherent
/// `lock` of its own. The lock belongs to this open file, so two threads of
/// one process exclude each other just as two processes do.
fn lock_exclusive(file: &File) -> std::io::Result<()> {
    loop {
        match fs4::FileExt::lock(file) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
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

fn to_json(path: &Path, value: &impl Serialize) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec_pretty(value).map_err(|source| StoreError::Damaged {
        path: path.to_owned(),
        source,
    })
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), StoreError> {
    write_durable(path, &to_json(path, value)?)
}

/// Makes temp file names unique within this process; the pid makes them
/// unique between processes.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes a file readable by its owner only, atomically and durably: a new
/// temp file of its own (two writers of one file must not share a temp
/// file, or one could rename the other's half-written bytes into place),
/// fsync, rename, fsync of the folder (without it the rename itself may be
/// lost in a crash). A crash leaves the old or the new content, never half
/// of one; once this returns, the new content survives a crash. The temp
/// name starts with a dot and ends in `.tmp`, so the queue never lists it.
fn write_durable(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (tmp, mut file) = loop {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        // `create_new`: a leftover of a crashed process with a recycled pid
        // is skipped, never written into.
        match private_file().create_new(true).open(&tmp) {
            Ok(file) => break (tmp, file),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(&tmp)(e)),
        }
    };
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    drop(file);
    let renamed = written
        .map_err(io(&tmp))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(io(path)));
    if let Err(e) = renamed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
}

/// Makes a folder's entries (a rename, a new file) durable. Unix only:
/// on Windows a folder cannot be opened as a file to sync it.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io(dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn remove(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}
