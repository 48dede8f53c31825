//! The credential and config fields a connector declares (ABI 2), checked
//! before the connector runs: a declaration when the plugin loads, a user's
//! credentials when an account is bound, the operator's config when the
//! module is uploaded. Errors name the field, so the person who typed it
//! knows what to fix.

use super::types::{SettingField, SettingKind};
use serde_json::{Map, Value};

/// Most fields a connector may declare for credentials or for config.
pub const MAX_FIELDS: usize = 32;

/// One field of an object that breaks the declaration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldProblem {
    /// The field's name as declared (or as sent, for one not declared).
    pub field: String,
    /// What is wrong, in a sentence for the person who typed it.
    pub reason: String,
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Checks what a connector declared for `what` ("credentials" or "config").
pub fn check_declaration(what: &str, fields: &[SettingField]) -> Result<(), String> {
    if fields.len() > MAX_FIELDS {
        return Err(format!(
            "describe() declares {} {what} fields; at most {MAX_FIELDS}",
            fields.len()
        ));
    }
    for (i, field) in fields.iter().enumerate() {
        if !valid_name(&field.name) {
            return Err(format!(
                "describe() declares the {what} field {:?}: names are 1-64 characters of \
                 a-z, 0-9 and '_', starting with a letter",
                field.name
            ));
        }
        if fields[..i].iter().any(|f| f.name == field.name) {
            return Err(format!(
                "describe() declares the {what} field {:?} twice",
                field.name
            ));
        }
        if field.label.trim().is_empty() || field.label.chars().count() > 100 {
            return Err(format!(
                "describe() declares the {what} field {:?} with a label that is not 1-100 characters",
                field.name
            ));
        }
        if field.help.chars().count() > 500 {
            return Err(format!(
                "describe() declares the {what} field {:?} with more than 500 characters of help",
                field.name
            ));
        }
    }
    Ok(())
}

fn problem(field: &str, reason: impl Into<String>) -> FieldProblem {
    FieldProblem {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

fn is_web_url(text: &str) -> bool {
    reqwest::Url::parse(text)
        .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.host_str().is_some())
}

/// Checks one object against the declared fields: every required field
/// present, every present field declared and of its kind. `null` counts as
/// absent.
pub fn check_object(
    fields: &[SettingField],
    object: &Map<String, Value>,
) -> Result<(), FieldProblem> {
    for field in fields.iter().filter(|f| f.required) {
        if object.get(&field.name).is_none_or(Value::is_null) {
            return Err(problem(
                &field.name,
                format!("missing; this module needs it ({})", field.label),
            ));
        }
    }
    for (name, value) in object {
        let Some(field) = fields.iter().find(|f| &f.name == name) else {
            let known: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
            let known = if known.is_empty() {
                "it takes none".to_owned()
            } else {
                format!("its fields are {}", known.join(", "))
            };
            return Err(problem(
                name,
                format!("not a field of this module; {known}"),
            ));
        };
        if value.is_null() {
            continue;
        }
        let text = value.as_str();
        let fits = match field.kind {
            SettingKind::Text | SettingKind::Secret => text.is_some_and(|t| !t.trim().is_empty()),
            SettingKind::Url => text.is_some_and(is_web_url),
            SettingKind::Integer => value.is_i64() || value.is_u64(),
            SettingKind::Boolean => value.is_boolean(),
        };
        if !fits {
            let wanted = match field.kind {
                SettingKind::Text | SettingKind::Secret => "a non-empty string",
                SettingKind::Url => "an absolute http:// or https:// URL",
                SettingKind::Integer => "an integer",
                SettingKind::Boolean => "true or false",
            };
            return Err(problem(name, format!("must be {wanted} ({})", field.label)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(name: &str, kind: SettingKind, required: bool) -> SettingField {
        SettingField {
            name: name.into(),
            label: format!("The {name}"),
            kind,
            required,
            help: String::new(),
        }
    }

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn objects_are_checked_field_by_field() {
        let fields = [
            field("api", SettingKind::Url, true),
            field("token", SettingKind::Secret, true),
            field("port", SettingKind::Integer, false),
            field("tls", SettingKind::Boolean, false),
        ];
        let ok = json!({"api": "https://x.example/v1", "token": "t", "port": 5, "tls": null});
        assert_eq!(check_object(&fields, &object(ok)), Ok(()));
        let cases = [
            (json!({"token": "t"}), "api", "missing"),
            (
                json!({"api": "https://x", "token": ""}),
                "token",
                "non-empty",
            ),
            (json!({"api": "ftp://x", "token": "t"}), "api", "http://"),
            (json!({"api": "x", "token": "t"}), "api", "URL"),
            (
                json!({"api": "https://x", "token": "t", "port": "5"}),
                "port",
                "integer",
            ),
            (
                json!({"api": "https://x", "token": "t", "tls": 1}),
                "tls",
                "true or false",
            ),
            (
                json!({"api": "https://x", "token": "t", "tokn": "t"}),
                "tokn",
                "api, token, port, tls",
            ),
        ];
        for (value, name, says) in cases {
            let e = check_object(&fields, &object(value.clone())).unwrap_err();
            assert_eq!(e.field, name, "{value}");
            assert!(e.reason.contains(says), "{value}: {e}");
        }
        let none = check_object(&[], &object(json!({"x": 1}))).unwrap_err();
        assert!(none.reason.contains("takes none"), "{none}");
    }

    #[test]
    fn declarations_are_checked() {
        let ok = [field("password", SettingKind::Secret, true)];
        assert!(check_declaration("credentials", &ok).is_ok());
        let twice = [ok[0].clone(), ok[0].clone()];
        assert!(check_declaration("credentials", &twice)
            .unwrap_err()
            .contains("twice"));
        let bad = [field("Pass word", SettingKind::Secret, true)];
        assert!(check_declaration("config", &bad)
            .unwrap_err()
            .contains("a-z"));
        let mut unlabelled = field("x", SettingKind::Text, false);
        unlabelled.label = " ".into();
        assert!(check_declaration("config", &[unlabelled])
            .unwrap_err()
            .contains("label"));
        let many: Vec<_> = (0..33)
            .map(|i| field(&format!("f{i}"), SettingKind::Text, false))
            .collect();
        assert!(check_declaration("config", &many)
            .unwrap_err()
            .contains("at most 32"));
    }
}
