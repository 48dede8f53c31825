//! The header values of the tus resumable upload protocol 1.0.0 (core,
//! creation, creation-with-upload, termination, checksum, expiration),
//! parsed and written without HTTP types.

use super::{Checksum, ChecksumAlgorithm};
use base64::Engine;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::ops::Range;

/// The protocol version spoken.
pub const VERSION: &str = "1.0.0";
/// The extensions supported, as `Tus-Extension` lists them.
pub const EXTENSIONS: &str = "creation,creation-with-upload,termination,checksum,expiration";
/// Largest `Upload-Metadata` accepted.
pub const MAX_METADATA_BYTES: usize = 4096;
/// The content type of bytes appended.
pub const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

/// A header value that breaks the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TusError {
    /// `Upload-Metadata` is not `key base64,key base64`.
    #[error("Upload-Metadata: {0}")]
    Metadata(String),
    /// `Upload-Checksum` is not `<algorithm> <base64 digest>`.
    #[error("Upload-Checksum: {0}")]
    Checksum(String),
    /// The algorithm is not one of `sha1`, `sha256`.
    #[error("Upload-Checksum: unsupported algorithm {0:?}; use sha1 or sha256")]
    Algorithm(String),
}

/// Parses `Upload-Metadata` into its pairs (a key without value maps to
/// an empty value). Keys are unique, non-empty, without spaces or commas;
/// values are base64.
pub fn parse_metadata(header: &str) -> Result<BTreeMap<String, Vec<u8>>, TusError> {
    if header.len() > MAX_METADATA_BYTES {
        return Err(TusError::Metadata(format!(
            "at most {MAX_METADATA_BYTES} bytes"
        )));
    }
    let mut pairs = BTreeMap::new();
    if header.trim().is_empty() {
        return Ok(pairs);
    }
    for pair in header.split(',') {
        let pair = pair.trim();
        let (key, value) = pair.split_once(' ').unwrap_or((pair, ""));
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_graphic() && c != ',') {
            return Err(TusError::Metadata(format!("bad key {key:?}")));
        }
        let value = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .map_err(|_| TusError::Metadata(format!("the value of {key:?} is not base64")))?;
        if pairs.insert(key.to_owned(), value).is_some() {
            return Err(TusError::Metadata(format!("{key:?} given twice")));
        }
    }
    Ok(pairs)
}

/// Parses `Upload-Checksum`.
pub fn parse_checksum(header: &str) -> Result<Checksum, TusError> {
    let (name, digest) = header
        .trim()
        .split_once(' ')
        .ok_or_else(|| TusError::Checksum("expected \"<algorithm> <base64 digest>\"".into()))?;
    let algorithm =
        ChecksumAlgorithm::parse(name).ok_or_else(|| TusError::Algorithm(name.to_owned()))?;
    let digest = base64::engine::general_purpose::STANDARD
        .decode(digest.trim())
        .map_err(|_| TusError::Checksum("the digest is not base64".into()))?;
    Ok(Checksum { algorithm, digest })
}

/// An HTTP date (RFC 7231), as `Upload-Expires` carries it.
pub fn http_date(at: DateTime<Utc>) -> String {
    at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// A `Range` header that cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the range is outside the {length} bytes of the file")]
pub struct Unsatisfiable {
    /// The blob's length.
    pub length: u64,
}

/// The byte range a download asks for (`Range: bytes=a-b`, `a-` or `-n`)
/// within `length` bytes: `None` for the whole blob (no header, another
/// unit, several ranges or a malformed one, which HTTP lets a server
/// ignore), else the half-open range to send.
pub fn parse_range(header: Option<&str>, length: u64) -> Result<Option<Range<u64>>, Unsatisfiable> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((start, end)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let (start, end) = (start.trim(), end.trim());
    let range = if start.is_empty() {
        let Ok(suffix) = end.parse::<u64>() else {
            return Ok(None);
        };
        if suffix == 0 {
            return Err(Unsatisfiable { length });
        }
        length.saturating_sub(suffix)..length
    } else {
        let Ok(start) = start.parse::<u64>() else {
            return Ok(None);
        };
        let end = if end.is_empty() {
            length
        } else {
            match end.parse::<u64>() {
                Ok(last) if last >= start => last.saturating_add(1).min(length),
                _ => return Ok(None),
            }
        };
        start..end
    };
    if range.start >= length {
        return Err(Unsatisfiable { length });
    }
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_http_means_them() {
        assert_eq!(parse_range(None, 100), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Ok(Some(0..10)));
        assert_eq!(parse_range(Some("bytes=90-"), 100), Ok(Some(90..100)));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Ok(Some(90..100)));
        assert_eq!(parse_range(Some("bytes=-500"), 100), Ok(Some(0..100)));
        assert_eq!(parse_range(Some("bytes=50-500"), 100), Ok(Some(50..100)));
        assert_eq!(
            parse_range(Some("bytes=100-"), 100),
            Err(Unsatisfiable { length: 100 })
        );
        assert_eq!(
            parse_range(Some("bytes=-0"), 100),
            Err(Unsatisfiable { length: 100 })
        );
        assert_eq!(parse_range(Some("bytes=5-2"), 100), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), Ok(None));
        assert_eq!(parse_range(Some("items=0-1"), 100), Ok(None));
        assert_eq!(parse_range(Some("bytes=x-"), 100), Ok(None));
    }

    #[test]
    fn metadata_pairs_are_decoded_and_checked() {
        let pairs = parse_metadata("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential")
            .unwrap();
        assert_eq!(pairs["filename"], b"world_domination_plan.pdf");
        assert_eq!(pairs["is_confidential"], b"");
        assert!(parse_metadata("").unwrap().is_empty());
        assert!(matches!(
            parse_metadata("name !!!"),
            Err(TusError::Metadata(m)) if m.contains("not base64")
        ));
        assert!(parse_metadata("a YQ==,a Yg==").is_err());
        assert!(parse_metadata(&"k YQ==,".repeat(1000)).is_err());
    }

    #[test]
    fn checksums_name_a_known_algorithm() {
        let c = parse_checksum("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=").unwrap();
        assert_eq!(c.algorithm, ChecksumAlgorithm::Sha1);
        assert_eq!(c.digest.len(), 20);
        assert_eq!(
            parse_checksum("md5 AAAA"),
            Err(TusError::Algorithm("md5".into()))
        );
        assert!(parse_checksum("sha256").is_err());
    }

    #[test]
    fn expiry_is_an_http_date() {
        let at = DateTime::parse_from_rfc3339("2014-06-25T16:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(http_date(at), "Wed, 25 Jun 2014 16:00:00 GMT");
    }
}
