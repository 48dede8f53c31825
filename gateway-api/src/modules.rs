//! The supported-module library (S2): `GET /v1/modules` and the manifest of
//! `POST /v1/admin/modules`, with the `detect` hints the monitor uses (S7).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One supported module as clients see it (no grants, no config).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModuleView {
    /// Unique id.
    pub id: String,
    /// Human name.
    pub name: String,
    /// Increases with every upload under this id.
    pub version: i64,
    /// Settings the connector can set: `avatar`, `signature`, `mood`.
    pub fields: Vec<String>,
    /// The connector's limits (signature length, avatar size and formats...).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub limits: Value,
    /// The moods the network knows, in its spelling; empty: any text. A
    /// mood outside them is not sent to this network.
    #[serde(default)]
    pub moods: Vec<String>,
    /// Hints for the monitor to notice the IM client on a device.
    #[serde(default)]
    pub detect: DetectHints,
    /// What a user enters to bind an account: the fields of the
    /// `credentials` object, checked before the connector runs (a missing,
    /// unknown or mistyped field answers `422 invalid_body` naming it).
    /// Absent: the connector takes any JSON object and checks it itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Vec<CredentialField>>,
}

/// One field of a module's credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CredentialField {
    /// Key in the `credentials` object, e.g. `password`.
    pub name: String,
    /// What to ask the person for, e.g. "Password".
    pub label: String,
    /// The JSON value expected: `text` and `secret` (non-empty strings),
    /// `url` (an absolute http or https URL), `integer`, `boolean`.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^(text|secret|url|integer|boolean)$")
    )]
    pub kind: String,
    /// True for passwords and tokens: mask them when typed.
    pub secret: bool,
    /// Whether a binding must have it.
    pub required: bool,
    /// One line of help to show beside the field; may be empty.
    #[serde(default)]
    pub help: String,
}

/// The supported-module library.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModuleList {
    /// Supported modules, by id.
    pub modules: Vec<ModuleView>,
}

/// A module's manifest, as uploaded by the operator (form part `manifest`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Unique module id: 1-32 characters of `[a-z0-9_-]`, starting with a letter.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[a-z][a-z0-9_-]{0,31}$", min_length = 1, max_length = 32)
    )]
    pub id: String,
    /// Human name, e.g. "Matrix": 1-100 characters, not only white space
    /// (the pattern: a character Rust's `str::trim` keeps, written out so
    /// that every regex dialect reads it the same).
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = r"[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]",
            min_length = 1,
            max_length = 100
        )
    )]
    pub name: String,
    /// `scheme://host:port` the connector may call (the operator's grant):
    /// http or https, a host name, IPv4 or `[IPv6]` address, and an explicit
    /// port 1-65535 with nothing after it.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(inline, value_type = Vec<Origin>))]
    pub allowed_hosts: Vec<String>,
    /// Outbound pushes allowed per second, with a burst.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// Module-level settings and secrets (e.g. API base URL); sealed at rest.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub config: Map<String, Value>,
    /// Hints for the monitor to notice the IM client on a device (S7).
    #[serde(default)]
    pub detect: DetectHints,
}

/// A module's outbound rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained pushes per second (at least 1).
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub per_second: u32,
    /// Pushes allowed at once (at least 1).
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub burst: u32,
}

/// An origin of `allowed_hosts` (for the OpenAPI document only).
#[cfg(feature = "openapi")]
#[derive(utoipa::ToSchema)]
#[schema(
    value_type = String,
    pattern = r"^https?://([A-Za-z0-9.-]+|\[[\s\S]*\])(:\+?0*([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))$"
)]
#[allow(dead_code)]
pub struct Origin(String);

/// How the monitor notices a module's IM clients on a device:
/// `{"clients": [{"name", "config_dirs", "desktop_entries", "executables"}]}`,
/// or the short form, one flat client object (named after the module when
/// it has no name). Either form is kept as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum DetectHints {
    /// Several clients.
    Listed {
        /// The clients of this network.
        clients: Vec<ClientHints>,
    },
    /// One client (`{}`: none).
    One(ClientHints),
}

impl Default for DetectHints {
    fn default() -> Self {
        DetectHints::One(ClientHints::default())
    }
}

/// One IM client a module's hints describe.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ClientHints {
    /// Its name, e.g. "Element".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Folders it keeps its config in (`~/` is the home folder).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_dirs: Vec<String>,
    /// Its `.desktop` file names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub desktop_entries: Vec<String>,
    /// Its executable names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub executables: Vec<String>,
    /// How the monitor reads the settings the user set in this client from
    /// the client's own files (none: it cannot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reader: Option<ClientReader>,
}

/// Settings read from an IM client's own XML files, declared with the
/// module so that operators add clients without a new monitor:
///
/// ```json
/// {"files": {"prefs": ["~/.purple/prefs.xml"], "status": ["~/.purple/status.xml"]},
///  "values": {
///    "current": {"file": "prefs",
///      "xml": "/pref/pref[@name='purple']/pref[@name='savedstatus']/pref[@name='default']/@value"},
///    "signature": {"file": "status", "xml": "/statuses/status[@created='{current}']/message"},
///    "avatar": {"file": "prefs",
///      "xml": "/pref/pref[@name='pidgin']/pref[@name='accounts']/pref[@name='buddyicon']/@value"}}}
/// ```
///
/// `signature`, `mood` and `avatar` (the path of an image file) are
/// reported; other values only fill `{name}` in the paths of others.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ClientReader {
    /// Files by name, each the first of its paths that exists (`~/` is the
    /// home folder).
    pub files: std::collections::BTreeMap<String, Vec<String>>,
    /// Values by name.
    pub values: std::collections::BTreeMap<String, ReadValue>,
}

/// One value read from one of a reader's files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReadValue {
    /// The file's name in `files`.
    pub file: String,
    /// A path of elements from the root, each optionally with one
    /// `[@attribute='value']` test (`{name}` in the value is another value
    /// read first), ending in `@attribute` or an element (its text).
    pub xml: String,
}

impl ClientHints {
    /// True when the client names nothing to look for.
    pub fn is_empty(&self) -> bool {
        self.config_dirs.is_empty()
            && self.desktop_entries.is_empty()
            && self.executables.is_empty()
    }
}

impl DetectHints {
    /// The clients to look for, each with a name (`module_name` for an
    /// unnamed one).
    pub fn named_clients(&self, module_name: &str) -> Vec<ClientHints> {
        let clients = match self {
            DetectHints::Listed { clients } => clients.as_slice(),
            DetectHints::One(one) => std::slice::from_ref(one),
        };
        clients
            .iter()
            .filter(|c| !c.is_empty())
            .map(|c| {
                let mut c = c.clone();
                if c.name.trim().is_empty() {
                    c.name = module_name.to_owned();
                }
                c
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_accept_the_listed_and_the_flat_form() {
        let listed: DetectHints = serde_json::from_str(
            r#"{"clients":[{"name":"Element","config_dirs":["~/.config/Element"]}]}"#,
        )
        .unwrap();
        assert_eq!(listed.named_clients("Matrix")[0].name, "Element");
        let flat: DetectHints = serde_json::from_str(r#"{"executables":["gajim"]}"#).unwrap();
        assert_eq!(flat.named_clients("XMPP")[0].name, "XMPP");
        let empty: DetectHints = serde_json::from_str("{}").unwrap();
        assert!(empty.named_clients("XMPP").is_empty());
        // Kept as written.
        assert_eq!(serde_json::to_string(&empty).unwrap(), "{}");
        assert_eq!(
            serde_json::to_string(&flat).unwrap(),
            r#"{"executables":["gajim"]}"#
        );
        assert!(serde_json::from_str::<DetectHints>(r#"{"executable":["typo"]}"#).is_err());
        assert!(serde_json::from_str::<DetectHints>(r#"{"clients":"no"}"#).is_err());
    }
}
