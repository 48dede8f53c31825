//! Matrix connector (client-server API).
//!
//! Credentials `{"password"}` or `{"access_token"}`; module config
//! `{"homeserver": "<base URL>"}`. signature -> presence `status_msg`;
//! avatar -> uploaded media, then profile `avatar_url`; mood is not a Matrix
//! field and is reported as not applied.

use plugin_sdk::http::{self, encode_segment, Response};
use plugin_sdk::{
    Account, AvatarLimits, Connector, ConnectorError, Description, Field, Image, Limits,
    PushOutcome, SettingField, Settings,
};
use serde::Deserialize;
use serde_json::{json, Value};

/// The module config, checked by the gateway against `describe()`.
#[derive(Deserialize)]
struct Config {
    homeserver: String,
}

/// A user's credentials: one of the two (both optional in `describe()`).
#[derive(Deserialize)]
struct Credentials {
    password: Option<String>,
    access_token: Option<String>,
}

struct Matrix;

/// A logged-in session; logs out on drop when the connector logged in itself.
struct Session {
    base: String,
    token: String,
    user_id: String,
    owned: bool,
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.owned {
            let url = format!("{}/_matrix/client/v3/logout", self.base);
            let _ = http::send(&http::request("POST", &url).bearer(&self.token).json("{}"));
        }
    }
}

fn parse(response: &Response) -> Result<Value, ConnectorError> {
    serde_json::from_slice(&response.body)
        .map_err(|e| ConnectorError::Transient(format!("homeserver answered non-JSON: {e}")))
}

fn field<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

/// Like `error_for_status`, but Matrix's `M_FORBIDDEN` on login and
/// `M_UNKNOWN_TOKEN` are credential failures, and 429 carries `retry_after_ms`.
fn check(response: &Response) -> Result<(), ConnectorError> {
    if response.is_success() {
        return Ok(());
    }
    let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    let code = field(&body, "errcode").unwrap_or_default();
    let error = field(&body, "error").unwrap_or_default();
    match (response.status, code) {
        (_, "M_FORBIDDEN" | "M_UNKNOWN_TOKEN" | "M_MISSING_TOKEN" | "M_USER_DEACTIVATED") => {
            Err(ConnectorError::AuthFailed(format!("{code}: {error}")))
        }
        (429, _) => {
            let ms = body.get("retry_after_ms").and_then(Value::as_u64);
            match ms {
                Some(ms) => Err(ConnectorError::RateLimited(ms.div_ceil(1000).max(1) as u32)),
                None => response.error_for_status(),
            }
        }
        _ => response.error_for_status(),
    }
}

fn session(account: &Account) -> Result<Session, ConnectorError> {
    let base = account
        .config_as::<Config>()?
        .homeserver
        .trim_end_matches('/')
        .to_owned();
    let creds: Credentials = account.credentials_as()?;
    if let Some(token) = creds.access_token.as_deref() {
        let url = format!("{base}/_matrix/client/v3/account/whoami");
        let response = http::send(&http::request("GET", &url).bearer(token))?;
        check(&response)?;
        let user_id = field(&parse(&response)?, "user_id")
            .ok_or_else(|| ConnectorError::Transient("whoami without user_id".into()))?
            .to_owned();
        return Ok(Session {
            base,
            token: token.to_owned(),
            user_id,
            owned: false,
        });
    }
    let password = creds.password.as_deref().ok_or_else(|| {
        ConnectorError::AuthFailed("credentials need \"password\" or \"access_token\"".into())
    })?;
    let body = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": account.login},
        "password": password,
        "initial_device_display_name": "federation gateway",
    });
    let url = format!("{base}/_matrix/client/v3/login");
    let response = http::send(&http::request("POST", &url).json(body.to_string()))?;
    check(&response)?;
    let answer = parse(&response)?;
    let token = field(&answer, "access_token")
        .ok_or_else(|| ConnectorError::Transient("login answer without access_token".into()))?;
    let user_id = field(&answer, "user_id").unwrap_or(&account.login);
    Ok(Session {
        base,
        token: token.to_owned(),
        user_id: user_id.to_owned(),
        owned: true,
    })
}

impl Session {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn presence_url(&self) -> String {
        self.url(&format!(
            "/_matrix/client/v3/presence/{}/status",
            encode_segment(&self.user_id)
        ))
    }

    fn profile_url(&self, key: &str) -> String {
        self.url(&format!(
            "/_matrix/client/v3/profile/{}/{key}",
            encode_segment(&self.user_id)
        ))
    }

    fn get_json(&self, url: &str) -> Result<Value, ConnectorError> {
        let response = http::send(&http::request("GET", url).bearer(&self.token))?;
        check(&response)?;
        parse(&response)
    }

    /// PUTs `body`; Synapse may answer 429 after it saved the change, so a
    /// failed write is read back and counts as applied when the value is there.
    fn put_confirmed(
        &self,
        url: &str,
        body: Value,
        confirmed: impl Fn(&Value) -> bool,
    ) -> Result<(), ConnectorError> {
        let response = http::send(
            &http::request("PUT", url)
                .bearer(&self.token)
                .json(body.to_string()),
        )?;
        match check(&response) {
            Ok(()) => Ok(()),
            Err(e @ (ConnectorError::RateLimited(_) | ConnectorError::Transient(_))) => {
                match self.get_json(url) {
                    Ok(current) if confirmed(&current) => Ok(()),
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    fn set_status(&self, text: &str) -> Result<(), ConnectorError> {
        let body = json!({"presence": "online", "status_msg": text});
        self.put_confirmed(&self.presence_url(), body, |v| {
            field(v, "status_msg") == Some(text)
        })
    }

    fn set_avatar(&self, image: &Image) -> Result<(), ConnectorError> {
        let ext = image.content_type.rsplit('/').next().unwrap_or("img");
        let url = self.url(&format!("/_matrix/media/v3/upload?filename=avatar.{ext}"));
        let request = http::request("POST", &url)
            .bearer(&self.token)
            .body(&image.content_type, image.data.clone());
        let response = http::send(&request)?;
        check(&response)?;
        let uri = field(&parse(&response)?, "content_uri")
            .ok_or_else(|| ConnectorError::Transient("upload without content_uri".into()))?
            .to_owned();
        let body = json!({"avatar_url": uri});
        self.put_confirmed(&self.profile_url("avatar_url"), body, |v| {
            field(v, "avatar_url") == Some(uri.as_str())
        })
    }

    fn download(&self, mxc: &str) -> Result<Image, ConnectorError> {
        let path = mxc
            .strip_prefix("mxc://")
            .ok_or_else(|| ConnectorError::Transient(format!("not an mxc URI: {mxc}")))?;
        // Authenticated media first (Matrix 1.11), then the legacy endpoint.
        let mut last = None;
        for prefix in [
            "/_matrix/client/v1/media/download/",
            "/_matrix/media/v3/download/",
        ] {
            let response = http::send(
                &http::request("GET", &self.url(&format!("{prefix}{path}"))).bearer(&self.token),
            )?;
            if response.is_success() {
                return Ok(Image {
                    content_type: response
                        .header("content-type")
                        .unwrap_or("application/octet-stream")
                        .to_owned(),
                    data: response.body,
                });
            }
            last = Some(response);
        }
        match last {
            Some(r) => Err(check(&r)
                .err()
                .unwrap_or(ConnectorError::Transient("download failed".into()))),
            None => Err(ConnectorError::Transient("download failed".into())),
        }
    }
}

impl Connector for Matrix {
    fn describe() -> Description {
        Description {
            fields: vec![Field::Avatar, Field::Signature],
            limits: Limits {
                max_signature_chars: None,
                max_mood_chars: None,
                avatar: Some(AvatarLimits {
                    max_pixels: 1024,
                    max_bytes: 10 * 1024 * 1024,
                    formats: vec![
                        "image/png".into(),
                        "image/jpeg".into(),
                        "image/gif".into(),
                        "image/webp".into(),
                    ],
                }),
            },
            moods: Vec::new(),
            credentials: Some(vec![
                SettingField::secret("password", "Password")
                    .optional()
                    .help("the account's password; or give an access token instead"),
                SettingField::secret("access_token", "Access token")
                    .optional()
                    .help("an access token of this account, instead of the password"),
            ]),
            config: Some(vec![SettingField::url("homeserver", "Homeserver URL")
                .help(
                    "the client-server API's base URL, e.g. https://matrix.example.org",
                )]),
        }
    }

    fn verify(account: &Account) -> Result<(), ConnectorError> {
        session(account).map(|_| ())
    }

    fn push(account: &Account, settings: &Settings) -> Result<PushOutcome, ConnectorError> {
        let session = session(account)?;
        let mut applied = Vec::new();
        if let Some(text) = &settings.signature {
            session.set_status(text)?;
            applied.push(Field::Signature);
        }
        if let Some(image) = &settings.avatar {
            session.set_avatar(image)?;
            applied.push(Field::Avatar);
        }
        Ok(PushOutcome {
            applied,
            truncated: Vec::new(),
        })
    }

    fn fetch(account: &Account) -> Result<Settings, ConnectorError> {
        let session = session(account)?;
        let presence = session.get_json(&session.presence_url())?;
        let signature = field(&presence, "status_msg").map(str::to_owned);
        let avatar = match session.get_json(&session.profile_url("avatar_url")) {
            Ok(v) => match field(&v, "avatar_url") {
                Some(mxc) => Some(session.download(mxc)?),
                None => None,
            },
            Err(ConnectorError::Rejected(_)) => None,
            Err(e) => return Err(e),
        };
        Ok(Settings {
            avatar,
            signature,
            mood: None,
        })
    }
}

plugin_sdk::export_connector!(Matrix);
