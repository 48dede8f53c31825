//! The file records and their 2-bit upload status, pure: what each blob
//! event and each user action does to a record, and who must be told.
//! Times are milliseconds since the epoch, given by the caller.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most files in one batch manifest.
pub const MAX_BATCH_FILES: usize = 1000;
/// Longest file name, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// The 2-bit upload status of F1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// `01`: announced, no byte yet (or asked to upload again).
    #[serde(rename = "01")]
    NeedsUpload,
    /// `10`: bytes are arriving.
    #[serde(rename = "10")]
    Uploading,
    /// `11`: every byte stored and the checksum held.
    #[serde(rename = "11")]
    Succeeded,
    /// `00`: the upload stopped before its end, or its checksum failed.
    #[serde(rename = "00")]
    Failed,
}

impl Status {
    /// As the API writes it.
    pub fn code(self) -> &'static str {
        match self {
            Status::NeedsUpload => "01",
            Status::Uploading => "10",
            Status::Succeeded => "11",
            Status::Failed => "00",
        }
    }

    /// From the API's code.
    pub fn parse(code: &str) -> Option<Self> {
        match code {
            "01" => Some(Status::NeedsUpload),
            "10" => Some(Status::Uploading),
            "11" => Some(Status::Succeeded),
            "00" => Some(Status::Failed),
            _ => None,
        }
    }
}

/// A device's download of a file (F6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Download {
    /// Never fetched (or reset by a redownload).
    None,
    /// Bytes are going out.
    Downloading,
    /// The last byte went out.
    Done,
    /// The transfer broke.
    Failed,
}

/// One file of the user's (F1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Id.
    pub id: String,
    /// File name.
    pub name: String,
    /// Media type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Size in bytes.
    pub size: u64,
    /// Hex sha256 the uploader announced, checked at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The batch it was announced in.
    pub batch_id: String,
    /// How many files that batch holds.
    pub batch_count: u32,
    /// Upload status.
    pub status: Status,
    /// Bytes stored so far.
    pub offset: u64,
    /// Why it is `00`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The device that uploads (or uploaded) it.
    pub uploaded_by: Option<String>,
    /// The blob being (or last) uploaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<String>,
    /// Last change.
    pub updated_at: u64,
    /// Per device.
    pub downloads: BTreeMap<String, Download>,
    /// Devices refused a download while it was not ready: told
    /// `file.available` once it is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting: Vec<String>,
}

/// One file of a batch manifest (F2).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Announced {
    /// File name.
    pub name: String,
    /// Media type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Size in bytes.
    pub size: u64,
    /// Hex sha256.
    pub sha256: Option<String>,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A field breaks its rule.
    Invalid(String),
    /// A download of a file that is not `11`.
    NotUploaded {
        /// Its status.
        status: Status,
        /// Bytes stored.
        offset: u64,
        /// Its size.
        size: u64,
    },
    /// An upload for a record that is not waiting for one.
    NotExpected(String),
}

/// Checks a batch manifest.
pub fn check_batch(files: &[Announced]) -> Result<(), Refusal> {
    if files.is_empty() || files.len() > MAX_BATCH_FILES {
        return Err(Refusal::Invalid(format!(
            "a batch holds 1 to {MAX_BATCH_FILES} files"
        )));
    }
    for file in files {
        check_name(&file.name)?;
        if file.kind.is_empty() || file.kind.len() > 255 || !file.kind.contains('/') {
            return Err(Refusal::Invalid(format!(
                "the type of {:?} must be a media type such as text/plain",
                file.name
            )));
        }
        if let Some(sha) = &file.sha256 {
            if sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(Refusal::Invalid(format!(
                    "the sha256 of {:?} must be 64 hex digits",
                    file.name
                )));
            }
        }
    }
    Ok(())
}

/// Checks a file name: 1-255 bytes, no path separators or control
/// characters, not `.` or `..`.
pub fn check_name(name: &str) -> Result<(), Refusal> {
    let bad = name.is_empty()
        || name.len() > MAX_NAME_BYTES
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control());
    if bad {
        return Err(Refusal::Invalid(format!(
            "file names are 1-{MAX_NAME_BYTES} bytes without / \\ or control characters: {name:?}"
        )));
    }
    Ok(())
}

impl FileRecord {
    /// A record announced in a batch: `01`.
    pub fn announced(
        id: String,
        file: Announced,
        batch_id: &str,
        batch_count: u32,
        device: Option<String>,
        now: u64,
    ) -> Self {
        FileRecord {
            id,
            name: file.name,
            kind: file.kind,
            size: file.size,
            sha256: file.sha256.map(|s| s.to_ascii_lowercase()),
            batch_id: batch_id.to_owned(),
            batch_count,
            status: Status::NeedsUpload,
            offset: 0,
            reason: None,
            uploaded_by: device,
            upload_id: None,
            updated_at: now,
            downloads: BTreeMap::new(),
            waiting: Vec::new(),
        }
    }

    /// An upload of `length` bytes starts for this record: it must be
    /// waiting for one (`01` or `00`) and have that size.
    pub fn expect_upload(
        &mut self,
        upload_id: &str,
        length: u64,
        device: Option<String>,
        now: u64,
    ) -> Result<(), Refusal> {
        if !matches!(self.status, Status::NeedsUpload | Status::Failed) {
            return Err(Refusal::NotExpected(format!(
                "file {} is {} ({}); ask for a re-upload first",
                self.id,
                self.status.code(),
                describe(self.status)
            )));
        }
        if length != self.size {
            return Err(Refusal::NotExpected(format!(
                "file {} was announced with {} bytes, not {length}",
                self.id, self.size
            )));
        }
        self.upload_id = Some(upload_id.to_owned());
        if device.is_some() {
            self.uploaded_by = device;
        }
        self.offset = 0;
        self.updated_at = now;
        Ok(())
    }

    /// Bytes of a request start arriving (`10`); whether the status changed.
    pub fn started(&mut self, offset: u64, now: u64) -> bool {
        self.offset = offset;
        self.updated_at = now;
        self.reason = None;
        let changed = self.status != Status::Uploading;
        self.status = Status::Uploading;
        changed
    }

    /// A request's bytes are stored and more are to come; whether anyone
    /// needs telling (never: progress is polled, statuses are pushed).
    pub fn stored(&mut self, offset: u64, now: u64) {
        self.offset = offset;
        self.updated_at = now;
    }

    /// The upload stopped before its end (`00`).
    pub fn stopped(&mut self, offset: u64, reason: String, now: u64) {
        self.offset = offset;
        self.status = Status::Failed;
        self.reason = Some(reason);
        self.updated_at = now;
    }

    /// Every byte is stored; `11` when the announced sha256 (if any)
    /// matches, else `00`. The devices to tell `file.available`.
    pub fn completed(&mut self, sha256: &str, now: u64) -> Vec<String> {
        self.offset = self.size;
        self.updated_at = now;
        match &self.sha256 {
            Some(expected) if !expected.eq_ignore_ascii_case(sha256) => {
                self.status = Status::Failed;
                self.reason = Some(format!(
                    "the uploaded bytes have sha256 {sha256}, not the announced {expected}"
                ));
                Vec::new()
            }
            _ => {
                self.sha256 = Some(sha256.to_owned());
                self.status = Status::Succeeded;
                self.reason = None;
                std::mem::take(&mut self.waiting)
            }
        }
    }

    /// A download by `device` may start: refused unless `11`, and then
    /// the device waits for `file.available`.
    pub fn download(&mut self, device: Option<&str>) -> Result<(), Refusal> {
        if self.status == Status::Succeeded {
            return Ok(());
        }
        if let Some(device) = device {
            if !self.waiting.iter().any(|d| d == device) {
                self.waiting.push(device.to_owned());
            }
        }
        Err(Refusal::NotUploaded {
            status: self.status,
            offset: self.offset,
            size: self.size,
        })
    }

    /// Asked to upload again (F8): back to `01`, the old blob to delete.
    pub fn reupload(&mut self, now: u64) -> Option<String> {
        self.status = Status::NeedsUpload;
        self.offset = 0;
        self.reason = None;
        self.updated_at = now;
        self.downloads.clear();
        self.upload_id.take()
    }
}

/// What a status means, in words.
pub fn describe(status: Status) -> &'static str {
    match status {
        Status::NeedsUpload => "waiting for its upload",
        Status::Uploading => "still uploading",
        Status::Succeeded => "uploaded",
        Status::Failed => "its upload failed",
    }
}

/// Whether two devices last seen at `a` and `b` (`ip:port` or `ip`) are
/// on one local network, so a transfer can go directly (R2): the same
/// public address (behind one NAT), or private addresses of one /24
/// (IPv4) or /64 (IPv6).
pub fn same_network(a: &str, b: &str) -> bool {
    use std::net::{IpAddr, SocketAddr};
    let ip = |s: &str| {
        s.parse::<SocketAddr>()
            .map(|a| a.ip())
            .or_else(|_| s.parse::<IpAddr>())
            .ok()
    };
    let (Some(a), Some(b)) = (ip(a), ip(b)) else {
        return false;
    };
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let local = |ip: std::net::Ipv4Addr| ip.is_private() || ip.is_loopback();
            if local(a) && local(b) {
                a.octets()[..3] == b.octets()[..3]
            } else {
                a == b
            }
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => a.segments()[..4] == b.segments()[..4],
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(sha256: Option<&str>) -> FileRecord {
        FileRecord::announced(
            "f1".into(),
            Announced {
                name: "a.txt".into(),
                kind: "text/plain".into(),
                size: 10,
                sha256: sha256.map(str::to_owned),
            },
            "b1",
            1,
            Some("laptop".into()),
            1,
        )
    }

    #[test]
    fn an_upload_goes_01_10_00_10_11_and_tells_who_waited() {
        let mut r = record(None);
        assert_eq!(r.status, Status::NeedsUpload);
        r.expect_upload("u1", 10, Some("laptop".into()), 2).unwrap();
        assert!(r.started(0, 3));
        assert_eq!(r.status, Status::Uploading);
        assert!(!r.started(0, 3), "already uploading: no news");
        assert!(matches!(
            r.download(Some("phone")),
            Err(Refusal::NotUploaded {
                status: Status::Uploading,
                ..
            })
        ));
        r.stopped(4, "connection dropped".into(), 4);
        assert_eq!(r.status, Status::Failed);
        assert!(r.started(4, 5));
        let told = r.completed(&"ab".repeat(32), 6);
        assert_eq!(r.status, Status::Succeeded);
        assert_eq!(told, vec!["phone".to_owned()]);
        assert!(r.download(Some("phone")).is_ok());
    }

    #[test]
    fn a_checksum_that_does_not_hold_fails_the_file() {
        let mut r = record(Some(&"AB".repeat(32)));
        r.expect_upload("u1", 10, None, 2).unwrap();
        assert!(r.completed(&"ab".repeat(32), 3).is_empty());
        assert_eq!(r.status, Status::Succeeded, "hex compares without case");
        let mut r = record(Some(&"ab".repeat(32)));
        r.completed(&"cd".repeat(32), 3);
        assert_eq!(r.status, Status::Failed);
        assert!(r.reason.unwrap().contains("not the announced"));
    }

    #[test]
    fn uploads_must_be_expected_and_of_the_announced_size() {
        let mut r = record(None);
        assert!(matches!(
            r.expect_upload("u1", 11, None, 2),
            Err(Refusal::NotExpected(m)) if m.contains("10 bytes")
        ));
        r.expect_upload("u1", 10, None, 2).unwrap();
        r.started(0, 3);
        assert!(r.expect_upload("u2", 10, None, 4).is_err());
        r.completed(&"ab".repeat(32), 5);
        assert!(r.expect_upload("u2", 10, None, 4).is_err());
        assert_eq!(r.reupload(6), Some("u1".to_owned()));
        assert_eq!(r.status, Status::NeedsUpload);
        assert!(r.expect_upload("u2", 10, None, 7).is_ok());
    }

    #[test]
    fn batches_and_names_are_checked() {
        let file = |name: &str, kind: &str, sha: Option<&str>| Announced {
            name: name.into(),
            kind: kind.into(),
            size: 1,
            sha256: sha.map(str::to_owned),
        };
        assert!(check_batch(&[]).is_err());
        assert!(check_batch(&[file("a", "text/plain", None)]).is_ok());
        assert!(check_batch(&[file("../etc/passwd", "text/plain", None)]).is_err());
        assert!(check_batch(&[file("a", "plain", None)]).is_err());
        assert!(check_batch(&[file("a", "text/plain", Some("xyz"))]).is_err());
        assert!(check_name("..").is_err());
        assert!(check_name("a\nb").is_err());
    }

    #[test]
    fn direct_transfers_need_one_local_network() {
        assert!(same_network("192.168.1.10:5000", "192.168.1.20:6000"));
        assert!(!same_network("192.168.1.10:5000", "192.168.2.20:6000"));
        assert!(same_network("203.0.113.5:1000", "203.0.113.5:2000"));
        assert!(!same_network("203.0.113.5:1000", "203.0.113.6:1000"));
        assert!(!same_network("192.168.1.10", "garbage"));
        assert!(same_network("[fd00::1]:80", "[fd00::2]:81"));
    }
}
