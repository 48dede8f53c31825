//! T2 shares, pure: material a user shares under an unguessable id, with an
//! expiry, revocable by its owner. Anyone holding the id fetches it without
//! logging in until then; after, `410` says which of the two ended it.

use serde::{Deserialize, Serialize};

/// How long a share lives when the owner does not say: a week.
pub const DEFAULT_TTL_SECS: u64 = 7 * 24 * 3600;
/// The longest an owner may ask for: 90 days.
pub const MAX_TTL_SECS: u64 = 90 * 24 * 3600;

/// One share, as stored in its owner's store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    /// The unguessable id (128 random bits, hex).
    pub id: String,
    /// The blob holding the bytes (deleted once the share ends).
    pub blob: String,
    /// The media type it was sent with.
    pub content_type: String,
    /// Bytes.
    pub size: u64,
    /// When it was made, ms since the epoch.
    pub created_at: u64,
    /// When it stops being served.
    pub expires_at: u64,
    /// When its owner revoked it.
    pub revoked_at: Option<u64>,
}

/// Where a share stands at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Served.
    Active,
    /// Past its expiry.
    Expired,
    /// Revoked by its owner.
    Revoked,
}

impl State {
    /// As the API spells it.
    pub fn name(self) -> &'static str {
        match self {
            State::Active => "active",
            State::Expired => "expired",
            State::Revoked => "revoked",
        }
    }
}

impl Share {
    /// Where it stands at `now`.
    pub fn state(&self, now: u64) -> State {
        if self.revoked_at.is_some() {
            State::Revoked
        } else if now >= self.expires_at {
            State::Expired
        } else {
            State::Active
        }
    }

    /// When it ended (its revocation or expiry), once it has.
    pub fn ended_at(&self, now: u64) -> Option<u64> {
        match self.state(now) {
            State::Active => None,
            State::Revoked => self.revoked_at,
            State::Expired => Some(self.expires_at),
        }
    }

    /// When its record is forgotten: [`TOMBSTONE_SECS`] after it ended
    /// (until then its id answers `410` with the reason, then `404`).
    pub fn forget_at(&self) -> u64 {
        self.revoked_at
            .unwrap_or(self.expires_at)
            .min(self.expires_at)
            .saturating_add(TOMBSTONE_SECS * 1000)
    }
}

/// How long an ended share's record stays to answer `410`: 30 days.
pub const TOMBSTONE_SECS: u64 = 30 * 24 * 3600;

/// The lifetime asked for (`expires_in` seconds), checked: 60 s to
/// [`MAX_TTL_SECS`], default [`DEFAULT_TTL_SECS`].
pub fn ttl_ms(asked: Option<&str>) -> Result<u64, String> {
    let secs = match asked {
        None => DEFAULT_TTL_SECS,
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|s| (60..=MAX_TTL_SECS).contains(s))
            .ok_or_else(|| format!("expires_in is 60 to {MAX_TTL_SECS} seconds"))?,
    };
    Ok(secs * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_ends_by_expiry_or_revocation() {
        let mut s = Share {
            id: "x".into(),
            blob: "b".into(),
            content_type: "text/plain".into(),
            size: 1,
            created_at: 0,
            expires_at: 1000,
            revoked_at: None,
        };
        assert_eq!(s.state(999), State::Active);
        assert_eq!(s.state(1000), State::Expired);
        assert_eq!(s.ended_at(999), None);
        assert_eq!(s.ended_at(5000), Some(1000));
        assert_eq!(s.forget_at(), 1000 + TOMBSTONE_SECS * 1000);
        s.revoked_at = Some(10);
        assert_eq!(s.state(20), State::Revoked);
        assert_eq!(s.ended_at(20), Some(10));
        assert_eq!(s.forget_at(), 10 + TOMBSTONE_SECS * 1000);
    }

    #[test]
    fn lifetimes_are_bounded() {
        assert_eq!(ttl_ms(None), Ok(DEFAULT_TTL_SECS * 1000));
        assert_eq!(ttl_ms(Some("3600")), Ok(3_600_000));
        assert!(ttl_ms(Some("59")).is_err());
        assert!(ttl_ms(Some("soon")).is_err());
        assert!(ttl_ms(Some(&(MAX_TTL_SECS + 1).to_string())).is_err());
    }
}
