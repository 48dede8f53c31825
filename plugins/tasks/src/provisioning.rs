//! T1: the preset client offered to each device, pure. The operator names
//! the client (name, version, where to get it) and how long a declined
//! offer stays away; the answer is kept per device.
//!
//! - A device the gateway has not offered the client to is offered it the
//!   first time it asks for its offer.
//! - Declined: not offered again before `offer_again_at`, whatever the
//!   device reads meanwhile; at that time it is offered again (the glue
//!   schedules a timer so the device hears of it).
//! - A device asking for the client itself (`request`) is offered it at
//!   once, even while a decline holds: the user changed their mind.
//! - Accepted: kept; when the operator publishes a newer version, the
//!   device is offered that one.

use serde::{Deserialize, Serialize};

/// Longest wait before a declined offer comes back: a year.
pub const MAX_OFFER_AGAIN_SECS: u64 = 365 * 24 * 3600;
/// Shortest: a minute.
pub const MIN_OFFER_AGAIN_SECS: u64 = 60;
/// When the operator says nothing: a week.
pub const DEFAULT_OFFER_AGAIN_SECS: u64 = 7 * 24 * 3600;

/// The preset client as the operator configured it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Client {
    /// Shown to the user.
    pub name: String,
    /// The version offered.
    pub version: String,
    /// Where the device gets it.
    pub url: String,
}

impl Client {
    /// Checks the operator's settings: every field 1-200 characters, the
    /// URL `https://` or `http://`.
    pub fn check(&self) -> Result<(), String> {
        for (field, value) in [
            ("name", &self.name),
            ("version", &self.version),
            ("url", &self.url),
        ] {
            if value.trim().is_empty() || value.chars().count() > 200 {
                return Err(format!("client.{field}: 1-200 characters"));
            }
        }
        if !(self.url.starts_with("https://") || self.url.starts_with("http://")) {
            return Err("client.url: an http:// or https:// address".into());
        }
        Ok(())
    }
}

/// Where a device's offer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for the user's answer.
    Offered,
    /// The user took it.
    Accepted,
    /// The user said no; see `offer_again_at`.
    Declined,
}

/// One device's offer, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// Where it stands.
    pub status: Status,
    /// The client offered (or accepted, or declined).
    pub client: Client,
    /// When it was offered last, ms since the epoch.
    pub offered_at: u64,
    /// When the user last answered.
    pub answered_at: Option<u64>,
    /// While declined: the first moment it may be offered again.
    pub offer_again_at: Option<u64>,
    /// Who asked for the last offer: the device itself or the gateway.
    pub asked_by_device: bool,
}

/// What the glue does after a step.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing changed.
    Same,
    /// The offer changed: store it.
    Changed,
    /// It is (again) offered: store it and tell the device.
    Offered,
}

/// Why an answer is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Accept or decline with no offer waiting.
    NotOffered,
}

impl Offer {
    fn new(client: &Client, now: u64, asked_by_device: bool) -> Self {
        Offer {
            status: Status::Offered,
            client: client.clone(),
            offered_at: now,
            answered_at: None,
            offer_again_at: None,
            asked_by_device,
        }
    }

    /// The offer as the device should see it at `now` with `client`
    /// configured: made the first time, made again once a decline has run
    /// its time, or for a newer version than the one accepted.
    pub fn current(stored: Option<Offer>, client: &Client, now: u64) -> (Offer, Step) {
        let Some(mut offer) = stored else {
            return (Offer::new(client, now, false), Step::Offered);
        };
        match offer.status {
            Status::Declined if offer.offer_again_at.is_some_and(|at| at <= now) => {
                (Offer::new(client, now, false), Step::Offered)
            }
            Status::Accepted if offer.client.version != client.version => {
                (Offer::new(client, now, false), Step::Offered)
            }
            Status::Offered if offer.client != *client => {
                offer.client = client.clone();
                (offer, Step::Changed)
            }
            _ => (offer, Step::Same),
        }
    }

    /// The device asks for the client: offered now, whatever it said before
    /// (unless it already took this version).
    pub fn request(stored: Option<Offer>, client: &Client, now: u64) -> (Offer, Step) {
        match stored {
            Some(o)
                if o.client == *client
                    && matches!(o.status, Status::Offered | Status::Accepted) =>
            {
                (o, Step::Same)
            }
            _ => (Offer::new(client, now, true), Step::Offered),
        }
    }

    /// The user takes the offered client.
    pub fn accept(&mut self, now: u64) -> Result<Step, Refusal> {
        match self.status {
            Status::Offered => {
                self.status = Status::Accepted;
                self.answered_at = Some(now);
                self.offer_again_at = None;
                Ok(Step::Changed)
            }
            Status::Accepted => Ok(Step::Same),
            Status::Declined => Err(Refusal::NotOffered),
        }
    }

    /// The user says no: not offered again for `again_after_ms`.
    pub fn decline(&mut self, now: u64, again_after_ms: u64) -> Result<Step, Refusal> {
        match self.status {
            Status::Offered => {
                self.status = Status::Declined;
                self.answered_at = Some(now);
                self.offer_again_at = Some(now.saturating_add(again_after_ms));
                Ok(Step::Changed)
            }
            Status::Declined => Ok(Step::Same),
            Status::Accepted => Err(Refusal::NotOffered),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(version: &str) -> Client {
        Client {
            name: "Monitor".into(),
            version: version.into(),
            url: "https://example.org/monitor".into(),
        }
    }

    #[test]
    fn a_declined_offer_stays_away_until_its_time_then_comes_back() {
        let c = client("1.0");
        let (mut offer, step) = Offer::current(None, &c, 1_000);
        assert_eq!((offer.status, step), (Status::Offered, Step::Offered));
        assert_eq!(offer.decline(2_000, 10_000), Ok(Step::Changed));
        assert_eq!(offer.offer_again_at, Some(12_000));
        let (still, step) = Offer::current(Some(offer.clone()), &c, 11_999);
        assert_eq!((still.status, step), (Status::Declined, Step::Same));
        let (again, step) = Offer::current(Some(offer), &c, 12_000);
        assert_eq!((again.status, step), (Status::Offered, Step::Offered));
        assert_eq!(again.offer_again_at, None);
    }

    #[test]
    fn a_device_asking_is_offered_at_once_even_while_a_decline_holds() {
        let c = client("1.0");
        let (mut offer, _) = Offer::current(None, &c, 0);
        offer.decline(0, 60_000).unwrap();
        let (asked, step) = Offer::request(Some(offer), &c, 5);
        assert_eq!((asked.status, step), (Status::Offered, Step::Offered));
        assert!(asked.asked_by_device);
        // Asking again changes nothing.
        let (same, step) = Offer::request(Some(asked.clone()), &c, 6);
        assert_eq!((same, step), (asked, Step::Same));
    }

    #[test]
    fn an_accepted_client_is_kept_until_a_newer_version_is_offered() {
        let (mut offer, _) = Offer::current(None, &client("1.0"), 0);
        assert_eq!(offer.accept(1), Ok(Step::Changed));
        assert_eq!(offer.accept(2), Ok(Step::Same));
        assert_eq!(offer.decline(3, 10), Err(Refusal::NotOffered));
        let (kept, step) = Offer::current(Some(offer.clone()), &client("1.0"), 100);
        assert_eq!((kept.status, step), (Status::Accepted, Step::Same));
        let (newer, step) = Offer::current(Some(offer), &client("1.1"), 100);
        assert_eq!((newer.status, step), (Status::Offered, Step::Offered));
        assert_eq!(newer.client.version, "1.1");
    }

    #[test]
    fn answers_need_an_offer() {
        let (mut offer, _) = Offer::current(None, &client("1.0"), 0);
        offer.decline(0, 10).unwrap();
        assert_eq!(offer.accept(1), Err(Refusal::NotOffered));
        assert_eq!(offer.decline(1, 10), Ok(Step::Same));
    }

    #[test]
    fn the_operator_settings_are_checked() {
        assert!(client("1.0").check().is_ok());
        let mut bad = client("1.0");
        bad.url = "ftp://example.org".into();
        assert!(bad.check().unwrap_err().contains("client.url"));
        bad = client("");
        assert!(bad.check().unwrap_err().contains("client.version"));
    }
}
