//! XMPP connector (ejabberd HTTP API, `mod_http_api` + `mod_admin_extra`).
//!
//! Module config `{"api": "<base URL of /api>", "admin_user", "admin_password"}`:
//! an account in ejabberd's `acl: admin` that `api_permissions` lets call the
//! API. Account login `user@host`; credentials `{"password"}`.
//!
//! The gateway writes with the admin's rights, so every call first checks the
//! account's own password with `check_password`: revoked credentials fail
//! with auth-failed instead of being silently overridden by the admin.
//! signature -> vCard `DESC` (`set_vcard`); avatar -> vCard `PHOTO/BINVAL`
//! (base64) and `PHOTO/TYPE` (`set_vcard2`). `set_nickname` is never used: it
//! replaces the whole vCard. Mood (XEP-0107) is published over PEP by a live
//! session, which the HTTP API cannot do: reported as not applied.
//!
//! Error texts reach users (a binding's refusal, a delivery's last error), so
//! they never name the module's admin account, its password or other config
//! values: only the command, the status and ejabberd's answer to a call the
//! admin's rights were not at stake in.
//!
//! Facts checked against ejabberd 23.01: `check_password` answers HTTP 200
//! with the JSON number `0` for the right password and `1` for a wrong one, an
//! unknown user or an unserved host; `get_vcard`/`get_vcard2` answer HTTP 400
//! with `"error_no_vcard_found"` when the account has no vCard and
//! `"error_no_value_found_in_vcard"` when the field is missing; `set_vcard`
//! succeeds even for accounts that do not exist.

use plugin_sdk::http::{self, Response};
use plugin_sdk::{
    base64, truncate_chars, Account, AvatarLimits, Connector, ConnectorError, Description, Field,
    Image, Limits, PushOutcome, SettingField, Settings,
};
use serde::Deserialize;
use serde_json::{json, Value};

struct Xmpp;

/// ejabberd sets no limit on `DESC`; this bound keeps the vCard, which every
/// contact downloads in one stanza together with the photo, modest.
const MAX_SIGNATURE_CHARS: u32 = 1000;
/// XEP-0153 asks for small vCard avatars (it suggests 64-96 px and 8 KiB).
/// 64 KiB of image is about 87 KiB of base64, well under the 256 KiB
/// `max_stanza_size` that ejabberd's stock config gives client connections, so
/// clients that re-upload their vCard still fit.
const MAX_AVATAR_PIXELS: u32 = 256;
const MAX_AVATAR_BYTES: u32 = 64 * 1024;
const AVATAR_FORMATS: [&str; 2] = ["image/png", "image/jpeg"];

/// ejabberd's answers (HTTP 400) for a vCard or vCard field that is not there.
const NO_VALUE: [&str; 2] = ["error_no_vcard_found", "error_no_value_found_in_vcard"];

/// The module's ejabberd API and the admin account it calls it as (the
/// module config, checked by the gateway against `describe()`).
#[derive(Deserialize)]
struct Api {
    #[serde(rename = "api")]
    base: String,
    admin_user: String,
    admin_password: String,
}

/// A user's credentials.
#[derive(Deserialize)]
struct Credentials {
    password: String,
}

/// An account's JID, split the way the API takes it.
struct Jid {
    user: String,
    host: String,
}

impl std::fmt::Display for Jid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.user, self.host)
    }
}

fn api(account: &Account) -> Result<Api, ConnectorError> {
    let mut api: Api = account.config_as()?;
    api.base = api.base.trim_end_matches('/').to_owned();
    Ok(api)
}

/// `user@host`, tolerating an `xmpp:` prefix and a `/resource`.
fn jid(login: &str) -> Result<Jid, ConnectorError> {
    let bare = login.trim();
    let bare = bare.strip_prefix("xmpp:").unwrap_or(bare);
    let bare = bare.split('/').next().unwrap_or(bare);
    match bare.split_once('@') {
        Some((user, host)) if !user.is_empty() && !host.is_empty() && !host.contains('@') => {
            Ok(Jid {
                user: user.to_owned(),
                host: host.to_owned(),
            })
        }
        _ => Err(ConnectorError::Rejected(format!(
            "the account {login:?} is not an XMPP address like alice@example.org"
        ))),
    }
}

fn password(account: &Account) -> Result<String, ConnectorError> {
    account.credentials_as::<Credentials>().map(|c| c.password)
}

fn text_of(response: &Response) -> String {
    String::from_utf8_lossy(&response.body)
        .chars()
        .take(300)
        .collect()
}

impl Api {
    fn send(&self, command: &str, args: Value) -> Result<Response, ConnectorError> {
        let request = http::request("POST", &format!("{}/{command}", self.base))
            .basic_auth(&self.admin_user, &self.admin_password)
            .json(args.to_string());
        Ok(http::send(&request)?)
    }

    /// The JSON answer of a 2xx; the module's own admin account being refused
    /// is a configuration error, not the user's credentials failing. Its text
    /// is for the operator's eyes only, so the user sees neither the account
    /// nor ejabberd's answer, which may name it.
    fn answer(&self, command: &str, response: &Response) -> Result<Value, ConnectorError> {
        match response.status {
            401 | 403 => Err(ConnectorError::Misconfigured(format!(
                "ejabberd refused {command} (HTTP {}) for the module's admin account: \
                 the operator should check the module config and ejabberd's api_permissions",
                response.status
            ))),
            404 => Err(ConnectorError::Misconfigured(format!(
                "ejabberd has no command {command} (is mod_admin_extra enabled?): {}",
                text_of(response)
            ))),
            _ => {
                response.error_for_status()?;
                serde_json::from_slice(&response.body).map_err(|e| {
                    ConnectorError::Transient(format!(
                        "ejabberd answered {command} with non-JSON: {e}"
                    ))
                })
            }
        }
    }

    /// Runs a command that answers ejabberd's result code `0` on success.
    fn run(&self, command: &str, args: Value) -> Result<(), ConnectorError> {
        let response = self.send(command, args)?;
        match self.answer(command, &response)? {
            Value::Number(n) if n.as_i64() == Some(0) => Ok(()),
            other => Err(ConnectorError::Rejected(format!(
                "ejabberd answered {command} with {other}"
            ))),
        }
    }

    /// Reads one vCard value; `None` when the vCard or the field is missing.
    fn read(&self, command: &str, args: Value) -> Result<Option<String>, ConnectorError> {
        let response = self.send(command, args)?;
        if response.status == 400 {
            let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
            if body.as_str().is_some_and(|code| NO_VALUE.contains(&code)) {
                return Ok(None);
            }
        }
        let answer = self.answer(command, &response)?;
        match answer.get("content").and_then(Value::as_str) {
            Some(content) => Ok(Some(content.to_owned())),
            None => Err(ConnectorError::Transient(format!(
                "ejabberd answered {command} without content: {answer}"
            ))),
        }
    }

    /// Ok when ejabberd accepts the account's password.
    fn check_password(&self, jid: &Jid, password: &str) -> Result<(), ConnectorError> {
        let args = json!({"user": jid.user, "host": jid.host, "password": password});
        let response = self.send("check_password", args)?;
        match self.answer("check_password", &response)? {
            Value::Number(n) if n.as_i64() == Some(0) => Ok(()),
            Value::Number(_) => Err(ConnectorError::AuthFailed(format!(
                "ejabberd refused the password of {jid} (wrong password or no such account)"
            ))),
            other => Err(ConnectorError::Transient(format!(
                "unexpected check_password answer: {other}"
            ))),
        }
    }

    fn set_vcard(&self, jid: &Jid, name: &str, content: &str) -> Result<(), ConnectorError> {
        let args = json!({"user": jid.user, "host": jid.host, "name": name, "content": content});
        self.run("set_vcard", args)
    }

    fn set_vcard2(
        &self,
        jid: &Jid,
        name: &str,
        sub: &str,
        content: &str,
    ) -> Result<(), ConnectorError> {
        let args = json!({
            "user": jid.user, "host": jid.host, "name": name, "subname": sub, "content": content,
        });
        self.run("set_vcard2", args)
    }

    fn get_vcard(&self, jid: &Jid, name: &str) -> Result<Option<String>, ConnectorError> {
        self.read(
            "get_vcard",
            json!({"user": jid.user, "host": jid.host, "name": name}),
        )
    }

    fn get_vcard2(
        &self,
        jid: &Jid,
        name: &str,
        sub: &str,
    ) -> Result<Option<String>, ConnectorError> {
        let args = json!({"user": jid.user, "host": jid.host, "name": name, "subname": sub});
        self.read("get_vcard2", args)
    }
}

/// The module's API and the account's JID, once ejabberd accepted the
/// account's own password.
fn session(account: &Account) -> Result<(Api, Jid), ConnectorError> {
    let api = api(account)?;
    let jid = jid(&account.login)?;
    api.check_password(&jid, &password(account)?)?;
    Ok((api, jid))
}

/// Whether XML 1.0 allows the character: ejabberd stores anything, but a
/// vCard holding a control character breaks the stream of every client that
/// downloads it.
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || !(c.is_control() || matches!(c, '\u{FFFE}' | '\u{FFFF}'))
}

/// The signature as the vCard can hold it; true if it had to change.
fn normalise(signature: &str) -> (String, bool) {
    let clean: String = signature.chars().filter(|&c| xml_char(c)).collect();
    let stripped = clean.len() != signature.len();
    let (text, cut) = truncate_chars(&clean, MAX_SIGNATURE_CHARS);
    (text, stripped || cut)
}

fn check_avatar(image: &Image) -> Result<(), ConnectorError> {
    if !AVATAR_FORMATS.contains(&image.content_type.as_str()) {
        return Err(ConnectorError::Rejected(format!(
            "vCard avatars here are PNG or JPEG, not {}",
            image.content_type
        )));
    }
    if image.data.is_empty() || image.data.len() > MAX_AVATAR_BYTES as usize {
        return Err(ConnectorError::Rejected(format!(
            "vCard avatars are 1 to {MAX_AVATAR_BYTES} bytes, this one has {}",
            image.data.len()
        )));
    }
    Ok(())
}

/// Standard or URL-safe base64; clients often wrap `BINVAL` across lines.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|b| !b.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The image type from its first bytes, for vCards without `PHOTO/TYPE`.
fn sniff(data: &[u8]) -> &'static str {
    match data {
        [0x89, b'P', b'N', b'G', ..] => "image/png",
        [0xFF, 0xD8, 0xFF, ..] => "image/jpeg",
        [b'G', b'I', b'F', b'8', ..] => "image/gif",
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => "image/webp",
        _ => "application/octet-stream",
    }
}

impl Connector for Xmpp {
    fn describe() -> Description {
        Description {
            fields: vec![Field::Avatar, Field::Signature],
            limits: Limits {
                max_signature_chars: Some(MAX_SIGNATURE_CHARS),
                max_mood_chars: None,
                avatar: Some(AvatarLimits {
                    max_pixels: MAX_AVATAR_PIXELS,
                    max_bytes: MAX_AVATAR_BYTES,
                    formats: AVATAR_FORMATS.iter().map(|f| (*f).to_owned()).collect(),
                }),
            },
            moods: Vec::new(),
            credentials: Some(vec![SettingField::secret("password", "Password")
                .help("the password of this XMPP account")]),
            config: Some(vec![
                SettingField::url("api", "ejabberd HTTP API base URL")
                    .help("mod_http_api's URL, e.g. http://127.0.0.1:5280/api"),
                SettingField::text("admin_user", "Admin account (user@host)"),
                SettingField::secret("admin_password", "Admin account's password"),
            ]),
        }
    }

    fn verify(account: &Account) -> Result<(), ConnectorError> {
        session(account).map(|_| ())
    }

    fn push(account: &Account, settings: &Settings) -> Result<PushOutcome, ConnectorError> {
        if let Some(image) = &settings.avatar {
            check_avatar(image)?;
        }
        let (api, jid) = session(account)?;
        let mut outcome = PushOutcome {
            applied: Vec::new(),
            truncated: Vec::new(),
        };
        if let Some(signature) = &settings.signature {
            let (text, changed) = normalise(signature);
            api.set_vcard(&jid, "DESC", &text)?;
            outcome.applied.push(Field::Signature);
            if changed {
                outcome.truncated.push(Field::Signature);
            }
        }
        if let Some(image) = &settings.avatar {
            api.set_vcard2(&jid, "PHOTO", "BINVAL", &base64(&image.data))?;
            api.set_vcard2(&jid, "PHOTO", "TYPE", &image.content_type)?;
            outcome.applied.push(Field::Avatar);
        }
        Ok(outcome)
    }

    fn fetch(account: &Account) -> Result<Settings, ConnectorError> {
        let (api, jid) = session(account)?;
        let signature = api.get_vcard(&jid, "DESC")?;
        let avatar = match api.get_vcard2(&jid, "PHOTO", "BINVAL")? {
            Some(binval) if !binval.trim().is_empty() => {
                let data = decode_base64(&binval).ok_or_else(|| {
                    ConnectorError::Rejected(format!("the vCard PHOTO of {jid} is not base64"))
                })?;
                let content_type = match api.get_vcard2(&jid, "PHOTO", "TYPE")? {
                    Some(t) if !t.trim().is_empty() => t.trim().to_owned(),
                    _ => sniff(&data).to_owned(),
                };
                Some(Image { content_type, data })
            }
            _ => None,
        };
        Ok(Settings {
            avatar,
            signature,
            mood: None,
        })
    }
}

plugin_sdk::export_connector!(Xmpp);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_split_into_user_and_host() {
        let j = jid(" xmpp:alice@localhost/phone ").map(|j| j.to_string());
        assert_eq!(j.ok().as_deref(), Some("alice@localhost"));
        assert!(jid("alice").is_err());
        assert!(jid("@localhost").is_err());
        assert!(jid("a@b@c").is_err());
    }

    #[test]
    fn base64_round_trips_and_tolerates_line_breaks() {
        let data: Vec<u8> = (0..=255).collect();
        let mut wrapped = base64(&data);
        wrapped.insert(76, '\n');
        assert_eq!(decode_base64(&wrapped), Some(data));
        assert_eq!(decode_base64("Zm8="), Some(b"fo".to_vec()));
        assert_eq!(decode_base64("Zm9v!"), None);
    }

    #[test]
    fn a_refused_admin_account_is_not_named_to_the_user() {
        let api = Api {
            base: "http://127.0.0.1:5443/api".into(),
            admin_user: "gw-admin-7f3@localhost".into(),
            admin_password: "admin-SECRET-pw".into(),
        };
        for status in [401, 403] {
            // ejabberd's own answer may name the account it refused.
            let response = Response {
                status,
                headers: Vec::new(),
                body: br#"{"message": "No permission for gw-admin-7f3@localhost"}"#.to_vec(),
            };
            let text = match api.answer("set_vcard", &response) {
                // The operator's to fix: the gateway pauses deliveries and
                // tells the user the module is not set up correctly.
                Err(ConnectorError::Misconfigured(text)) => text,
                other => panic!("expected misconfigured, got {other:?}"),
            };
            assert!(text.contains("set_vcard"), "{text}");
            for secret in ["gw-admin-7f3", "admin-SECRET-pw", "127.0.0.1:5443"] {
                assert!(!text.contains(secret), "{text}");
            }
        }
    }

    #[test]
    fn signatures_lose_what_xml_cannot_carry() {
        assert_eq!(normalise("a\u{1}b\tc ✓"), ("ab\tc ✓".to_owned(), true));
        assert_eq!(normalise("Grüße 🎉"), ("Grüße 🎉".to_owned(), false));
    }
}
