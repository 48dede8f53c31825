//! `monitor offer`: this terminal's answer to the preset client the
//! gateway's tasks service offers (T1, `/v1/services/tasks/offer`, device
//! token). `handoff inbox` answers the `tasks.offer` events the same way.

use crate::client::{Client, ClientError};
use crate::{Context, MonitorError, Outcome};
use serde::Deserialize;

/// What `offer` does.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum OfferAction {
    /// Ask for the client now (even after declining it).
    Request,
    /// Take the offered client.
    Accept,
    /// Say no: it is offered again after the operator's period.
    Decline,
}

impl OfferAction {
    fn path(self) -> &'static str {
        match self {
            OfferAction::Request => "/offer/request",
            OfferAction::Accept => "/offer/accept",
            OfferAction::Decline => "/offer/decline",
        }
    }
}

/// Flags of `offer`.
#[derive(Debug, clap::Args)]
pub struct OfferArgs {
    /// Without an action: where the offer stands.
    action: Option<OfferAction>,
}

/// The preset client as offered.
#[derive(Debug, Clone, Deserialize)]
pub struct PresetClient {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Where to get it.
    pub url: String,
}

/// A device's offer. (The service is a plugin; `gateway-api` has no types
/// for it.)
#[derive(Debug, Clone, Deserialize)]
pub struct OfferView {
    /// none, offered, accepted or declined.
    pub status: String,
    /// The client, unless none is offered.
    #[serde(default)]
    pub client: Option<PresetClient>,
    /// While declined: when it comes back.
    #[serde(default)]
    pub offer_again_at: Option<String>,
}

impl Client {
    /// `GET /v1/services/tasks/offer`, or one of its `POST` actions.
    pub async fn offer(&self, action: Option<OfferAction>) -> Result<OfferView, ClientError> {
        let builder = match action {
            None => self.request(reqwest::Method::GET, "/v1/services/tasks/offer"),
            Some(a) => self.request(
                reqwest::Method::POST,
                &format!("/v1/services/tasks{}", a.path()),
            ),
        };
        self.json(builder).await
    }
}

/// One line saying where an offer stands.
pub fn describe(offer: &OfferView) -> String {
    let client = offer
        .client
        .as_ref()
        .map(|c| format!("{} {} ({})", c.name, c.version, c.url))
        .unwrap_or_default();
    match offer.status.as_str() {
        "none" => "the gateway offers no preset client".to_owned(),
        "offered" => format!(
            "the gateway offers {client}: `monitor offer accept` or `monitor offer decline`"
        ),
        "accepted" => format!("accepted {client}; get it from its address"),
        "declined" => format!(
            "declined {client}; offered again after {}",
            offer.offer_again_at.as_deref().unwrap_or("?")
        ),
        other => format!("{other} {client}"),
    }
}

/// Carries out `monitor offer [ACTION]`.
pub async fn offer(ctx: &Context, args: &OfferArgs) -> Result<Outcome, MonitorError> {
    let (_device, client) = ctx.device_client()?;
    let seen = client.offer(args.action).await?;
    println!("{}", describe(&seen));
    Ok(Outcome::Done)
}
