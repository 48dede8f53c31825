//! Module manifests: what an operator declares when registering a connector.

use crate::host::Grants;
use crate::secrets::MasterKey;
pub use gateway_api::{Manifest, RateLimit};
use serde_json::{Map, Value};

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON of the manifest's shape.
    #[error("manifest is not valid: {0}")]
    Shape(#[from] serde_json::Error),
    /// A field breaks a rule.
    #[error("manifest field {field}: {reason}")]
    Field {
        /// Which field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

fn field(field: &'static str, reason: impl Into<String>) -> ManifestError {
    ManifestError::Field {
        field,
        reason: reason.into(),
    }
}

pub(crate) fn valid_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Checks `scheme://host:port` (http or https, explicit port, nothing after it).
pub fn parse_origin(origin: &str) -> Result<(String, String, u16), String> {
    let (scheme, rest) = origin
        .split_once("://")
        .ok_or_else(|| format!("{origin:?} is not scheme://host:port"))?;
    if scheme != "http" && scheme != "https" {
        return Err(format!("{origin:?}: scheme must be http or https"));
    }
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("{origin:?}: an explicit port is required"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{origin:?}: port must be 1-65535 with nothing after it"))?;
    let host_ok = !host.is_empty()
        && (host.starts_with('[') && host.ends_with(']')
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'));
    if !host_ok {
        return Err(format!("{origin:?}: invalid host"));
    }
    Ok((scheme.to_owned(), host.to_ascii_lowercase(), port))
}

/// What the gateway does with a manifest beyond its wire shape.
pub trait ManifestExt: Sized {
    /// Parses and checks a manifest.
    fn parse(text: &str) -> Result<Self, ManifestError>;
    /// The JSON stored in the registry: the config (which holds module
    /// secrets) is sealed with the master key, bound to the module id.
    fn to_stored(&self, key: &MasterKey) -> Value;
    /// The permissions and config a connector call of this module gets.
    fn grants(&self) -> Grants;
}

impl ManifestExt for Manifest {
    fn parse(text: &str) -> Result<Self, ManifestError> {
        let manifest: Manifest = serde_json::from_str(text)?;
        if !valid_id(&manifest.id) {
            return Err(field(
                "id",
                "1-32 characters of a-z, 0-9, '_' or '-', starting with a letter",
            ));
        }
        if manifest.name.trim().is_empty() || manifest.name.chars().count() > 100 {
            return Err(field("name", "1-100 characters"));
        }
        for origin in &manifest.allowed_hosts {
            parse_origin(origin).map_err(|reason| field("allowed_hosts", reason))?;
        }
        if let Some(limit) = manifest.rate_limit {
            if limit.per_second == 0 || limit.burst == 0 {
                return Err(field(
                    "rate_limit",
                    "per_second and burst must be at least 1",
                ));
            }
        }
        Ok(manifest)
    }

    fn to_stored(&self, key: &MasterKey) -> Value {
        use base64::Engine as _;
        let config = serde_json::to_vec(&self.config).unwrap_or_default();
        let sealed = key.seal(&config, seal_context(&self.id).as_bytes());
        serde_json::json!({
            "id": self.id,
            "name": self.name,
            "allowed_hosts": self.allowed_hosts,
            "rate_limit": self.rate_limit,
            "detect": self.detect,
            "config_sealed": base64::engine::general_purpose::STANDARD.encode(sealed),
        })
    }

    fn grants(&self) -> Grants {
        Grants {
            module_id: self.id.clone(),
            allowed_origins: self
                .allowed_hosts
                .iter()
                .filter_map(|o| parse_origin(o).ok())
                .map(|(scheme, host, port)| format!("{scheme}://{host}:{port}"))
                .collect(),
            config_json: Value::Object(self.config.clone()).to_string(),
        }
    }
}

fn seal_context(id: &str) -> String {
    format!("module-config:{id}")
}

/// Reads back what [`Manifest::to_stored`] wrote, opening the sealed config.
pub fn stored_manifest(stored: &Value, key: &MasterKey) -> Result<Manifest, String> {
    use base64::Engine as _;
    let mut object = stored
        .as_object()
        .cloned()
        .ok_or_else(|| "not a JSON object".to_owned())?;
    let sealed = object
        .remove("config_sealed")
        .and_then(|v| v.as_str().map(str::to_owned))
        .ok_or_else(|| "no sealed config".to_owned())?;
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(sealed)
        .map_err(|e| e.to_string())?;
    let id = object
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let config = key
        .open(&sealed, seal_context(&id).as_bytes())
        .map_err(|e| e.to_string())?;
    let config: Map<String, Value> = serde_json::from_slice(&config).map_err(|e| e.to_string())?;
    object.insert("config".into(), Value::Object(config));
    if object.get("rate_limit").is_some_and(Value::is_null) {
        object.remove("rate_limit");
    }
    serde_json::from_value(Value::Object(object)).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_need_scheme_host_and_port_only() {
        assert!(parse_origin("http://127.0.0.1:18008").is_ok());
        assert!(parse_origin("https://matrix.example.org:443").is_ok());
        assert!(parse_origin("http://[::1]:8080").is_ok());
        for bad in [
            "127.0.0.1:80",
            "ftp://h:21",
            "http://h",
            "http://h:80/path",
            "http://:80",
            "http://h:0",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn manifests_are_checked_and_config_is_sealed() {
        let ok = r#"{"id":"matrix","name":"Matrix","allowed_hosts":["http://127.0.0.1:18008"],
                    "rate_limit":{"per_second":5,"burst":10},"config":{"secret":"s3cr3t-value"}}"#;
        let m = Manifest::parse(ok).unwrap();
        let stored = m.to_stored(&MasterKey::generate()).to_string();
        assert!(
            !stored.contains("s3cr3t-value"),
            "config stored in clear: {stored}"
        );
        assert!(Manifest::parse(r#"{"id":"Bad Id","name":"x"}"#).is_err());
        assert!(Manifest::parse(r#"{"id":"x","name":"x","allowd_hosts":[]}"#).is_err());
        assert!(Manifest::parse(
            r#"{"id":"x","name":"x","rate_limit":{"per_second":0,"burst":1}}"#
        )
        .is_err());
    }
}
