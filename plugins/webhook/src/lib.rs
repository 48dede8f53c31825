//! Webhook connector: for any network reachable through a bot or bridge.
//!
//! Module config `{"url", "secret"}`. Every request is a POST to `url` with
//! header `X-Signature-256: sha256=<hex HMAC-SHA256 of the body>`, so the
//! receiver knows it comes from the gateway. Two kinds, by `event`:
//!
//! - `verify`, when a user binds an account:
//!   `{"event": "verify", "account", "credentials": {...}, "challenge"}`.
//!   The receiver decides whether these credentials prove the account (for
//!   example a token its bot gave that user) and answers 2xx with
//!   `{"challenge": "<the same value>"}` to confirm, 401 or 403 to refuse.
//!   Only the echoed challenge counts: a receiver that answers 2xx to
//!   anything confirms nobody, so no user can bind someone else's account.
//! - `push`, for each delivery:
//!   `{"event": "push", "account", "settings": {"signature"?, "mood"?, "avatar"?: {"content_type", "data" (base64)}}}`;
//!   any 2xx means applied.
//!
//! The URL is the module's secret as much as `secret` is (many bots take
//! their token in the path), and error texts reach users: they say what the
//! receiver answered by status only. Its body is not passed on, since a web
//! framework's error page commonly names the path it was asked for.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use plugin_sdk::http::{self, Response};
use plugin_sdk::{
    Account, AvatarLimits, Connector, ConnectorError, Description, Field, Limits, PushOutcome,
    SettingField, Settings,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};

struct Webhook;

/// The module config, checked by the gateway against `describe()`.
#[derive(Deserialize)]
struct Config {
    url: String,
    secret: String,
}

fn config(account: &Account) -> Result<Config, ConnectorError> {
    account.config_as()
}

/// `sha256=<hex>` of the body under the shared secret.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The JSON body of a verification: the receiver echoes `challenge` to
/// confirm that `credentials` prove `account`.
pub fn verify_body(account: &str, credentials: &Value, challenge: &str) -> Vec<u8> {
    json!({
        "event": "verify",
        "account": account,
        "credentials": credentials,
        "challenge": challenge,
    })
    .to_string()
    .into_bytes()
}

/// A fresh random challenge (128 bits, hex).
fn challenge() -> Result<String, ConnectorError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| ConnectorError::Transient(format!("no randomness for a challenge: {e}")))?;
    Ok(hex::encode(bytes))
}

/// Whether the receiver confirmed the account: 2xx and the challenge echoed.
fn confirmed(response: &Response, challenge: &str) -> Result<(), ConnectorError> {
    if matches!(response.status, 401 | 403) {
        return Err(ConnectorError::AuthFailed(
            "the webhook receiver does not accept these credentials for this account".into(),
        ));
    }
    outcome(response)?;
    let echoed = serde_json::from_slice::<Value>(&response.body)
        .ok()
        .and_then(|v| {
            v.get("challenge")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
    if echoed.as_deref() == Some(challenge) {
        Ok(())
    } else {
        Err(ConnectorError::AuthFailed(
            "the webhook receiver did not confirm this account (its answer to the \"verify\" \
             event must echo the challenge)"
                .into(),
        ))
    }
}

/// The JSON body of a push.
pub fn body(account: &str, settings: &Settings) -> Vec<u8> {
    let mut fields = Map::new();
    if let Some(s) = &settings.signature {
        fields.insert("signature".into(), json!(s));
    }
    if let Some(m) = &settings.mood {
        fields.insert("mood".into(), json!(m));
    }
    if let Some(a) = &settings.avatar {
        fields.insert(
            "avatar".into(),
            json!({
                "content_type": a.content_type,
                "data": base64::engine::general_purpose::STANDARD.encode(&a.data),
            }),
        );
    }
    json!({"event": "push", "account": account, "settings": fields})
        .to_string()
        .into_bytes()
}

/// The receiver's answer as a typed outcome, by status only (see the module
/// docs for why its body stays out).
fn outcome(response: &Response) -> Result<(), ConnectorError> {
    let status = response.status;
    match response.error_for_status() {
        Ok(()) => Ok(()),
        Err(ConnectorError::RateLimited(secs)) => Err(ConnectorError::RateLimited(secs)),
        Err(ConnectorError::AuthFailed(_)) => Err(ConnectorError::AuthFailed(format!(
            "the webhook refused the request: HTTP {status}"
        ))),
        Err(ConnectorError::Transient(_)) => Err(ConnectorError::Transient(format!(
            "the webhook answered HTTP {status}"
        ))),
        Err(ConnectorError::Rejected(_) | ConnectorError::Misconfigured(_)) => Err(
            ConnectorError::Rejected(format!("the webhook answered HTTP {status}")),
        ),
    }
}

impl Connector for Webhook {
    fn describe() -> Description {
        Description {
            fields: vec![Field::Avatar, Field::Signature, Field::Mood],
            limits: Limits {
                max_signature_chars: Some(1000),
                max_mood_chars: Some(100),
                avatar: Some(AvatarLimits {
                    max_pixels: 1024,
                    max_bytes: 1024 * 1024,
                    formats: vec!["image/png".into(), "image/jpeg".into()],
                }),
            },
            moods: Vec::new(),
            // Whatever the receiver takes as proof of an account: passed on
            // as it is, the receiver checks it.
            credentials: None,
            config: Some(vec![
                SettingField::url("url", "Receiver URL")
                    .help("where the gateway POSTs verify and push events"),
                SettingField::secret("secret", "Signing secret")
                    .help("the HMAC-SHA256 key of the X-Signature-256 header"),
            ]),
        }
    }

    fn verify(account: &Account) -> Result<(), ConnectorError> {
        let config = config(account)?;
        let credentials: Value = serde_json::from_str(&account.credentials)
            .map_err(|e| ConnectorError::Rejected(format!("credentials are not JSON: {e}")))?;
        let challenge = challenge()?;
        let payload = verify_body(&account.login, &credentials, &challenge);
        let request = http::request("POST", &config.url)
            .header("x-signature-256", &signature(&config.secret, &payload))
            .json(payload);
        confirmed(&http::send(&request)?, &challenge)
    }

    fn push(account: &Account, settings: &Settings) -> Result<PushOutcome, ConnectorError> {
        let config = config(account)?;
        let payload = body(&account.login, settings);
        let request = http::request("POST", &config.url)
            .header("x-signature-256", &signature(&config.secret, &payload))
            .json(payload);
        outcome(&http::send(&request)?)?;
        let mut applied = Vec::new();
        if settings.avatar.is_some() {
            applied.push(Field::Avatar);
        }
        if settings.signature.is_some() {
            applied.push(Field::Signature);
        }
        if settings.mood.is_some() {
            applied.push(Field::Mood);
        }
        Ok(PushOutcome {
            applied,
            truncated: Vec::new(),
        })
    }
}

plugin_sdk::export_connector!(Webhook);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_texts_leave_out_the_receivers_answer() {
        for (status, kind) in [(404, "rejected"), (401, "auth"), (503, "transient")] {
            let response = Response {
                status,
                headers: Vec::new(),
                body: b"Cannot POST /hook/SECRET-TOKEN-123".to_vec(),
            };
            let text = match (outcome(&response), kind) {
                (Err(ConnectorError::Rejected(t)), "rejected")
                | (Err(ConnectorError::AuthFailed(t)), "auth")
                | (Err(ConnectorError::Transient(t)), "transient") => t,
                (other, _) => panic!("HTTP {status}: unexpected {other:?}"),
            };
            assert!(text.contains(&format!("HTTP {status}")), "{text}");
            assert!(!text.contains("SECRET-TOKEN-123"), "{text}");
        }
    }

    #[test]
    fn only_an_echoed_challenge_confirms_an_account() {
        let answer = |status: u16, body: &str| Response {
            status,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        };
        assert!(confirmed(&answer(200, r#"{"challenge":"c1"}"#), "c1").is_ok());
        for (status, body) in [
            (200, ""),
            (204, ""),
            (200, r#"{"challenge":"c2"}"#),
            (200, r#"{"ok":true}"#),
            (401, r#"{"challenge":"c1"}"#),
            (403, ""),
        ] {
            assert!(
                matches!(
                    confirmed(&answer(status, body), "c1"),
                    Err(ConnectorError::AuthFailed(_))
                ),
                "HTTP {status} {body} must not confirm"
            );
        }
        assert!(matches!(
            confirmed(&answer(503, ""), "c1"),
            Err(ConnectorError::Transient(_))
        ));
    }

    #[test]
    fn challenges_differ() {
        assert_ne!(challenge().unwrap(), challenge().unwrap());
    }

    #[test]
    fn signature_matches_a_known_hmac() {
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog")
        assert_eq!(
            signature("key", b"The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }
}
